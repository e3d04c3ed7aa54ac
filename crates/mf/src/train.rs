//! Training: ALS with biases (explicit), weighted ALS (implicit), and their
//! differentially private versions (DP-ALS after Chien et al., ICML 2021).
//!
//! One code path serves both: the non-private twin is the same algorithm
//! with no clipping, no contribution bound and no noise, so the only
//! difference a comparison sees is what privacy costs.
//!
//! # Privacy
//! Unit: one subject and all their interactions. Released: only the item
//! side (item factors, item biases, the global mean, item popularity).
//! Subject vectors are computed exactly from each subject's own data, in
//! memory, and never released (joint DP). Each subject's influence is
//! bounded by
//! - at most `k = max_items_per_subject` interactions on distinct items,
//!   sampled with the subject's own key (never by position),
//! - subject vectors clipped to `‖x‖ ≤ C` (`clip_norm`),
//! - explicit: ratings clipped to the rating range and residual targets to
//!   `±B` (`residual_bound`); implicit: values clipped to `max_value`.
//!
//! Explicit mode uses augmented vectors `z = [x, 1]` (`‖z‖² ≤ C² + 1`), so the
//! per-item statistics `A_j = Σ z zᵀ` and `b_j = Σ t z` also carry the noisy
//! item count (`A_j`'s last diagonal entry) and the bias numerator. L2
//! sensitivities over all items at once: `Δ_A = (C² + 1)·√k` (the upper
//! triangle is released and mirrored, whose norm is at most the Frobenius
//! norm), `Δ_b = B·√(C² + 1)·√k`, and for the noisy mean of clipped ratings
//! (sum of `r − m` and count, `m` the range midpoint) `Δ = k·√((r_max − m)² + 1)`.
//! Implicit mode releases `G = Σ x xᵀ` (`Δ = C²`), `b_j = Σ c x`
//! (`Δ = C·(1 + α·v_max)·√k`) and noisy item counts (`Δ = √k`); under DP
//! each item's `A_j = Σ (c − 1) x xᵀ` is estimated from its noisy count and
//! `G` instead of released ([`ItemGramSource::FromCounts`]), and the
//! iterations may be chosen from the noisy counts ([`DpRules::iterations`]). Every (release kind, iteration, item) draws
//! from its own noise stream ([`ReleaseKind::stream`]). Counts and the
//! rating sum are integers released with exact discrete Gaussian noise; the
//! rest are Gaussian mechanisms that compose exactly as one Gaussian (GDP).
//! See [`crate::release::plan`] for the sensitivities and
//! [`hush_privacy::PrivacyLoss`] for the accounting.

use std::sync::Arc;
use std::time::Instant;

use hush_features::{FeatureSet, Feedback};
use hush_privacy::{Budget, Calibration, NoiseSource, NoiseStream};

use crate::rules::DpRules;
use rand::seq::index::sample;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use rayon::prelude::*;

use crate::foldin::{explicit_subject_step, NormalEquations};
use crate::model::{DataProvenance, ModelMeta, PrivacyGuarantee};
use crate::release::plan;
use crate::release::{ReleaseKind, ReleaseLog, ReleasedState, RATING_QUANTUM};
use crate::{cg, linalg, Error, Model, Result, TrainParams};

/// How a model is to be trained.
pub enum Privacy {
    /// The non-private twin.
    NonPrivate,
    /// User-level (ε, δ)-DP.
    Dp {
        /// The target guarantee.
        budget: Budget,
        /// Where the noise comes from ([`NoiseSource::from_os_entropy`] for a real run).
        noise: Box<NoiseSource>,
        /// Settings taken from [`DpRules`] (every one the user did not fix);
        /// `None` trains with the params exactly as given (tests, research).
        rules: Option<DpRules>,
    },
}

/// The exact perturbation a run applies: bounds and noise scales.
///
/// [`train`] derives it from a [`Privacy`] choice; tests build it directly,
/// e.g. to check that DP training with the noise forced to zero and no
/// clipping is exactly the non-private twin, or to record and replay
/// releases for neighbour tests.
#[derive(Clone, Debug)]
pub struct Mechanics {
    /// Subject vectors are clipped to this norm (∞: no clipping).
    pub clip_norm: f64,
    /// Explicit residual targets are clipped to ±this (∞: none).
    pub residual_bound: f64,
    /// At most this many interactions per subject (`None`: no bound).
    pub max_items: Option<usize>,
    /// Discrete noise scale of the rating sum and count (explicit).
    pub rating_sum_std: f64,
    /// Discrete noise scale of each item count.
    pub item_count_std: f64,
    /// Noise std of each entry of the per-item Gram matrices.
    pub item_gram_std: f64,
    /// Noise std of each entry of the per-item right-hand sides.
    pub item_rhs_std: f64,
    /// Noise std of each entry of the global Gramian (implicit).
    pub global_gram_std: f64,
    /// Noise std of the second count release of a popularity-only run
    /// ([`ReleaseKind::ItemCountsAgain`]); zero until the rule chooses one.
    pub item_counts_again_std: f64,
    /// Implicit: instead of releasing each item's Gram statistic, estimate it
    /// from the item's noisy count and the noisy global Gramian (post-processing;
    /// subject vectors are then scaled to norm exactly C). See [`ItemGramSource`].
    pub item_gram: ItemGramSource,
    /// The noise source; `None` adds no noise.
    pub noise: Option<NoiseSource>,
    /// Records every release's pre-noise value and the released states.
    pub log: Option<ReleaseLog>,
    /// Released states of another run to condition on, step by step
    /// (neighbour tests: the same history, one subject fewer).
    pub replay: Option<Arc<Vec<ReleasedState>>>,
    /// Choose the iterations from the noisy item counts ([`DpRules::iterations`]).
    pub iteration_rule: Option<IterationRule>,
}

/// What choosing the iterations after the noisy counts needs: the rules,
/// the budget and the calibration to re-count.
#[derive(Clone, Debug)]
pub struct IterationRule {
    /// The rules (the iterations may be fixed by the user).
    pub rules: DpRules,
    /// The run's budget.
    pub budget: Budget,
    /// The calibration made for the planned iterations.
    pub calibration: Calibration,
}

impl Mechanics {
    /// No bounds, no noise: the non-private twin.
    pub fn non_private() -> Self {
        Mechanics {
            clip_norm: f64::INFINITY,
            residual_bound: f64::INFINITY,
            max_items: None,
            rating_sum_std: 0.0,
            item_count_std: 0.0,
            item_gram_std: 0.0,
            item_rhs_std: 0.0,
            global_gram_std: 0.0,
            item_counts_again_std: 0.0,
            item_gram: ItemGramSource::Released,
            noise: None,
            log: None,
            replay: None,
            iteration_rule: None,
        }
    }

