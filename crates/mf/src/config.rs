//! Training settings: the `[train]` table of a config file, checked once.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Training settings as written in `models/*.toml` (`[train]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainParams {
    /// Latent dimension.
    pub rank: usize,
    /// ALS iterations (each: a subject step and an item step).
    pub iterations: u32,
    /// L2 regularization; scaled by each subject's and item's count (ALS-WR) in explicit mode.
    pub lambda: f64,
    /// Implicit mode: confidence is 1 + alpha · value (Hu, Koren, Volinsky 2008).
    pub alpha: f64,
    /// Implicit mode: values are clipped to this before computing confidence (bounds DP sensitivity).
    pub max_value: f64,
    /// Seed of the initialization and of the contribution-bound sampling.
    pub seed: u64,
    /// Explicit mode: ratings are clipped to this range (also the prediction range).
    pub rating_min: f64,
    /// Explicit mode: upper end of the rating range.
    pub rating_max: f64,
    /// DP: subject vectors are clipped to this L2 norm (C).
    pub clip_norm: f64,
    /// DP, explicit mode: residual targets are clipped to ±this (B).
    pub residual_bound: f64,
    /// DP: at most this many interactions per subject (k), sampled with `seed`.
    pub max_items_per_subject: usize,
    /// DP: share of ρ for the noisy global mean (explicit) or noisy item counts (implicit).
    pub rho_share_preprocessing: f64,
    /// DP: items whose noisy count is below this get no factors (bias only), since noise dominates them.
    pub min_noisy_count: f64,
    /// Implicit mode: weight of the popularity prior in ranking scores,
    /// `weight · ln(1 + popularity) / ln(1 + max popularity)` added to `x·v`.
    /// An item bias for implicit models; under DP it uses the already-released
    /// noisy counts (free post-processing) and lets the ranking degrade to
    /// popularity where noise has shrunk the factors.
    pub popularity_weight: f64,
}

impl Default for TrainParams {
    fn default() -> Self {
        TrainParams {
            rank: 32,
            iterations: 10,
            lambda: 0.05,
            // Hu et al. found alpha around 40 for counts; summed kind weights are smaller.
            alpha: 10.0,
            max_value: 20.0,
            seed: 42,
            rating_min: 0.5,
            rating_max: 5.0,
            // Chien et al. used C = 0.2 to 0.5 on MovieLens; tuned per data set.
            clip_norm: 0.5,
            residual_bound: 2.0,
            max_items_per_subject: 100,
            rho_share_preprocessing: 0.05,
            min_noisy_count: 0.0,
            popularity_weight: 0.0,
        }
    }
}

impl TrainParams {
    /// Checks every field.
    ///
    /// # Errors
    /// [`Error::InvalidParam`] naming the field and its allowed range.
    pub fn validate(&self) -> Result<TrainParams> {
        let bad = |field: &'static str, message: &str| Err(Error::InvalidParam { field, message: message.into() });
        if !(1..=256).contains(&self.rank) {
            return bad("rank", "must be within 1..=256");
        }
        if !(1..=100).contains(&self.iterations) {
            return bad("iterations", "must be within 1..=100");
        }
        let positive = |x: f64| x.is_finite() && x > 0.0;
        if !positive(self.lambda) {
            return bad("lambda", "must be a finite number > 0");
        }
        if !(self.alpha.is_finite() && self.alpha >= 0.0) {
            return bad("alpha", "must be a finite number >= 0");
        }
        if !positive(self.max_value) {
            return bad("max_value", "must be a finite number > 0");
        }
        if !(self.rating_min.is_finite() && self.rating_max.is_finite() && self.rating_min < self.rating_max) {
            return bad("rating_min", "rating_min and rating_max must be finite with rating_min < rating_max");
        }
        if !positive(self.clip_norm) {
            return bad("clip_norm", "must be a finite number > 0");
        }
        if !positive(self.residual_bound) {
            return bad("residual_bound", "must be a finite number > 0");
        }
        if self.max_items_per_subject == 0 {
            return bad("max_items_per_subject", "must be at least 1");
        }
        if !(self.rho_share_preprocessing > 0.0 && self.rho_share_preprocessing < 1.0) {
            return bad("rho_share_preprocessing", "must be within (0, 1)");
        }
        if !(self.popularity_weight.is_finite() && self.popularity_weight >= 0.0) {
            return bad("popularity_weight", "must be a finite number >= 0");
        }
        if !(self.min_noisy_count.is_finite() && self.min_noisy_count >= 0.0) {
            return bad("min_noisy_count", "must be a finite number >= 0");
        }
        Ok(self.clone())
    }
}
