//! Canary subjects: synthetic subjects, each with its own items that no one
//! else touches, included in a feature set independently with probability ½.
//!
//! A canary's items are new catalogue entries added whether or not the
//! canary is included, so the item list (which a model releases) does not
//! depend on who was included. An included canary is the only subject of
//! its items, so its presence moves their released statistics (the noisy
//! counts above all) and nothing else moves them.

use std::collections::HashSet;

use hush_features::{FeatureSet, Interaction, SubjectKey};
use rand::Rng;

use crate::error::invalid;
use crate::{Error, Result};

/// How many canaries to insert and what each one does.
#[derive(Clone, Debug, PartialEq)]
pub struct CanaryPlan {
    /// m: the number of canaries, included or not.
    pub canaries: usize,
    /// Distinct items per canary, each touched by that canary alone. To keep
    /// the contribution bound from subsampling them, at most the trainer's
    /// `max_items_per_subject`.
    pub items_per_canary: usize,
    /// The value of each canary interaction (a rating, or an implicit weight).
    pub value: f32,
}

impl CanaryPlan {
    /// Checks every field.
    ///
    /// # Errors
    /// [`Error::InvalidParam`] naming the field and its allowed range.
    pub fn validate(&self) -> Result<CanaryPlan> {
        if !(2..=1_000_000).contains(&self.canaries) {
            return invalid("canaries", "must be within 2..=1000000");
        }
        if !(1..=10_000).contains(&self.items_per_canary) {
            return invalid("canary_items", "must be within 1..=10000");
        }
        if self.canaries.saturating_mul(self.items_per_canary) > 10_000_000 {
            return invalid("canary_items", "canaries × canary items must be at most 10000000");
        }
        if !self.value.is_finite() {
            return invalid("value", "must be a finite number");
        }
        Ok(self.clone())
    }
}

/// The canaries of one audit: their items and who was included.
#[derive(Clone, Debug, PartialEq)]
pub struct Canaries {
    /// Per canary: the dense indices of its items in the audited feature set.
    pub items: Vec<Vec<u32>>,
    /// Per canary: whether it was put into the training data.
    pub included: Vec<bool>,
}

impl Canaries {
    /// The catalogue id of canary `c`'s `j`-th item.
    pub fn item_id(c: usize, j: usize) -> String {
        format!("hush-audit-canary-{c}-{j}")
    }

    /// Each canary's membership score from a released per-item statistic:
    /// the sum of the statistic over the canary's items (e.g. the model's
    /// noisy item counts, which an included canary raises by 1 on each).
    ///
    /// # Privacy
    /// Post-processing of the released statistic and of the public canary
    /// design; it never looks at [`Canaries::included`].
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] if `released` does not cover every canary item.
    pub fn scores(&self, released: &[f32]) -> Result<Vec<f64>> {
        let needed = self.items.iter().flatten().map(|&i| i as usize + 1).max().unwrap_or(0);
        if released.len() < needed {
            return Err(Error::LengthMismatch {
                what: "released item statistic",
                expected: needed,
                got: released.len(),
            });
        }
        Ok(self.items.iter().map(|items| items.iter().map(|&i| f64::from(released[i as usize])).sum()).collect())
    }
}

/// A copy of `set` with the plan's canary items appended to its items, and
/// each canary appended as a subject with probability ½.
///
/// The inclusion draws and the canaries' subject keys come from `rng`: from
/// the operating system for an audit whose result is to be trusted, or from
/// a seed to reproduce one.
///
/// # Errors
/// [`Error::InvalidParam`] for a bad plan; [`Error::ItemCollision`] if a
/// canary item id is already an item of `set`.
pub fn insert_canaries(set: &FeatureSet, plan: &CanaryPlan, rng: &mut impl Rng) -> Result<(FeatureSet, Canaries)> {
    let plan = plan.validate()?;
    let first = set.n_items();
    let mut items = set.items.clone();
    let existing: HashSet<&str> = set.items.iter().map(String::as_str).collect();
    let mut canary_items = Vec::with_capacity(plan.canaries);
    for c in 0..plan.canaries {
        let mut own = Vec::with_capacity(plan.items_per_canary);
        for j in 0..plan.items_per_canary {
            let id = Canaries::item_id(c, j);
            if existing.contains(id.as_str()) {
                return Err(Error::ItemCollision(id));
            }
            let index = u32::try_from(items.len())
                .map_err(|_| Error::InvalidParam { field: "canaries", message: "too many items in all".into() })?;
            own.push(index);
            items.push(id);
        }
        canary_items.push(own);
    }
    debug_assert_eq!(items.len(), first + plan.canaries * plan.items_per_canary);
    let included: Vec<bool> = (0..plan.canaries).map(|_| rng.random_bool(0.5)).collect();
    let time = set.meta.snapshot_at_ms.div_euclid(1000);
    let mut rows: Vec<Vec<Interaction>> =
        (0..set.n_subjects()).map(|s| set.subject_interactions(s).collect()).collect();
    let mut keys = set.subject_keys.clone();
    for (own, _) in canary_items.iter().zip(&included).filter(|(_, &was_in)| was_in) {
        rows.push(own.iter().map(|&item| Interaction { item, value: plan.value, time }).collect());
        keys.push(SubjectKey(rng.random()));
    }
    let audited = FeatureSet::from_keyed_rows(set.meta.clone(), items, &rows, keys);
    Ok((audited, Canaries { items: canary_items, included }))
}