    /// The bounds of `params` and the noise scales of `calibration`.
    ///
    /// # Errors
    /// [`Error::Privacy`] if the calibration lacks a release this feedback
    /// mode makes: a missing release is an error, never zero noise.
    pub fn calibrated(
        feedback: Feedback,
        params: &TrainParams,
        calibration: &Calibration,
        noise: NoiseSource,
    ) -> Result<Self> {
        let std = |kind: ReleaseKind| -> Result<f64> { Ok(calibration.release(kind.code())?.noise_std) };
        let (rating_sum_std, global_gram_std, item_gram, item_gram_std) = match feedback {
            Feedback::Explicit => {
                (std(ReleaseKind::RatingSum)?, 0.0, ItemGramSource::Released, std(ReleaseKind::ItemGram)?)
            }
            Feedback::Implicit => (0.0, std(ReleaseKind::GlobalGram)?, ItemGramSource::FromCounts, 0.0),
        };
        Ok(Mechanics {
            clip_norm: params.clip_norm,
            residual_bound: params.residual_bound,
            max_items: Some(params.max_items_per_subject),
            rating_sum_std,
            item_count_std: std(ReleaseKind::ItemCounts)?,
            item_gram_std,
            item_rhs_std: std(ReleaseKind::ItemRhs)?,
            global_gram_std,
            item_counts_again_std: 0.0,
            item_gram,
            noise: Some(noise),
            log: None,
            replay: None,
            iteration_rule: None,
        })
    }

    fn stream(&self, kind: ReleaseKind, iteration: u32, index: u64) -> Option<NoiseStream> {
        self.noise.as_ref().map(|n| n.stream(kind.stream(iteration, index)))
    }

    fn record(&self, kind: ReleaseKind, iteration: u32, index: u64, values: impl FnOnce() -> Vec<f64>) {
        if let Some(log) = &self.log {
            log.record(kind.stream(iteration, index), values());
        }
    }
}

/// Where an implicit item step's Gram statistic `A_j = Σ_{u∈Ω_j} α·v_uj x_u x_uᵀ` comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ItemGramSource {
    /// Computed from the item's subjects (plus noise under DP): exact, and
    /// what the non-private twin and explicit mode use.
    Released,
    /// Estimated as `α · ñ_j · M`, with ñ_j the item's noisy count (released
    /// once, before training) and `M = C²·G̃ / tr(G̃)` the mean outer product of
    /// the subject vectors, all scaled to norm C, from the noisy global
    /// Gramian G̃ (released every iteration anyway). Post-processing: no
    /// budget. Implicit DP uses it.
    ///
    /// # Why
    /// A released `A_j` carries d(d+1)/2 noisy entries whose spectral norm
    /// (about 2σ√d) dwarfs the signal of all but the most popular items, so
    /// the ridge that keeps the solve stable erased what it held. Estimating
    /// it instead frees that share of ρ for the right-hand sides, which carry
    /// the item's direction. Measured on a 200k-subject storefront with taste
    /// (`benches/quality.py`): see the numbers in `dp-rules.md`.
    FromCounts,
}

/// Progress of one iteration, for progress bars and logs.
#[derive(Clone, Copy, Debug)]
pub struct IterationReport {
    /// 1-based iteration.
    pub iteration: u32,
    /// Of how many.
    pub of: u32,
    /// Training loss after the subject step: RMSE on training ratings
    /// (explicit) or on observed preferences (implicit).
    pub loss: f64,
}

/// Trains a model on `set` (a training split or a whole feature set).
///
/// # Errors
/// [`Error::InvalidParam`], [`Error::Privacy`] if the budget cannot be
/// calibrated, [`Error::Data`] for an empty training set.
pub fn train(
    set: &FeatureSet,
    params: &TrainParams,
    privacy: Privacy,
    progress: &mut dyn FnMut(IterationReport),
) -> Result<Model> {
    let params = params.validate()?;
    let feedback = set.meta.feedback;
    let (params, mechanics, guarantee) = match privacy {
        Privacy::NonPrivate => (params, Mechanics::non_private(), PrivacyGuarantee::NonPrivate),
        Privacy::Dp { budget, noise, rules } => {
            let params = match &rules {
                Some(rules) => rules.settle(feedback, budget, &params).validate()?,
                None => params,
            };
            let calibration = plan(feedback, &params).calibrate(budget)?;
            let guarantee = dp_guarantee(budget, &calibration, &params, noise.is_seeded());
            let mut mechanics = Mechanics::calibrated(feedback, &params, &calibration, *noise)?;
            mechanics.iteration_rule = rules.map(|rules| IterationRule { rules, budget, calibration });
            (params, mechanics, guarantee)
        }
    };
    train_with_mechanics(set, &params, &mechanics, guarantee, progress)
}

/// DP popularity: what a storefront gets without personalization, the
/// whole budget spent on one release of the item counts (each subject
/// bounded to `params.max_items_per_subject` items, sampled by its own key
/// as in training; exact discrete Gaussian noise, Δ = √k). Returns the
/// noisy counts, one per item.
///
/// For comparison only: `hush evaluate` ranks by these counts as the
/// DP-popularity baseline a DP model should never fall below. They are
/// never stored or put in a model.
///
/// `params` are those of the model compared with (a popularity-only model
/// has no iterations, so they are not validated as a training run's): only
/// the bound and the sampling seed are read.
///
/// # Errors
/// [`Error::InvalidParam`] for a bound of zero items, [`Error::Privacy`] if
/// the budget cannot be calibrated, [`Error::Data`] for a subject with an
/// item twice or a value that is not a finite number.
pub fn dp_popularity_counts(
    set: &FeatureSet,
    params: &TrainParams,
    budget: Budget,
    noise: NoiseSource,
) -> Result<Vec<f64>> {
    if params.max_items_per_subject == 0 {
        return Err(Error::InvalidParam { field: "max_items_per_subject", message: "must be at least 1".into() });
    }
    let counts = ReleaseKind::ItemCounts;
    let calibration = hush_privacy::Plan::default()
        .with(hush_privacy::PlannedRelease {
            name: counts.name().into(),
            code: counts.code(),
            noise: hush_privacy::NoiseKind::DiscreteGaussian,
            l2_sensitivity: (params.max_items_per_subject as f64).sqrt(),
            count: 1,
            share: 1.0,
        })
        .calibrate(budget)?;
    let mechanics = Mechanics {
        max_items: Some(params.max_items_per_subject),
        item_count_std: calibration.release(counts.code())?.noise_std,
        noise: Some(noise),
        ..Mechanics::non_private()
    };
    let data = prepare_data(set, params, &mechanics)?;
    // Implicit: the counts alone (an explicit run would also release the
    // rating sum, which this release has no budget for).
    Ok(release_preprocessing(Feedback::Implicit, &data, params, &mechanics).0)
}

