//! DP hyperparameters by rule, not by tuning on private data.
//!
//! Choosing a setting by looking at private data (a validation split of the
//! very data being released) is itself a release. So a DP run takes every
//! setting the user did not fix from rules: functions of (ε, δ), of public
//! configuration, and of statistics the run releases anyway (the noisy item
//! counts). The rules were derived on synthetic storefronts generated with
//! a different seed from the ones the quality bench measures, and on public
//! peer figures; `models/dp-rules.md` gives the derivation and the figures.
//!
//! Two stages:
//! 1. [`DpRules::settle`], before anything is released: the contribution
//!    bound, clipping, value cap, confidence and the share of ρ for the
//!    preprocessing releases. These shape the sensitivities, so they cannot
//!    depend on the data.
//! 2. [`DpRules::iterations`], after the noisy item counts: how many ALS
//!    iterations the remaining budget supports. Every choice of the count
//!    has the same privacy loss (the noise of each iteration's releases
//!    grows with √T, see [`hush_privacy::Calibration::with_count`]), so the
//!    choice is post-processing of the counts.

use std::collections::BTreeSet;

use hush_features::Feedback;
use hush_privacy::Budget;

use crate::TrainParams;

/// Which DP settings a run takes from the rules: every one the user did not
/// set (by name, as in `[train]`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DpRules {
    fixed: BTreeSet<String>,
}

/// The fields [`DpRules`] may choose.
pub const RULED_FIELDS: [&str; 9] = [
    "lambda",
    "max_items_per_subject",
    "clip_norm",
    "max_value",
    "alpha",
    "rho_share_preprocessing",
    "popularity_weight",
    "iterations",
    "rank",
];

/// Settings that only DP runs read (bounds and shares of ρ): a config's
/// `[train]` fixes them for DP runs too. The others (rank, iterations, λ, α,
/// value cap, popularity weight) in `[train]` are the twin's; DP runs take
/// them from the rules unless `[train_dp]` sets them.
pub const DP_ONLY_FIELDS: [&str; 5] =
    ["clip_norm", "residual_bound", "max_items_per_subject", "rho_share_preprocessing", "min_noisy_count"];

/// The most iterations the rule picks: beyond it the non-private twin
/// itself gains little (ALS converges in about ten).
pub const MAX_RULED_ITERATIONS: u32 = 12;

/// The iteration rule's constant: T = ⌊R·√(n / u₁)⌋, with n the typical
/// interaction's item count ([`typical_count`]) and u₁ the noise of one
/// item's right-hand side if the whole budget went to one iteration, in
/// interactions. Fitted on the development storefront (`models/dp-rules.md`,
/// seeds other than the bench's): with n ≈ 2,611 the best T measured was 3
/// at u₁ = 85 (ε = 0.5), 5 at u₁ = 44 (ε = 1), 6–8 at u₁ = 23 (ε = 2) and
/// 10–12 at u₁ = 12 (ε = 4); quality falls off a cliff a few iterations past
/// the best (0.090 → 0.066 at ε = 1 from T = 5 to 7), so the rule rounds
/// down. (It was 1.4 with n read as a weighted median, ≈ 630 there.)
pub const ITERATION_RULE: f64 = 0.69;