#[cfg(test)]
mod tests {
    use hush_features::{FeatureMeta, Feedback};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;

    fn base() -> FeatureSet {
        let rows = vec![
            vec![Interaction { item: 0, value: 1.0, time: 5 }, Interaction { item: 1, value: 2.0, time: 6 }],
            vec![Interaction { item: 1, value: 1.0, time: 7 }],
        ];
        FeatureSet::from_subject_rows(FeatureMeta::assembled(Feedback::Implicit), vec!["a".into(), "b".into()], &rows)
    }

    #[test]
    fn canaries_get_their_own_items_and_only_included_ones_become_subjects() {
        let set = base();
        let plan = CanaryPlan { canaries: 40, items_per_canary: 3, value: 1.0 };
        let (audited, canaries) = insert_canaries(&set, &plan, &mut ChaCha8Rng::seed_from_u64(1)).unwrap();
        assert_eq!(audited.n_items(), 2 + 120);
        assert_eq!(audited.items[2], "hush-audit-canary-0-0");
        let n_in = canaries.included.iter().filter(|&&x| x).count();
        assert!(n_in > 5 && n_in < 35, "{n_in}");
        assert_eq!(audited.n_subjects(), 2 + n_in);
        assert_eq!(audited.nnz(), 3 + 3 * n_in);
        // Real subjects are untouched.
        assert_eq!(
            audited.subject_interactions(0).collect::<Vec<_>>(),
            set.subject_interactions(0).collect::<Vec<_>>()
        );
        // Every canary item is touched by its canary alone, and only if it was included.
        for (c, own) in canaries.items.iter().enumerate() {
            for &item in own {
                let subjects = audited.by_item.range(item as usize).len();
                assert_eq!(subjects, usize::from(canaries.included[c]));
            }
        }
        // Exact counts separate the canaries perfectly.
        let mut counts = vec![0.0f32; audited.n_items()];
        for (i, count) in counts.iter_mut().enumerate() {
            *count = audited.by_item.range(i).len() as f32;
        }
        let scores = canaries.scores(&counts).unwrap();
        for (score, &was_in) in scores.iter().zip(&canaries.included) {
            assert_eq!(*score, if was_in { 3.0 } else { 0.0 });
        }
        assert!(matches!(canaries.scores(&counts[..10]), Err(Error::LengthMismatch { .. })));
        // The same seed gives the same audit.
        let again = insert_canaries(&set, &plan, &mut ChaCha8Rng::seed_from_u64(1)).unwrap();
        assert_eq!(again.1, canaries);
        assert_eq!(again.0, audited);
    }

    #[test]
    fn bad_plans_and_colliding_ids_are_refused() {
        let mut set = base();
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let bad = CanaryPlan { canaries: 1, items_per_canary: 3, value: 1.0 };
        assert!(matches!(insert_canaries(&set, &bad, &mut rng), Err(Error::InvalidParam { field: "canaries", .. })));
        let bad = CanaryPlan { canaries: 4, items_per_canary: 0, value: 1.0 };
        assert!(matches!(
            insert_canaries(&set, &bad, &mut rng),
            Err(Error::InvalidParam { field: "canary_items", .. })
        ));
        set.items[1] = Canaries::item_id(3, 0);
        let plan = CanaryPlan { canaries: 4, items_per_canary: 1, value: 1.0 };
        assert!(matches!(insert_canaries(&set, &plan, &mut rng), Err(Error::ItemCollision(_))));
    }
}