/// The guarantee a DP model carries.
fn dp_guarantee(
    budget: Budget,
    calibration: &Calibration,
    params: &TrainParams,
    noise_seeded: bool,
) -> PrivacyGuarantee {
    PrivacyGuarantee::Dp {
        target_epsilon: budget.epsilon.value(),
        epsilon: calibration.epsilon,
        epsilon_gdp: calibration.epsilon_gdp,
        epsilon_zcdp: calibration.epsilon_zcdp,
        delta: calibration.delta,
        rho: calibration.rho,
        epsilon_simple_bound: calibration.epsilon_simple_bound,
        releases: calibration.releases.clone(),
        clip_norm: params.clip_norm,
        residual_bound: params.residual_bound,
        max_items_per_subject: params.max_items_per_subject,
        iterations: params.iterations,
        noise_seeded,
    }
}

/// Re-counts the per-iteration releases of `rule`'s calibration to
/// `iterations` (same loss, noise scaled by √(T / planned)) and returns the
/// new mechanics' noise scales and guarantee.
fn recount(
    rule: &IterationRule,
    feedback: Feedback,
    params: &TrainParams,
    iterations: u32,
    mechanics: &mut Mechanics,
    noise_seeded: bool,
) -> Result<PrivacyGuarantee> {
    let mut calibration = rule.calibration.clone();
    for kind in [ReleaseKind::GlobalGram, ReleaseKind::ItemGram, ReleaseKind::ItemRhs] {
        if calibration.release(kind.code()).is_ok() {
            calibration = calibration.with_count(kind.code(), iterations, rule.budget)?;
        }
    }
    let std = |kind: ReleaseKind| calibration.release(kind.code()).map(|r| r.noise_std).unwrap_or(0.0);
    mechanics.item_rhs_std = std(ReleaseKind::ItemRhs);
    match feedback {
        Feedback::Explicit => mechanics.item_gram_std = std(ReleaseKind::ItemGram),
        Feedback::Implicit => mechanics.global_gram_std = std(ReleaseKind::GlobalGram),
    }
    let params = TrainParams { iterations, ..params.clone() };
    Ok(dp_guarantee(rule.budget, &calibration, &params, noise_seeded))
}

/// Exchanges every iteration's releases of `rule`'s calibration for one
/// more count release carrying their whole loss
/// ([`ReleaseKind::ItemCountsAgain`], Δ = √k as for the first), and returns
/// the guarantee of that popularity-only run.
///
/// # Why
/// When the noisy counts show that even one iteration's factors would be
/// noise, a model that spent most of ρ on them ranks by counts noisier than
/// those of plain DP popularity at the same ε, and loses to it (ml-latest-small,
/// implicit, ε = 1: Recall@10 0.005 against 0.036–0.056 for DP popularity
/// with the whole budget). Spending the rest on counts makes the model that
/// DP popularity: two Gaussian count releases, combined by their precisions,
/// are as precise as one carrying both losses.
///
/// # Privacy
/// The exchange keeps the total loss ([`hush_privacy::Calibration::exchanged`]),
/// fixed before any release, so choosing it from the noisy counts is
/// adaptive composition.
fn popularity_only(
    rule: &IterationRule,
    params: &TrainParams,
    mechanics: &mut Mechanics,
    noise_seeded: bool,
) -> Result<PrivacyGuarantee> {
    let calibration = rule.calibration.exchanged(
        &[ReleaseKind::GlobalGram.code(), ReleaseKind::ItemRhs.code()],
        crate::release::counts_again_release(params),
        rule.budget,
    )?;
    mechanics.item_counts_again_std = calibration.release(ReleaseKind::ItemCountsAgain.code())?.noise_std;
    mechanics.item_rhs_std = 0.0;
    mechanics.global_gram_std = 0.0;
    let params = TrainParams { iterations: 0, ..params.clone() };
    Ok(dp_guarantee(rule.budget, &calibration, &params, noise_seeded))
}

/// The second count release of a popularity-only run (Gaussian noise,
/// rounded to an integer), combined with the first (`first`, as released) by
/// their precisions: the model's popularity, as released (possibly negative).
fn release_counts_again(data: &Data, first: &[f64], mechanics: &Mechanics) -> Vec<f64> {
    let (s1, s2) = (mechanics.item_count_std, mechanics.item_counts_again_std);
    let (w1, w2) = if s1 > 0.0 && s2 > 0.0 { (1.0 / (s1 * s1), 1.0 / (s2 * s2)) } else { (1.0, 0.0) };
    let mut combined: Vec<f64> = (0..data.items.len())
        .map(|item| {
            let count = data.items[item].len() as f64;
            mechanics.record(ReleaseKind::ItemCountsAgain, 0, item as u64, || vec![count]);
            let mut noisy = [count];
            if let Some(mut stream) = mechanics.stream(ReleaseKind::ItemCountsAgain, 0, item as u64) {
                stream.add_gaussian(&mut noisy, s2);
                // Rounded to an integer (post-processing), so that no
                // floating-point grid below a noisy count is released.
                noisy[0] = noisy[0].round();
                if let Some(log) = &mechanics.log {
                    log.record_noise(ReleaseKind::ItemCountsAgain.stream(0, item as u64), vec![noisy[0] - count]);
                }
            }
            (w1 * first[item] + w2 * noisy[0]) / (w1 + w2)
        })
        .collect();
    if let Some(state) = mechanics.replay.as_ref().and_then(|r| r.get(1)) {
        combined.clone_from(&state.popularity);
    }
    if let Some(log) = &mechanics.log {
        log.push_state(ReleasedState {
            item_factors: Vec::new(),
            item_bias: Vec::new(),
            mean: 0.0,
            popularity: combined.clone(),
        });
    }
    combined
}

/// Subject-major and item-major views of the (bounded, clipped) training
/// data. Values stay `f32`, as in the feature set: sums over them are taken
/// in `f64` where precision needs it, and one copy in the narrow type halves
/// the memory a large run touches.
struct Data {
    /// Per subject: (item, value).
    subjects: Vec<Vec<(u32, f32)>>,
    /// Per item: (subject, value).
    items: Vec<Vec<(u32, f32)>>,
}

fn prepare_data(set: &FeatureSet, params: &TrainParams, mechanics: &Mechanics) -> Result<Data> {
    let clip = |v: f32| -> f32 {
        match set.meta.feedback {
            Feedback::Explicit => f64::from(v).clamp(params.rating_min, params.rating_max) as f32,
            Feedback::Implicit => f64::from(v).clamp(0.0, params.max_value) as f32,
        }
    };
    let subjects: Vec<Vec<(u32, f32)>> = (0..set.n_subjects())
        .map(|s| {
            let mut row: Vec<(u32, f32)> = set.subject_interactions(s).map(|i| (i.item, clip(i.value))).collect();
            // Clamping passes NaN through, and one NaN would poison every
            // released sum: a feature set built in code or read from a
            // crafted file must not reach the statistics with one.
            if row.iter().any(|&(_, v)| !v.is_finite()) {
                return Err(Error::Data(format!("subject {s} has a value that is not a finite number")));
            }
            // The √k sensitivities assume k *distinct* items per subject.
            row.sort_unstable_by_key(|&(item, _)| item);
            if row.windows(2).any(|w| w[0].0 == w[1].0) {
                return Err(Error::Data(format!(
                    "subject {s} has an item twice; interactions must be merged per item"
                )));
            }
            if let Some(k) = mechanics.max_items.filter(|&k| row.len() > k) {
                // The contribution bound, enforced again here: never trust the
                // input to honour it. The sample is keyed by this subject's
                // own key, drawn over its items in canonical order, so it
                // does not depend on any other subject or on positions.
                let mut rng = set.subject_keys[s].rng(b"train-bound", params.seed);
                let mut keep: Vec<usize> = sample(&mut rng, row.len(), k).into_vec();
                keep.sort_unstable();
                row = keep.into_iter().map(|i| row[i]).collect();
            }
            Ok(row)
        })
        .collect::<Result<_>>()?;
    let mut items: Vec<Vec<(u32, f32)>> = vec![Vec::new(); set.n_items()];
    for (s, row) in subjects.iter().enumerate() {
        for &(i, v) in row {
            items[i as usize].push((s as u32, v));
        }
    }
    Ok(Data { subjects, items })
}