impl DpRules {
    /// Rules for every field except those named in `fixed` (the keys a
    /// config's `[train]` table sets).
    pub fn except<I, S>(fixed: I) -> DpRules
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        DpRules { fixed: fixed.into_iter().map(Into::into).collect() }
    }

    /// Whether the rules choose `field`.
    pub fn chooses(&self, field: &str) -> bool {
        RULED_FIELDS.contains(&field) && !self.fixed.contains(field)
    }

    /// Stage 1: the settings that shape sensitivities, from (ε, δ) and the
    /// public configuration only. Fields the user fixed are kept.
    ///
    /// # Privacy
    /// Reads no data: post-processing of nothing.
    pub fn settle(&self, feedback: Feedback, budget: Budget, params: &TrainParams) -> TrainParams {
        let mut p = params.clone();
        let epsilon = budget.epsilon.value();
        let mut set = |field: &str, apply: &mut dyn FnMut(&mut TrainParams)| {
            if self.chooses(field) {
                apply(&mut p);
            }
        };
        match feedback {
            Feedback::Implicit => {
                // Binary preferences: a purchase weighs no more than a view in
                // the noisy statistics, because the sensitivity grows with the
                // largest weight while most interactions carry the smallest.
                set("max_value", &mut |p| p.max_value = 1.0);
                // Development storefront, Recall@10 with α = 4 → 8 (noise
                // seeds 1, 2): 0.0778 → 0.0803 at ε = 0.5, 0.0889 → 0.0907
                // at 1, 0.0946 → 0.0985 at 2, 0.0959 → 0.1029 at 4; α = 16
                // fell back at ε ≤ 1 (0.0776, 0.0779).
                set("alpha", &mut |p| p.alpha = 8.0);
                // The default 0.05 suits the twin's exact statistics; under
                // noise, folding a subject in needs a firmer prior (measured:
                // Recall@10 0.064 at 0.05 against 0.096 at 10, ε = 4).
                set("lambda", &mut |p| p.lambda = 10.0);
                // Subject vectors are scaled to norm C, and the item solve is
                // invariant to C but for the ridge: 1 is as good as any.
                set("clip_norm", &mut |p| p.clip_norm = 1.0);
                set("max_items_per_subject", &mut |p| p.max_items_per_subject = implicit_bound(epsilon));
                set("rho_share_preprocessing", &mut |p| p.rho_share_preprocessing = 0.3);
                set("popularity_weight", &mut |p| p.popularity_weight = 1.0);
                set("rank", &mut |p| p.rank = 16);
                set("iterations", &mut |p| p.iterations = MAX_RULED_ITERATIONS);
            }
            Feedback::Explicit => {
                set("clip_norm", &mut |p| p.clip_norm = 1.0);
                set("max_items_per_subject", &mut |p| p.max_items_per_subject = 20);
                set("rank", &mut |p| p.rank = 4);
                set("iterations", &mut |p| p.iterations = MAX_RULED_ITERATIONS);
            }
        }
        p
    }

    /// Stage 2: the iterations the budget supports, from the released noisy
    /// item counts, or `None` if the user fixed them.
    ///
    /// `noise_per_interaction` is the noise of one item's right-hand side
    /// with the planned iterations, in units of one interaction's
    /// contribution to it (σ·√k/Δ); each iteration's noise grows with √T.
    /// The typical interaction's item count n is [`typical_count`] of the
    /// noisy counts, whose noise has std `count_noise`. The rule takes
    /// T = ⌊R·√(n / u₁)⌋ iterations ([`ITERATION_RULE`]), at most
    /// [`MAX_RULED_ITERATIONS`].
    ///
    /// Zero means that even one iteration's factors would be mostly noise:
    /// the trainer then makes an implicit model popularity-only, spending
    /// the iterations' budget on a second count release (an explicit one
    /// still takes one iteration).
    ///
    /// # Privacy
    /// Post-processing of the released counts.
    pub fn iterations(
        &self,
        noisy_counts: &[f64],
        count_noise: f64,
        planned: u32,
        noise_per_interaction: f64,
    ) -> Option<u32> {
        if !self.chooses("iterations") {
            return None;
        }
        let typical = typical_count(noisy_counts, count_noise);
        let unit_noise = noise_per_interaction / f64::from(planned.max(1)).sqrt();
        let most = if unit_noise > 0.0 { ITERATION_RULE * (typical / unit_noise).sqrt() } else { f64::INFINITY };
        let iterations = most.floor().clamp(0.0, f64::from(MAX_RULED_ITERATIONS)) as u32;
        tracing::info!(typical_count = typical, unit_noise, iterations, "iterations chosen by rule");
        Some(iterations)
    }
}

/// The contribution bound of implicit DP runs: more interactions per subject
/// carry more signal until the √k growth of every sensitivity outweighs it.
fn implicit_bound(_epsilon: f64) -> usize {
    60
}

