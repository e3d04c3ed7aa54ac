//! What a training run releases: typed release kinds, their privacy plan,
//! and the hooks neighbour tests use to see every release before its noise.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use hush_features::Feedback;
use hush_privacy::{NoiseKind, Plan, PlannedRelease, Release, StreamId};

use crate::TrainParams;

/// Ratings are quantized to this step (half stars) before the noisy
/// global-mean release, so the released sum is an integer count of steps.
pub const RATING_QUANTUM: f64 = 0.5;

/// Every kind of statistic a training run releases. The discriminant is the
/// stable code that noise streams are keyed by: a kind that is not planned
/// cannot be looked up, and no two kinds share a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum ReleaseKind {
    /// Explicit: (Σ quantized centred ratings, number of ratings), integers,
    /// discrete Gaussian; the global mean is their ratio.
    RatingSum = 1,
    /// Per item: its number of subjects, an integer, discrete Gaussian.
    ItemCounts = 2,
    /// Implicit: the Gramian of all subject vectors, once per iteration.
    GlobalGram = 3,
    /// Per item: the Gram statistic of its subjects' vectors, once per iteration.
    ItemGram = 4,
    /// Per item: the right-hand side of its solve, once per iteration.
    ItemRhs = 5,
    /// Implicit, popularity only: per item its number of subjects again,
    /// Gaussian, made instead of every iteration's releases when the noisy
    /// counts show the factors would be noise ([`crate::DpRules::iterations`]
    /// chose none); it carries their whole loss, and the model's popularity
    /// is the precision-weighted mean of both count releases.
    ItemCountsAgain = 6,
}

impl ReleaseKind {
    /// Every kind, in code order.
    pub const ALL: [ReleaseKind; 6] = [
        ReleaseKind::RatingSum,
        ReleaseKind::ItemCounts,
        ReleaseKind::GlobalGram,
        ReleaseKind::ItemGram,
        ReleaseKind::ItemRhs,
        ReleaseKind::ItemCountsAgain,
    ];

    /// The stable code.
    pub fn code(self) -> u32 {
        self as u32
    }

    /// The kind with this code.
    pub fn from_code(code: u32) -> Option<ReleaseKind> {
        Self::ALL.into_iter().find(|k| k.code() == code)
    }

    /// The name people read in cards and logs.
    pub fn name(self) -> &'static str {
        match self {
            ReleaseKind::RatingSum => "rating_sum",
            ReleaseKind::ItemCounts => "item_counts",
            ReleaseKind::GlobalGram => "global_gram",
            ReleaseKind::ItemGram => "item_gram",
            ReleaseKind::ItemRhs => "item_rhs",
            ReleaseKind::ItemCountsAgain => "item_counts_again",
        }
    }

    /// The noise stream of one block (an item, or 0 for a single block) of
    /// this release in `iteration` (0: released once, before training).
    pub fn stream(self, iteration: u32, index: u64) -> StreamId {
        StreamId { release: self.code(), iteration, index }
    }
}