/// Adds exact discrete Gaussian noise to an integer statistic.
fn add_discrete(value: i64, stream: Option<&mut NoiseStream>, sigma: f64) -> i64 {
    match stream {
        Some(n) => value.saturating_add(n.discrete_gaussian(sigma)),
        None => value,
    }
}

/// Trains with explicitly given mechanics. See [`train`].
///
/// # Errors
/// [`Error::Data`] for an empty training set or a subject with an item twice.
pub fn train_with_mechanics(
    set: &FeatureSet,
    params: &TrainParams,
    mechanics: &Mechanics,
    guarantee: PrivacyGuarantee,
    progress: &mut dyn FnMut(IterationReport),
) -> Result<Model> {
    let started = Instant::now();
    let feedback = set.meta.feedback;
    let _span = tracing::info_span!(
        "train",
        ?feedback,
        rank = params.rank,
        iterations = params.iterations,
        private = guarantee.epsilon().is_some()
    )
    .entered();
    if set.nnz() == 0 {
        return Err(Error::Data("the training set has no interactions".into()));
    }
    let data = prepare_data(set, params, mechanics)?;
    let n_items = set.n_items();
    let d = params.rank;

    let (counts, mean) = release_preprocessing(feedback, &data, params, mechanics);
    // A count cannot be negative: clamping is post-processing. The rules
    // read the counts as released, whose noise they know.
    let popularity: Vec<f64> = counts.iter().map(|&c| c.max(0.0)).collect();

    // Stage 2 of the DP rules: the iterations the budget supports, chosen
    // from the released counts (post-processing), each iteration's noise
    // re-scaled so that the total loss is the one calibrated.
    let mut guarantee = guarantee;
    let mut owned: Option<(Mechanics, TrainParams)> = None;
    if let Some(rule) = &mechanics.iteration_rule {
        let rhs = rule.calibration.release(ReleaseKind::ItemRhs.code())?;
        let per_interaction = rhs.l2_sensitivity / (params.max_items_per_subject as f64).sqrt();
        let noise = rhs.noise_std / per_interaction;
        if let Some(chosen) = rule.rules.iterations(&counts, mechanics.item_count_std, params.iterations, noise) {
            let mut m = mechanics.clone();
            // No iteration worth its noise: implicit runs spend the budget on
            // counts instead (explicit ones have no such fallback yet, and
            // take the one iteration their bias needs).
            let iterations = if feedback == Feedback::Implicit { chosen } else { chosen.max(1) };
            guarantee = if iterations == 0 {
                popularity_only(rule, params, &mut m, guarantee.noise_seeded())?
            } else {
                recount(rule, feedback, params, iterations, &mut m, guarantee.noise_seeded())?
            };
            owned = Some((m, TrainParams { iterations, ..params.clone() }));
        }
    }
    let (mechanics, params) = match &owned {
        Some((m, p)) => (m, p),
        None => (mechanics, params),
    };

    // Data-independent initialization: costs no privacy.
    let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
    let init = Normal::new(0.0, 0.1 / (d as f64).sqrt()).expect("a valid normal");
    let mut item_factors: Vec<f64> = (0..n_items * d).map(|_| init.sample(&mut rng)).collect();
    let mut item_bias = vec![0.0f64; n_items];
    if let Some(log) = &mechanics.log {
        log.push_state(ReleasedState {
            item_factors: Vec::new(),
            item_bias: Vec::new(),
            mean,
            popularity: counts.clone(),
        });
    }
    // A popularity-only run (no iterations) makes its second count release
    // here, and releases no factors: not even the random initial ones, which
    // would rank by chance.
    let popularity = if params.iterations == 0 {
        item_factors.fill(0.0);
        release_counts_again(&data, &counts, mechanics)
    } else {
        popularity
    };
    // Subject vectors live in flat buffers updated in place each iteration:
    // a hundred thousand small vectors reallocated per iteration would cost
    // allocator churn and freshly zeroed pages.
    let mut subjects =
        SubjectFactors { d, factors: vec![0.0; data.subjects.len() * d], bias: vec![0.0; data.subjects.len()] };
    let mut subject_flat: Vec<f32> = Vec::new();

    for iteration in 1..=params.iterations {
        let _iteration = tracing::info_span!("iteration", iteration).entered();
        subject_step(feedback, &data, params, mechanics, (&item_factors, &item_bias, mean), &mut subjects);
        let loss = training_loss(feedback, &data, &subjects, &item_factors, &item_bias, mean);

        // Item step: noisy sufficient statistics, then a solve per item.
        // Reused across iterations, and sized up front: growing a buffer of
        // n·d floats by doubling costs a copy and fresh pages at every step.
        subject_flat.clear();
        if feedback == Feedback::Implicit {
            subject_flat.extend(subjects.factors.iter().map(|&x| x as f32));
        }
        let (global_gram, mean_outer) = release_global_gram(feedback, iteration, mechanics, &subjects);
        let global_gram32 = to_f32(&global_gram);
        let solved: Vec<(Vec<f64>, f64)> = (0..n_items)
            .into_par_iter()
            // One scratch matrix per rayon job for an item's noisy Gramian:
            // 16 KB per item at rank 64 would otherwise churn the allocator.
            .map_init(Vec::new, |noisy_gram, item| {
                let step =
                    ItemStep { item, iteration, mechanics, params, global_gram: &global_gram, mean_outer: &mean_outer };
                match feedback {
                    Feedback::Explicit => step.explicit(&data.items[item], &subjects, mean),
                    Feedback::Implicit => step.implicit(
                        &data.items[item],
                        &subject_flat,
                        &global_gram32,
                        &item_factors[item * d..(item + 1) * d],
                        popularity[item],
                        noisy_gram,
                    ),
                }
            })
            .collect();
        for (item, (factors, bias)) in solved.into_iter().enumerate() {
            item_factors[item * d..(item + 1) * d].copy_from_slice(&factors);
            item_bias[item] = bias;
        }
        if let Some(state) = mechanics.replay.as_ref().and_then(|r| r.get(iteration as usize)) {
            item_factors.clone_from(&state.item_factors);
            item_bias.clone_from(&state.item_bias);
        }
        if let Some(log) = &mechanics.log {
            log.push_state(ReleasedState {
                item_factors: item_factors.clone(),
                item_bias: item_bias.clone(),
                mean,
                popularity: counts.clone(),
            });
        }
        tracing::info!(iteration, loss, "iteration done");
        progress(IterationReport { iteration, of: params.iterations, loss });
    }
    drop(subjects);
    // How long training took stays in the log: in a released model it
    // would hint at how much private data there was.
    tracing::info!(seconds = started.elapsed().as_secs_f64(), "training done");

    Ok(assemble_model(set, params, guarantee, &item_factors, &item_bias, mean, &popularity))
}