/// The count of the item a random interaction touches, on average: the
/// interaction-weighted mean count Σn²/Σn, estimated from noisy counts
/// ñ = n + e with e ~ N(0, σ²) as Σ(ñ² − σ²)/Σñ. Since E(ñ²) = n² + σ²,
/// noise neither inflates it (as it inflated the plain weighted median on
/// ml-latest-small, where noise on thousands of rare items passed for mass)
/// nor deflates it (as the median of counts netted of 2σ was pushed up on a
/// large storefront when the netting removed the tail). Zero when the counts
/// say nothing.
pub fn typical_count(noisy_counts: &[f64], sigma: f64) -> f64 {
    let total: f64 = noisy_counts.iter().sum();
    let squares: f64 = noisy_counts.iter().map(|&c| c * c - sigma * sigma).sum();
    if total > 0.0 && squares > 0.0 {
        squares / total
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn typical_count_is_the_interaction_weighted_mean() {
        // (100² + 50² + 30² + 20²) / 200 = 13,800 / 200.
        assert_eq!(typical_count(&[20.0, 100.0, 30.0, 50.0], 0.0), 69.0);
        // Less σ² per item: (13,800 − 4·100) / 200.
        assert_eq!(typical_count(&[20.0, 100.0, 30.0, 50.0], 10.0), 67.0);
        assert_eq!(typical_count(&[-5.0, 0.0], 1.0), 0.0);
        assert_eq!(typical_count(&[3.0, -3.0, 1.0], 10.0), 0.0, "noise alone says nothing");
        assert_eq!(typical_count(&[], 1.0), 0.0);
    }

    #[test]
    fn noise_does_not_move_the_typical_count() {
        // A skewed catalogue (a few popular items, many rare ones) under
        // noise as large as the rare items' counts: the estimate stays near
        // the noiseless value.
        use rand::SeedableRng;
        use rand_distr::{Distribution, Normal};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let counts: Vec<f64> = (0..20_000).map(|i| 2_000.0 / (1.0 + f64::from(i) / 20.0)).collect();
        let truth = typical_count(&counts, 0.0);
        for sigma in [5.0, 20.0, 80.0] {
            let noise = Normal::new(0.0, sigma).unwrap();
            let noisy: Vec<f64> = counts.iter().map(|&c| c + noise.sample(&mut rng)).collect();
            let estimate = typical_count(&noisy, sigma);
            // Within 3 standard errors (about 5% at σ = 80, mostly the
            // noise of Σñ); without the σ² term it would read 2.6× at σ = 80.
            assert!((estimate / truth - 1.0).abs() < 0.15, "σ {sigma}: {estimate} against {truth}");
        }
    }

    #[test]
    fn fixed_fields_are_kept() {
        let budget = Budget::new(4.0, 1e-6).unwrap();
        let mine = TrainParams { rank: 48, max_items_per_subject: 7, ..TrainParams::default() };
        let settled = DpRules::except(["rank", "max_items_per_subject"]).settle(Feedback::Implicit, budget, &mine);
        assert_eq!((settled.rank, settled.max_items_per_subject), (48, 7));
        assert_eq!(settled.max_value, 1.0, "an unfixed field is ruled");
        assert_eq!(DpRules::except(["iterations"]).iterations(&[1e6; 10], 1.0, 10, 1.0), None);
    }

    proptest! {
        /// More noise never buys more iterations, and the count stays in range.
        #[test]
        fn iterations_fall_as_noise_grows(
            counts in prop::collection::vec(0.0f64..1e5, 1..50),
            noise in 0.01f64..1e4,
            factor in 1.0f64..100.0,
            planned in 1u32..20,
        ) {
            let rules = DpRules::default();
            let a = rules.iterations(&counts, 1.0, planned, noise).unwrap();
            let b = rules.iterations(&counts, 1.0, planned, noise * factor).unwrap();
            prop_assert!(b <= a);
            // Noisier counts say less about the typical item, too.
            let c = rules.iterations(&counts, factor, planned, noise).unwrap();
            prop_assert!(c <= a);
            prop_assert!(a <= MAX_RULED_ITERATIONS);
        }
    }

    #[test]
    fn counts_below_the_noise_buy_no_iteration() {
        let rules = DpRules::default();
        // n = 40 against one interaction's noise of 44 (ml-latest-small, ε = 1):
        // R·√(40/44) < 1.
        assert_eq!(rules.iterations(&[40.0; 100], 0.0, 1, 44.0), Some(0));
        // n = 2,600 against 44 (a 200k-subject storefront): several.
        assert_eq!(rules.iterations(&[2_600.0; 100], 0.0, 1, 44.0), Some(5));
        // Counts that are all noise say nothing: no iteration.
        assert_eq!(rules.iterations(&[3.0, -3.0, 1.0], 10.0, 12, 1.0), Some(0));
    }
}