/// The privacy plan of a run: every release with its L2 sensitivity (over
/// all its blocks at once) and its share of the privacy loss.
///
/// # Privacy
/// One subject contributes at most k = `max_items_per_subject` interactions
/// on distinct items, values clipped to their range, vectors clipped to C:
/// - rating sum: a rating r adds round((r − m)/q) steps (m the midpoint, h
///   the half range, q the quantum), at most ⌈h/q⌉ in size, and 1 to the
///   count, so Δ = k·√(⌈h/q⌉² + 1);
/// - item counts: k items move by 1 each, Δ = √k;
/// - global Gramian: one x xᵀ with ‖x‖ ≤ C, Δ = C²;
/// - explicit item Gram of z = [x, 1]: Δ = (C² + 1)·√k (upper triangle,
///   whose norm is at most the Frobenius norm); rhs: Δ = B·√(C² + 1)·√k;
/// - implicit rhs Σ (1 + α·v) x: Δ = C·(1 + α·v_max)·√k (the item Gram
///   statistic is not released: it is estimated from released counts).
pub fn plan(feedback: Feedback, params: &TrainParams) -> Plan {
    let k = params.max_items_per_subject as f64;
    let c = params.clip_norm;
    let t = params.iterations;
    let pre = params.rho_share_preprocessing;
    let rest = 1.0 - pre;
    let planned = |kind: ReleaseKind, noise, l2_sensitivity: f64, count, share| PlannedRelease {
        name: kind.name().into(),
        code: kind.code(),
        noise,
        l2_sensitivity,
        count,
        share,
    };
    match feedback {
        Feedback::Explicit => {
            let steps = ((params.rating_max - params.rating_min) / 2.0 / RATING_QUANTUM).ceil();
            Plan::default()
                .with(planned(
                    ReleaseKind::RatingSum,
                    NoiseKind::DiscreteGaussian,
                    k * (steps * steps + 1.0).sqrt(),
                    1,
                    pre / 2.0,
                ))
                .with(planned(ReleaseKind::ItemCounts, NoiseKind::DiscreteGaussian, k.sqrt(), 1, pre / 2.0))
                .with(planned(ReleaseKind::ItemGram, NoiseKind::Gaussian, (c * c + 1.0) * k.sqrt(), t, rest / 2.0))
                .with(planned(
                    ReleaseKind::ItemRhs,
                    NoiseKind::Gaussian,
                    params.residual_bound * (c * c + 1.0).sqrt() * k.sqrt(),
                    t,
                    rest / 2.0,
                ))
        }
        Feedback::Implicit => {
            // No per-item Gram release: each item's Gram statistic is
            // estimated from its noisy count and the noisy global Gramian
            // (`ItemGramSource::FromCounts`), so the right-hand sides get
            // the share it would have taken.
            let a = params.alpha * params.max_value;
            Plan::default()
                .with(planned(ReleaseKind::ItemCounts, NoiseKind::DiscreteGaussian, k.sqrt(), 1, pre))
                .with(planned(ReleaseKind::GlobalGram, NoiseKind::Gaussian, c * c, t, rest * 0.1))
                .with(planned(ReleaseKind::ItemRhs, NoiseKind::Gaussian, c * (1.0 + a) * k.sqrt(), t, rest * 0.9))
        }
    }
}

/// The second count release of a popularity-only implicit run
/// ([`ReleaseKind::ItemCountsAgain`]), before its noise is set: Gaussian,
/// made once, Δ = √k as for the first (each subject adds one to at most k
/// items). [`hush_privacy::Calibration::exchanged`] gives it the loss of the
/// releases it replaces.
pub fn counts_again_release(params: &TrainParams) -> Release {
    Release {
        name: ReleaseKind::ItemCountsAgain.name().into(),
        code: ReleaseKind::ItemCountsAgain.code(),
        noise: NoiseKind::Gaussian,
        l2_sensitivity: (params.max_items_per_subject as f64).sqrt(),
        count: 1,
        noise_std: 0.0,
    }
}

/// The released item-side state after one step: what the next step
/// conditions on. Neighbour tests replay one run's states into another.
#[derive(Clone, Debug, PartialEq)]
pub struct ReleasedState {
    /// Item factors, items × rank, row-major.
    pub item_factors: Vec<f64>,
    /// Item biases.
    pub item_bias: Vec<f64>,
    /// The global mean.
    pub mean: f64,
    /// Released item counts, as released: noisy, possibly negative (the
    /// model's popularity clamps them at zero).
    pub popularity: Vec<f64>,
}

/// What a run records for neighbour tests: every release block's value
/// *before* noise, and the released state after preprocessing (index 0) and
/// after each iteration.
#[derive(Clone, Debug, Default)]
pub struct ReleaseLog {
    inner: Arc<Mutex<LogInner>>,
}

#[derive(Debug, Default)]
struct LogInner {
    pre_noise: BTreeMap<StreamId, Vec<f64>>,
    noise: BTreeMap<StreamId, Vec<f64>>,
    states: Vec<ReleasedState>,
}

impl ReleaseLog {
    fn lock(&self) -> std::sync::MutexGuard<'_, LogInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn record(&self, id: StreamId, values: Vec<f64>) {
        self.lock().pre_noise.insert(id, values);
    }

    pub(crate) fn record_noise(&self, id: StreamId, values: Vec<f64>) {
        self.lock().noise.insert(id, values);
    }

    pub(crate) fn push_state(&self, state: ReleasedState) {
        self.lock().states.push(state);
    }

    /// Every release block's pre-noise value, by stream.
    pub fn pre_noise(&self) -> BTreeMap<StreamId, Vec<f64>> {
        self.lock().pre_noise.clone()
    }

    /// The noise drawn for the right-hand sides and the item counts, by
    /// stream (tests that noise is never reused across iterations).
    pub fn noise(&self) -> BTreeMap<StreamId, Vec<f64>> {
        self.lock().noise.clone()
    }

    /// The released states, in order.
    pub fn states(&self) -> Vec<ReleasedState> {
        self.lock().states.clone()
    }
}