/// The preprocessing releases (iteration 0): item counts, and in explicit
/// mode the rating sum and count. All are integers with exact discrete
/// Gaussian noise, so no floating-point grid shows in what is released.
/// Returns the noisy item counts as released (possibly negative) and the
/// global mean rating (zero in implicit mode).
fn release_preprocessing(
    feedback: Feedback,
    data: &Data,
    params: &TrainParams,
    mechanics: &Mechanics,
) -> (Vec<f64>, f64) {
    let n_items = data.items.len();
    let mut popularity: Vec<f64> = (0..n_items)
        .map(|item| {
            let count = data.items[item].len() as i64;
            mechanics.record(ReleaseKind::ItemCounts, 0, item as u64, || vec![count as f64]);
            let mut stream = mechanics.stream(ReleaseKind::ItemCounts, 0, item as u64);
            let noisy = add_discrete(count, stream.as_mut(), mechanics.item_count_std);
            if let Some(log) = &mechanics.log {
                log.record_noise(ReleaseKind::ItemCounts.stream(0, item as u64), vec![(noisy - count) as f64]);
            }
            noisy as f64
        })
        .collect();
    let mut mean = 0.0;
    if feedback == Feedback::Explicit {
        let mid = (params.rating_min + params.rating_max) / 2.0;
        let (sum, count) =
            data.subjects.iter().flatten().fold((0i64, 0i64), |(s, c), &(_, r)| {
                (s + ((f64::from(r) - mid) / RATING_QUANTUM).round() as i64, c + 1)
            });
        mechanics.record(ReleaseKind::RatingSum, 0, 0, || vec![sum as f64, count as f64]);
        let mut stream = mechanics.stream(ReleaseKind::RatingSum, 0, 0);
        let sum = add_discrete(sum, stream.as_mut(), mechanics.rating_sum_std);
        let count = add_discrete(count, stream.as_mut(), mechanics.rating_sum_std);
        mean = (mid + sum as f64 * RATING_QUANTUM / count.max(1) as f64).clamp(params.rating_min, params.rating_max);
    }
    if let Some(state) = mechanics.replay.as_ref().and_then(|r| r.first()) {
        mean = state.mean;
        popularity.clone_from(&state.popularity);
    }
    (popularity, mean)
}

/// The subject step of one iteration: each subject's vector (and bias, in
/// explicit mode) solved exactly against the released item side, clipped.
/// Private to each subject and never released.
fn subject_step(
    feedback: Feedback,
    data: &Data,
    params: &TrainParams,
    mechanics: &Mechanics,
    (item_factors, item_bias, mean): (&[f64], &[f64], f64),
    subjects: &mut SubjectFactors,
) {
    let d = subjects.d;
    let gram = match feedback {
        Feedback::Implicit => {
            let mut g = gram_of(item_factors, d);
            linalg::mirror_upper(&mut g, d);
            g
        }
        Feedback::Explicit => Vec::new(),
    };
    let row = |i: usize, out: &mut [f64]| out.copy_from_slice(&item_factors[i * d..(i + 1) * d]);
    let (gram32, item_factors32) = match feedback {
        Feedback::Implicit => (to_f32(&gram), to_f32(item_factors)),
        Feedback::Explicit => (Vec::new(), Vec::new()),
    };
    subjects.factors.par_chunks_mut(d).zip(subjects.bias.par_iter_mut()).zip(data.subjects.par_iter()).for_each(
        |((x, bias), interactions)| {
            match feedback {
                Feedback::Explicit => {
                    let iter = interactions.iter().map(|&(i, v)| (i as usize, f64::from(v)));
                    let v = explicit_subject_step(d, params.lambda, mean, iter, row, |i| item_bias[i]);
                    x.copy_from_slice(&v.factors);
                    *bias = v.bias;
                }
                Feedback::Implicit => {
                    // Warm start from the previous iteration's vector (zero at first).
                    let solved = implicit_step_cg(
                        d,
                        params.alpha,
                        cg::Gram::Full(&gram32),
                        &item_factors32,
                        interactions,
                        x.iter().copied(),
                        params.lambda,
                        None,
                    );
                    x.copy_from_slice(&solved);
                }
            }
            clip_norm(x, mechanics.clip_norm);
            if mechanics.item_gram == ItemGramSource::FromCounts {
                scale_to_norm(x, mechanics.clip_norm);
            }
        },
    );
}

/// The global Gramian release of one iteration (implicit mode): the sum of
/// the clipped subjects' outer products with symmetric Gaussian noise, and
/// from it, where item Gramians come from counts, the mean outer product of
/// the (norm-C) subject vectors: tr(G) = N·C² when every vector has norm C.
/// Both empty in explicit mode.
fn release_global_gram(
    feedback: Feedback,
    iteration: u32,
    mechanics: &Mechanics,
    subjects: &SubjectFactors,
) -> (Vec<f64>, Vec<f64>) {
    let d = subjects.d;
    let global_gram = match feedback {
        Feedback::Implicit => {
            let mut g = subjects
                .factors
                .par_chunks(4096 * d)
                .map(|chunk| {
                    let mut g = vec![0.0; d * d];
                    for x in chunk.chunks_exact(d) {
                        linalg::add_outer_upper(&mut g, d, x, 1.0);
                    }
                    g
                })
                .reduce(|| vec![0.0; d * d], |a, b| a.iter().zip(&b).map(|(x, y)| x + y).collect());
            mechanics.record(ReleaseKind::GlobalGram, iteration, 0, || upper_triangle(&g, d));
            if let Some(mut n) = mechanics.stream(ReleaseKind::GlobalGram, iteration, 0) {
                add_symmetric_noise(&mut g, d, &mut n, mechanics.global_gram_std);
            }
            linalg::mirror_upper(&mut g, d);
            g
        }
        Feedback::Explicit => Vec::new(),
    };
    let mean_outer: Vec<f64> = match mechanics.item_gram {
        ItemGramSource::FromCounts if feedback == Feedback::Implicit => {
            let trace: f64 = (0..d).map(|i| global_gram[i * d + i]).sum();
            let c2 = mechanics.clip_norm * mechanics.clip_norm;
            if trace > 0.0 && c2.is_finite() {
                global_gram.iter().map(|g| g * c2 / trace).collect()
            } else {
                (0..d * d).map(|k| if k % (d + 1) == 0 { c2.min(1.0) / d as f64 } else { 0.0 }).collect()
            }
        }
        _ => Vec::new(),
    };
    (global_gram, mean_outer)
}

