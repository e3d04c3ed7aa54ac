//! Seeded evaluation splits, made here so the trainer and the evaluator
//! always see the same train and test interactions.

use std::fmt;
use std::str::FromStr;

use rand::seq::SliceRandom;

use crate::{Error, FeatureSet, Interaction, Result};

/// How to split a feature set into train and test.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SplitSpec {
    /// Per-subject random holdout: each subject's interactions are permuted
    /// by a generator keyed by that subject's key and `seed`, and
    /// `round(fraction · n)`, at least 1, go to test.
    Holdout {
        /// Share of each subject's interactions held out.
        fraction: f64,
        /// RNG seed.
        seed: u64,
    },
    /// Temporal, per subject: the latest `round(fraction · n)`, at least 1,
    /// of each subject's own interactions go to test. (A global time cutoff
    /// would make every subject's split depend on everyone else's times.)
    Temporal {
        /// Share of interactions held out.
        fraction: f64,
    },
}

impl FromStr for SplitSpec {
    type Err = Error;

    /// `holdout:FRACTION:SEED` or `temporal:FRACTION`.
    fn from_str(text: &str) -> Result<Self> {
        let bad = || Error::InvalidParam {
            field: "split",
            message: format!("`{text}` is not holdout:FRACTION:SEED or temporal:FRACTION with 0 < FRACTION < 1"),
        };
        let parts: Vec<&str> = text.split(':').collect();
        let fraction = |s: &str| s.parse::<f64>().ok().filter(|f| *f > 0.0 && *f < 1.0).ok_or_else(bad);
        match parts.as_slice() {
            ["holdout", f, seed] => {
                Ok(SplitSpec::Holdout { fraction: fraction(f)?, seed: seed.parse().map_err(|_| bad())? })
            }
            ["temporal", f] => Ok(SplitSpec::Temporal { fraction: fraction(f)? }),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for SplitSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SplitSpec::Holdout { fraction, seed } => write!(f, "holdout:{fraction}:{seed}"),
            SplitSpec::Temporal { fraction } => write!(f, "temporal:{fraction}"),
        }
    }
}

/// Train and test parts over the same subject and item index space.
#[derive(Clone, Debug, PartialEq)]
pub struct Split {
    /// The training part.
    pub train: FeatureSet,
    /// The held-out part.
    pub test: FeatureSet,
}

/// Splits `set` as `spec` says. Every interaction lands in exactly one part,
/// and each subject's split depends on that subject's data and key alone.
pub fn split(set: &FeatureSet, spec: &SplitSpec) -> Split {
    let n = set.n_subjects();
    let mut train_rows: Vec<Vec<Interaction>> = Vec::with_capacity(n);
    let mut test_rows: Vec<Vec<Interaction>> = Vec::with_capacity(n);
    for s in 0..n {
        let mut row: Vec<Interaction> = set.subject_interactions(s).collect();
        let fraction = match *spec {
            SplitSpec::Holdout { fraction, seed } => {
                // A canonical order first (by item), so the permutation does
                // not depend on the order rows were read in.
                row.sort_unstable_by_key(|i| i.item);
                row.shuffle(&mut set.subject_keys[s].rng(b"holdout", seed));
                fraction
            }
            SplitSpec::Temporal { fraction } => {
                // Latest first; ties broken by item so the split is deterministic.
                row.sort_unstable_by_key(|i| (std::cmp::Reverse(i.time), i.item));
                fraction
            }
        };
        let n_test = ((fraction * row.len() as f64).round() as usize).max(1).min(row.len());
        let train = row.split_off(n_test);
        test_rows.push(row);
        train_rows.push(train);
    }
    let part = |rows: &[Vec<Interaction>], name: &str| {
        let mut meta = set.meta.clone();
        meta.split = Some(format!("{name} of {spec}"));
        FeatureSet::from_keyed_rows(meta, set.items.clone(), rows, set.subject_keys.clone())
    };
    Split { train: part(&train_rows, "train"), test: part(&test_rows, "test") }
}