/// The released model: the item side as trained, its guarantee, and where
/// its data came from.
fn assemble_model(
    set: &FeatureSet,
    params: &TrainParams,
    guarantee: PrivacyGuarantee,
    item_factors: &[f64],
    item_bias: &[f64],
    mean: f64,
    popularity: &[f64],
) -> Model {
    let mut model = Model {
        meta: ModelMeta {
            model_id: String::new(),
            hush_version: env!("CARGO_PKG_VERSION").into(),
            created_at_ms: today_ms(),
            feedback: set.meta.feedback,
            params: params.clone(),
            privacy: guarantee,
            data: DataProvenance {
                snapshot_at_ms: set.meta.snapshot_at_ms,
                report_digest: set.meta.report_digest.clone(),
                research_only: set.meta.research_only,
                sampling_seeded: set.meta.sampling_seeded,
                catalogue: set.meta.catalogue.clone(),
                split: set.meta.split.clone(),
                weighting: set.meta.weighting.clone(),
            },
            purpose: crate::ModelPurpose::Release,
        },
        items: set.items.clone(),
        rank: params.rank,
        item_factors: item_factors.iter().map(|&v| v as f32).collect(),
        item_bias: item_bias.iter().map(|&v| v as f32).collect(),
        global_mean: mean as f32,
        popularity: popularity.iter().map(|&v| v.max(0.0) as f32).collect(),
        seal: None,
        gram: Vec::new(),
        popularity_prior: Vec::new(),
        serving: Default::default(),
    };
    model.prepare();
    model.assign_id();
    model
}

/// The upper triangle (diagonal included) of a row-major n × n matrix, row by row.
fn upper_triangle(a: &[f64], n: usize) -> Vec<f64> {
    (0..n).flat_map(|i| a[i * n + i..(i + 1) * n].iter().copied()).collect()
}

/// The start of today (UTC), unix milliseconds: a model's creation time to
/// the day. To the millisecond, its distance from the snapshot time would
/// tell how long training took, and so roughly how much private data there was.
fn today_ms() -> i64 {
    const DAY_MS: i64 = 86_400_000;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    now - now.rem_euclid(DAY_MS)
}

fn gram_of(factors: &[f64], d: usize) -> Vec<f64> {
    let mut g = vec![0.0; d * d];
    for row in factors.chunks_exact(d) {
        linalg::add_outer_upper(&mut g, d, row, 1.0);
    }
    g
}

/// Scales `x` to norm at most `c`.
fn clip_norm(x: &mut [f64], c: f64) {
    if !c.is_finite() {
        return;
    }
    let norm = x.iter().map(|v| v * v).sum::<f64>().sqrt();
    if norm > c {
        let scale = c / norm;
        x.iter_mut().for_each(|v| *v *= scale);
    }
}

/// Adds N(0, std²) to each upper-triangle entry (diagonal included); the caller mirrors.
fn add_symmetric_noise(a: &mut [f64], n: usize, noise: &mut NoiseStream, std: f64) {
    for i in 0..n {
        noise.add_gaussian(&mut a[i * n + i..(i + 1) * n], std);
    }
}

/// Prior standard deviation of item biases in rating units: on 5-star scales
/// item means spread by about half a star around the global mean.
const ITEM_BIAS_PRIOR_STD: f64 = 0.5;

/// One item's step in one iteration: its releases (each from its own noise
/// stream) and its solve.
struct ItemStep<'a> {
    item: usize,
    iteration: u32,
    mechanics: &'a Mechanics,
    params: &'a TrainParams,
    /// Implicit: the released global Gramian, mirrored.
    global_gram: &'a [f64],
    /// Implicit with [`ItemGramSource::FromCounts`]: `C²·G̃ / tr(G̃)`.
    mean_outer: &'a [f64],
}

impl ItemStep<'_> {
    fn stream(&self, kind: ReleaseKind) -> Option<NoiseStream> {
        self.mechanics.stream(kind, self.iteration, self.item as u64)
    }

    fn record(&self, kind: ReleaseKind, values: impl FnOnce() -> Vec<f64>) {
        self.mechanics.record(kind, self.iteration, self.item as u64, values);
    }

    /// Explicit item step: returns (factors, bias).
    fn explicit(&self, raters: &[(u32, f32)], subjects: &SubjectFactors, mean: f64) -> (Vec<f64>, f64) {
        let (params, mechanics) = (self.params, self.mechanics);
        let d = params.rank;
        let n = d + 1;
        let mut eq = NormalEquations::new(n);
        let mut z = vec![0.0; n];
        z[d] = 1.0;
        for &(s, rating) in raters {
            z[..d].copy_from_slice(subjects.factors(s as usize));
            let target = (f64::from(rating) - mean - subjects.bias[s as usize])
                .clamp(-mechanics.residual_bound, mechanics.residual_bound);
            eq.add(&z, 1.0, target);
        }
        self.record(ReleaseKind::ItemGram, || upper_triangle(&eq.a, n));
        self.record(ReleaseKind::ItemRhs, || eq.b.clone());
        if let Some(mut noise) = self.stream(ReleaseKind::ItemGram) {
            add_symmetric_noise(&mut eq.a, n, &mut noise, mechanics.item_gram_std);
        }
        if let Some(mut noise) = self.stream(ReleaseKind::ItemRhs) {
            let before = mechanics.log.as_ref().map(|_| eq.b.clone());
            noise.add_gaussian(&mut eq.b, mechanics.item_rhs_std);
            if let (Some(log), Some(before)) = (&mechanics.log, before) {
                let drawn = eq.b.iter().zip(&before).map(|(a, b)| a - b).collect();
                log.record_noise(ReleaseKind::ItemRhs.stream(self.iteration, self.item as u64), drawn);
            }
        }
        // The count is the Gram matrix's last diagonal entry: noisy under DP, exact
        // otherwise. A count cannot be negative: clamping it is post-processing.
        let count = eq.a[d * n + d].max(0.0);
        eq.a[d * n + d] = count;
        // Under DP the ridge also grows with the noise: a symmetric Gaussian matrix
        // of entry scale σ has spectral norm about 2σ√n, so this keeps the system
        // positive definite and shrinks items whose statistics are mostly noise
        // towards zero (post-processing: no privacy cost).
        // The bias coordinate is shrunk as a Gaussian prior b ~ N(0, τ²) would
        // (τ = ITEM_BIAS_PRIOR_STD, public and data-independent): with noise of
        // std σ on the bias numerator the posterior mean divides by count + (σ/τ)²,
        // so an item's bias is trusted only when its raters outweigh the noise.
        let base = params.lambda * count.max(1.0);
        let factor_reg = base + 2.0 * mechanics.item_gram_std * (n as f64).sqrt();
        let bias_reg = base + (mechanics.item_rhs_std / ITEM_BIAS_PRIOR_STD).powi(2);
        if count < params.min_noisy_count.max(f64::MIN_POSITIVE) {
            // Too few (noisy) raters for factors to be signal: keep a shrunk bias only.
            let bias = eq.b[d] / (count.max(0.0) + bias_reg);
            return (vec![0.0; d], bias);
        }
        let mut reg = vec![factor_reg; n];
        reg[d] = bias_reg;
        let mut w = eq.solve(&reg);
        let bias = w.pop().expect("rank + 1 coordinates");
        (w, bias)
    }

    /// Implicit item step: returns (factors, 0).
    ///
    /// Under DP the noise is a symmetric Gaussian matrix E_j and a vector e_j on
    /// the item's statistics; they enter the conjugate-gradient solve exactly as
    /// if A_j + E_j had been formed, without forming A_j.
    fn implicit(
        &self,
        users: &[(u32, f32)],
        subject_factors: &[f32],
        global_gram: &[f32],
        previous: &[f64],
        noisy_count: f64,
        noisy_gram: &mut Vec<f32>,
    ) -> (Vec<f64>, f64) {
        let (params, mechanics) = (self.params, self.mechanics);
        let d = params.rank;
        if mechanics.item_gram == ItemGramSource::FromCounts {
            return self.implicit_from_counts(users, subject_factors, noisy_count);
        }
        if mechanics.log.is_some() {
            // Only for neighbour tests: the solve never forms A_j.
            let alpha = params.alpha;
            let (mut a, mut b) = (vec![0.0; d * d], vec![0.0; d]);
            for &(s, v) in users {
                let x: Vec<f64> =
                    subject_factors[s as usize * d..(s as usize + 1) * d].iter().map(|&x| f64::from(x)).collect();
                linalg::add_outer_upper(&mut a, d, &x, alpha * f64::from(v));
                b.iter_mut().zip(&x).for_each(|(b, x)| *b += (1.0 + alpha * f64::from(v)) * x);
            }
            self.record(ReleaseKind::ItemGram, || upper_triangle(&a, d));
            self.record(ReleaseKind::ItemRhs, || b);
        }
        // The noisy count was released before training; an item it rules out
        // needs no statistics, so none are drawn for it (each item has its own
        // noise stream, so the others' draws are unchanged).
        if noisy_count < params.min_noisy_count {
            return (vec![0.0; d], 0.0);
        }
        // Under DP the item's noisy Gram statistic is G + E_j: adding E_j to the
        // shared Gramian once costs d² additions, where applying it separately in
        // every CG step would cost d² multiply-adds each time.
        let (gram, rhs_noise) = match (self.stream(ReleaseKind::ItemGram), self.stream(ReleaseKind::ItemRhs)) {
            (Some(mut gram_noise), Some(mut rhs_noise)) => {
                // Noise on the upper triangle (diagonal included) of a symmetric
                // matrix: the same release as `add_symmetric_noise`, written
                // straight into G + E. The triangle's noise is drawn in one call,
                // then the upper part of each row is G + E; the solve reads the
                // upper triangle only, so nothing is mirrored.
                let triangle = d * (d + 1) / 2;
                noisy_gram.resize(d * d + triangle, 0.0);
                let (combined, noise_upper) = noisy_gram.split_at_mut(d * d);
                gram_noise.fill_gaussian_f32(noise_upper, mechanics.item_gram_std);
                let mut offset = 0;
                for i in 0..d {
                    let upper = i * d + i..(i + 1) * d;
                    let drawn = &noise_upper[offset..offset + (d - i)];
                    for ((cell, g), e) in combined[upper.clone()].iter_mut().zip(&global_gram[upper]).zip(drawn) {
                        *cell = g + e;
                    }
                    offset += d - i;
                }
                let mut rhs = vec![0.0f32; d];
                rhs_noise.fill_gaussian_f32(&mut rhs, mechanics.item_rhs_std);
                if let Some(log) = &mechanics.log {
                    let id = ReleaseKind::ItemRhs.stream(self.iteration, self.item as u64);
                    log.record_noise(id, rhs.iter().map(|&v| f64::from(v)).collect());
                }
                (cg::Gram::Upper(&noisy_gram[..d * d]), Some(rhs))
            }
            // The twin reads the same upper triangle, so that with the noise
            // forced to zero both do exactly the same arithmetic.
            _ => (cg::Gram::Upper(global_gram), None),
        };
        // The ridge grows with the noise as in the explicit item step.
        let ridge = params.lambda + 2.0 * (mechanics.item_gram_std + mechanics.global_gram_std) * (d as f64).sqrt();
        let factors = implicit_step_cg(
            d,
            params.alpha,
            gram,
            subject_factors,
            users,
            previous.iter().copied(),
            ridge,
            rhs_noise.as_deref(),
        );
        (factors, 0.0)
    }
}

impl ItemStep<'_> {
    /// Implicit item step with [`ItemGramSource::FromCounts`]: only the
    /// right-hand side `b_j = Σ (1 + α·v) x_u` is released (Δ = C·(1 + α·v_max)·√k).
    ///
    /// The noisy `b_j` is shrunk by the positive-part James–Stein factor
    /// `(1 − d·σ²/‖b_j‖²)₊`: an item whose statistic is mostly noise gets
    /// (nearly) zero factors and falls back to its popularity prior, an item
    /// with a strong signal keeps it. Post-processing of the release.
    fn implicit_from_counts(&self, users: &[(u32, f32)], subject_factors: &[f32], noisy_count: f64) -> (Vec<f64>, f64) {
        let (params, mechanics) = (self.params, self.mechanics);
        let d = params.rank;
        let alpha = params.alpha;
        let mut rhs = vec![0.0f64; d];
        for &(s, v) in users {
            let x = &subject_factors[s as usize * d..(s as usize + 1) * d];
            let weight = 1.0 + alpha * f64::from(v);
            rhs.iter_mut().zip(x).for_each(|(b, &x)| *b += weight * f64::from(x));
        }
        self.record(ReleaseKind::ItemRhs, || rhs.clone());
        let mut shrink = 1.0;
        if let Some(mut noise) = self.stream(ReleaseKind::ItemRhs) {
            let before = mechanics.log.as_ref().map(|_| rhs.clone());
            noise.add_gaussian(&mut rhs, mechanics.item_rhs_std);
            if let (Some(log), Some(before)) = (&mechanics.log, before) {
                let drawn = rhs.iter().zip(&before).map(|(a, b)| a - b).collect();
                log.record_noise(ReleaseKind::ItemRhs.stream(self.iteration, self.item as u64), drawn);
            }
            let energy: f64 = rhs.iter().map(|b| b * b).sum();
            let noise_energy = d as f64 * mechanics.item_rhs_std * mechanics.item_rhs_std;
            shrink = if energy > 0.0 { (1.0 - noise_energy / energy).max(0.0) } else { 0.0 };
        }
        if noisy_count < params.min_noisy_count || shrink == 0.0 {
            return (vec![0.0; d], 0.0);
        }
        rhs.iter_mut().for_each(|b| *b *= shrink);
        let count = noisy_count.max(0.0);
        let mut a: Vec<f64> =
            self.global_gram.iter().zip(self.mean_outer).map(|(g, m)| g + alpha * count * m).collect();
        let ridge = params.lambda + 2.0 * mechanics.global_gram_std * (d as f64).sqrt();
        let mut x = vec![0.0; d];
        linalg::solve_with_ridge(&a, d, &vec![1.0; d], ridge, &rhs, &mut x);
        a.clear();
        (x, 0.0)
    }
}

/// Scales a non-zero `x` to norm exactly `c` (finite `c` only).
///
/// The target is C·(1 − 10⁻⁶), not C: the statistics are summed from `f32`
/// copies, whose rounding could otherwise put a norm a few 10⁻⁸ above C,
/// over the sensitivity the noise was calibrated to.
fn scale_to_norm(x: &mut [f64], c: f64) {
    let norm = x.iter().map(|v| v * v).sum::<f64>().sqrt();
    if c.is_finite() && norm > 0.0 {
        let target = c * (1.0 - 1e-6);
        x.iter_mut().for_each(|v| *v *= target / norm);
    }
}

/// Conjugate-gradient steps per weighted-ALS solve: what `implicit` uses by default.
const CG_STEPS: usize = 3;

/// One weighted-ALS solve by warm-started conjugate gradient, in `f32`:
/// `(G + Σ α·vᵢ zᵢ zᵢᵀ + ridge·I) x = Σ (1 + α·vᵢ) zᵢ + e`, where the zᵢ are
/// rows of `factors`, G may already carry DP noise, and e is the optional rhs noise.
#[allow(clippy::too_many_arguments)]
fn implicit_step_cg(
    d: usize,
    alpha: f64,
    gram: cg::Gram<'_>,
    factors: &[f32],
    interactions: &[(u32, f32)],
    warm: impl Iterator<Item = f64>,
    ridge: f64,
    rhs_noise: Option<&[f32]>,
) -> Vec<f64> {
    let mut x: Vec<f32> = warm.map(|v| v as f32).collect();
    x.resize(d, 0.0);
    cg::System { n: d, gram, factors, rows: interactions, alpha: alpha as f32, ridge: ridge as f32 }
        .solve(rhs_noise, &mut x, CG_STEPS);
    x.into_iter().map(f64::from).collect()
}

fn to_f32(values: &[f64]) -> Vec<f32> {
    values.iter().map(|&v| v as f32).collect()
}

/// The subject side of a run, in memory only: never released or stored.
struct SubjectFactors {
    /// Rank.
    d: usize,
    /// Row-major, one row of `d` per subject.
    factors: Vec<f64>,
    /// Per-subject bias (explicit mode; zero in implicit mode).
    bias: Vec<f64>,
}

impl SubjectFactors {
    fn factors(&self, subject: usize) -> &[f64] {
        &self.factors[subject * self.d..(subject + 1) * self.d]
    }
}

/// Subjects sampled for the per-iteration training loss.
const LOSS_SAMPLE: usize = 10_000;

fn training_loss(
    feedback: Feedback,
    data: &Data,
    subjects: &SubjectFactors,
    item_factors: &[f64],
    item_bias: &[f64],
    mean: f64,
) -> f64 {
    let d = subjects.d;
    // A fixed, evenly spread sample of at most LOSS_SAMPLE subjects: the loss
    // drives a progress bar, and a full pass would cost a tenth of an iteration.
    let stride = data.subjects.len().div_ceil(LOSS_SAMPLE).max(1);
    let (sum, count) = data
        .subjects
        .par_iter()
        .enumerate()
        .step_by(stride)
        .map(|(s, row)| {
            let x = subjects.factors(s);
            let mut sum = 0.0;
            for &(i, value) in row {
                let i = i as usize;
                let dot: f64 = x.iter().zip(&item_factors[i * d..(i + 1) * d]).map(|(a, b)| a * b).sum();
                let err = match feedback {
                    Feedback::Explicit => f64::from(value) - (mean + subjects.bias[s] + item_bias[i] + dot),
                    Feedback::Implicit => 1.0 - dot,
                };
                sum += err * err;
            }
            (sum, row.len() as f64)
        })
        .reduce(|| (0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1));
    (sum / count.max(1.0)).sqrt()
}

#[cfg(test)]
mod tests {
    use hush_features::{FeatureMeta, Interaction};
    use proptest::prelude::*;

    use super::*;

    fn set_with(rows: &[Vec<(u32, f32)>], items: usize, feedback: Feedback) -> FeatureSet {
        let rows: Vec<Vec<Interaction>> = rows
            .iter()
            .map(|r| r.iter().map(|&(item, value)| Interaction { item, value, time: 0 }).collect())
            .collect();
        let meta = FeatureMeta::assembled(feedback);
        FeatureSet::from_subject_rows(meta, (0..items).map(|i| i.to_string()).collect(), &rows)
    }

    proptest! {
        /// Clipping bounds every subject vector's norm by C and keeps its direction.
        #[test]
        fn clipping_bounds_the_norm(x in prop::collection::vec(-50.0f64..50.0, 1..20), c in 0.01f64..10.0) {
            let mut clipped = x.clone();
            clip_norm(&mut clipped, c);
            let norm = clipped.iter().map(|v| v * v).sum::<f64>().sqrt();
            prop_assert!(norm <= c * (1.0 + 1e-12));
            let original = x.iter().map(|v| v * v).sum::<f64>().sqrt();
            if original <= c {
                prop_assert_eq!(&clipped, &x);
            }
        }

        /// The contribution bound is enforced again in training, whatever the
        /// feature set says, and values are clipped to their declared range.
        #[test]
        fn contribution_bound_and_value_clipping_hold(
            rows in prop::collection::vec(prop::collection::btree_map(0u32..60, -3.0f32..9.0, 0..40), 1..15),
            k in 1usize..12,
        ) {
            let rows: Vec<Vec<(u32, f32)>> = rows.into_iter().map(|r| r.into_iter().collect()).collect();
            let set = set_with(&rows, 60, Feedback::Explicit);
            let params = TrainParams::default();
            let mechanics = Mechanics { max_items: Some(k), ..Mechanics::non_private() };
            let data = prepare_data(&set, &params, &mechanics).unwrap();
            for (row, original) in data.subjects.iter().zip(&rows) {
                prop_assert_eq!(row.len(), original.len().min(k));
                prop_assert!(row.iter().all(|&(_, v)| (params.rating_min..=params.rating_max).contains(&f64::from(v))));
            }
            let per_item: usize = data.items.iter().map(Vec::len).sum();
            prop_assert_eq!(per_item, data.subjects.iter().map(Vec::len).sum::<usize>());
        }
    }
}
