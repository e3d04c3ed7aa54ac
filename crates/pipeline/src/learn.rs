//! Training (DP or the non-private twin) under a budget claim, evaluation
//! with its metrics, model files with their cards, and offline
//! recommendations from a model file.

use std::io::Write;
use std::path::Path;

use hush_consent::BudgetPurpose;
use hush_features::split::split;
use hush_features::{FeatureSet, Feedback, SplitSpec};
use hush_mf::eval::{self, Baselines, EvalOptions, Evaluation};
use hush_mf::{Model, ModelPurpose, Privacy, PrivacyGuarantee, TrainParams};
use hush_privacy::{Budget, NoiseSource};
use serde_json::{json, Value};

use crate::budget::{new_run_key, purpose_for, train_claimed, RunSpec};
use crate::config::ConfigFile;
use crate::store::Store;
use crate::tables::TableFormat;
use crate::{Error, Result};

/// DP training under `budget` with noise from `noise`, the settings the
/// config leaves open taken from `rules`; or the non-private twin.
pub fn privacy_with(budget: Option<Budget>, noise: NoiseSource, rules: &hush_mf::DpRules) -> Privacy {
    match budget {
        Some(budget) => Privacy::Dp { budget, noise: Box::new(noise), rules: Some(rules.clone()) },
        None => Privacy::NonPrivate,
    }
}

/// The noise of a run: seeded for research runs (never releasable), else
/// from the operating system.
pub fn noise_of(seed: Option<u64>) -> NoiseSource {
    match seed {
        Some(seed) => NoiseSource::seeded(seed),
        None => NoiseSource::from_os_entropy(),
    }
}

/// The noise of the DP-popularity baseline ([`eval::baselines_for`]): for a
/// seeded run, seeded under a domain of its own, so that it never repeats
/// the model's own count noise; else from the operating system.
pub fn baseline_noise_of(seed: Option<u64>) -> NoiseSource {
    match seed {
        Some(seed) => NoiseSource::seeded_for(seed, "dp popularity baseline"),
        None => NoiseSource::from_os_entropy(),
    }
}

/// The metrics object with the stable keys scripts rely on. Exact
/// statistics of private data: for the operator, never put in a model.
pub fn metrics_json(
    model: &Model,
    train: &FeatureSet,
    train_seconds: Option<f64>,
    evaluation: &Evaluation,
    baselines: &Baselines,
) -> Value {
    let (epsilon, delta, rho) = match &model.meta.privacy {
        PrivacyGuarantee::NonPrivate => (Value::Null, Value::Null, Value::Null),
        PrivacyGuarantee::Dp { epsilon, delta, rho, .. } => (json!(epsilon), json!(delta), json!(rho)),
    };
    let k = evaluation.ranking.k;
    json!({
        "model_id": model.meta.model_id,
        "feedback": model.meta.feedback,
        "private": model.meta.privacy.epsilon().is_some(),
        "k": k,
        "epsilon": epsilon,
        "delta": delta,
        "rho": rho,
        "rmse": evaluation.rating.map(|r| r.rmse),
        "mae": evaluation.rating.map(|r| r.mae),
        format!("precision_at_{k}"): evaluation.ranking.precision,
        format!("recall_at_{k}"): evaluation.ranking.recall,
        format!("ndcg_at_{k}"): evaluation.ranking.ndcg,
        format!("map_at_{k}"): evaluation.ranking.map,
        "coverage": evaluation.coverage,
        "popularity_bias": evaluation.popularity_bias,
        "train_seconds": train_seconds,
        "subjects": train.n_subjects(),
        "interactions": train.nnz(),
        "items": model.n_items(),
        "by_activity": evaluation.by_activity,
        "by_item_popularity": evaluation.by_item_popularity,
        "baselines": {
            "global_mean_rmse": baselines.global_mean.map(|r| r.rmse),
            "item_mean_rmse": baselines.item_mean.map(|r| r.rmse),
            format!("popularity_recall_at_{k}"): baselines.popularity.ranking.recall,
            format!("popularity_ndcg_at_{k}"): baselines.popularity.ranking.ndcg,
            format!("dp_popularity_recall_at_{k}"): baselines.dp_popularity.as_ref().map(|p| p.ranking.recall),
            format!("dp_popularity_ndcg_at_{k}"): baselines.dp_popularity.as_ref().map(|p| p.ranking.ndcg),
        },
        "research_only": model.meta.data.research_only,
    })
}

/// What `hush train` (and `hush.train`) runs: the data, the optional split,
/// the privacy choice and the asked purpose.
pub struct TrainRun<'a> {
    /// The whole feature set.
    pub set: FeatureSet,
    /// A split: the model trains on its train part and is evaluated on its test part.
    pub split: Option<SplitSpec>,
    /// The config (training settings, DP overrides, budget settings).
    pub config: &'a ConfigFile,
    /// The DP budget, or `None` for the non-private twin.
    pub budget: Option<Budget>,
    /// A noise seed (research only: the model can never be released).
    pub noise_seed: Option<u64>,
    /// The budget asked for; `None` chooses release for a releasable DP model.
    pub purpose: Option<BudgetPurpose>,
}

/// A trained model, the data it was trained on, and its evaluation on the
/// split's test part.
pub struct Trained {
    /// The model (sealed when it is a release of the store).
    pub model: Model,
    /// The data the model was trained on.
    pub train: FeatureSet,
    /// The evaluation and its metrics object, when the run had a split.
    pub evaluated: Option<(Evaluation, Value)>,
}

/// Trains a model as `hush train` does: splits if asked, chooses the budget
/// to spend, claims it on the store (research data spends none), trains with
/// `train` (given the data, settings and privacy), and evaluates on the test
/// part.
///
/// # Privacy
/// DP runs go through [`train_claimed`]: the claim is the calibrated ρ of the
/// very plan `train` follows, and the noise is `hush_mf`'s. Research data and
/// seeded noise yield models marked never releasable.
///
/// # Errors
/// [`Error::Invalid`] for a release asked of a split or of a model that can
/// never be released; budget and training errors.
pub fn train<E: From<Error>>(
    store: Option<&Store>,
    run: TrainRun<'_>,
    train: impl FnOnce(&FeatureSet, &TrainParams, Privacy) -> Result<Model, E>,
) -> Result<Trained, E> {
    let (train_part, test_part) = match &run.split {
        Some(spec) => {
            let parts = split(&run.set, spec);
            (parts.train, Some(parts.test))
        }
        None => (run.set, None),
    };
    let params = run.config.train_params(run.budget.is_some())?;
    let research_only = train_part.meta.research_only;
    // A model trained on a split is there to be evaluated: it is never released.
    let asked = match (run.purpose, test_part.is_some()) {
        (Some(BudgetPurpose::Release), true) => {
            return Err(Error::Invalid(
                "--purpose release: a model trained on a split is for evaluation; train on the whole feature set \
                 to release"
                    .into(),
            )
            .into())
        }
        (None | Some(BudgetPurpose::Evaluation), true) => Some(BudgetPurpose::Evaluation),
        (asked, false) => asked,
    };
    let purpose = purpose_for(asked, run.budget, run.noise_seed.is_some(), &train_part.meta)?;
    let spec =
        RunSpec { purpose, budget: run.budget, set: &train_part, params: &params, run_key: new_run_key("train") };
    // Research data has no consent ledger and its models are never served:
    // it has no storefront budget to spend from.
    let budget_config = (!research_only).then_some(&run.config.budget);
    let privacy = privacy_with(run.budget, noise_of(run.noise_seed), &run.config.dp_rules());
    let model = train_claimed(store, budget_config, spec, || -> Result<Model, E> {
        let mut model = train(&train_part, &params, privacy)?;
        if purpose == BudgetPurpose::Evaluation {
            model.set_purpose(ModelPurpose::Evaluation);
        }
        Ok(model)
    })?;
    let evaluated = match test_part.as_ref() {
        Some(test) => {
            let options = EvalOptions::default();
            let evaluation = eval::evaluate(&model, &train_part, test, options);
            let baselines = eval::baselines_for(&model, &train_part, test, options, baseline_noise_of(run.noise_seed))
                .map_err(|e| E::from(Error::from(e)))?;
            let metrics = metrics_json(&model, &train_part, None, &evaluation, &baselines);
            Some((evaluation, metrics))
        }
        None => None,
    };
    Ok(Trained { model, train: train_part, evaluated })
}

/// What `hush evaluate` (and `hush.evaluate`) runs.
pub struct EvaluateRun<'a> {
    /// The whole feature set.
    pub set: &'a FeatureSet,
    /// The holdout split.
    pub split: SplitSpec,
    /// A second split of the train part: tuning never sees the final test part.
    pub validation: Option<SplitSpec>,
    /// A model file to evaluate instead of training one.
    pub model: Option<&'a Path>,
    /// The config (training settings, DP overrides, budget settings).
    pub config: &'a ConfigFile,
    /// The DP budget of the model trained here, or `None` for the twin.
    pub budget: Option<Budget>,
    /// A noise seed (research only).
    pub noise_seed: Option<u64>,
    /// Metrics at k.
    pub k: usize,
    /// A directory to write both parts into (dense subject indices), and
    /// in which format.
    pub write_split: Option<(&'a Path, TableFormat)>,
}

/// An evaluation: the metrics object and the train and test parts.
pub struct Evaluated {
    /// The metrics object ([`metrics_json`]).
    pub metrics: Value,
    /// The train part.
    pub train: FeatureSet,
    /// The test part.
    pub test: FeatureSet,
}

/// Evaluates as `hush evaluate` does: splits, trains (or loads) the model
/// under an evaluation-budget claim, and computes the metrics and baselines.
///
/// # Privacy
/// Evaluating on the store's data is recorded on its evaluation budget (a
/// given model's exact metrics as a non-private run); research data belongs
/// to no store. The metrics are exact statistics of private data.
///
/// # Errors
/// [`Error::Invalid`] for a validation split with a given model, or a model
/// that does not fit the data; budget, model and training errors.
pub fn evaluate<E: From<Error>>(
    store: Option<&Store>,
    run: EvaluateRun<'_>,
    train: impl FnOnce(&FeatureSet, &TrainParams, Privacy) -> Result<Model, E>,
) -> Result<Evaluated, E> {
    let mut parts = split(run.set, &run.split);
    if let Some(spec) = &run.validation {
        if run.model.is_some() {
            return Err(Error::Invalid(
                "--validation trains its own model on the carved training part; it cannot evaluate --model".into(),
            )
            .into());
        }
        parts = split(&parts.train, spec);
    }
    if let Some((dir, format)) = run.write_split {
        write_split(dir, format, &parts.train, &parts.test)?;
    }
    let params = run.config.train_params(run.budget.is_some())?;
    let spec = RunSpec {
        purpose: BudgetPurpose::Evaluation,
        budget: if run.model.is_some() { None } else { run.budget },
        set: &parts.train,
        params: &params,
        run_key: new_run_key("evaluate"),
    };
    let budget_config = (!parts.train.meta.research_only).then_some(&run.config.budget);
    let started = std::time::Instant::now();
    let mut train_seconds = None;
    let model = train_claimed(store, budget_config, spec, || -> Result<Model, E> {
        match run.model {
            Some(path) => Ok(Model::load(path).map_err(|e| E::from(Error::from(e)))?),
            None => {
                let model = train(
                    &parts.train,
                    &params,
                    privacy_with(run.budget, noise_of(run.noise_seed), &run.config.dp_rules()),
                )?;
                train_seconds = Some(started.elapsed().as_secs_f64());
                Ok(model)
            }
        }
    })?;
    if model.n_items() != parts.train.n_items() {
        return Err(Error::Invalid(format!(
            "the model has {} items but the data has {}: evaluate a model on the feature set it was trained from",
            model.n_items(),
            parts.train.n_items()
        ))
        .into());
    }
    let options = EvalOptions { k: run.k, ..EvalOptions::default() };
    let evaluation = eval::evaluate(&model, &parts.train, &parts.test, options);
    let baselines = eval::baselines_for(&model, &parts.train, &parts.test, options, baseline_noise_of(run.noise_seed))
        .map_err(|e| E::from(Error::from(e)))?;
    let metrics = metrics_json(&model, &parts.train, train_seconds, &evaluation, &baselines);
    Ok(Evaluated { metrics, train: parts.train, test: parts.test })
}

/// Writes both parts of a split as `DIR/train.EXT` and `DIR/test.EXT`
/// (`subject_index,item_id,value`, dense subject indices, never identifiers).
///
/// # Errors
/// [`Error::Io`] naming the file that cannot be written.
pub fn write_split(dir: &Path, format: TableFormat, train: &FeatureSet, test: &FeatureSet) -> Result<()> {
    use hush_consent::files::{write_atomically, Access};
    for (name, part) in [("train", train), ("test", test)] {
        let path = dir.join(format!("{name}.{}", format.extension()));
        let context = format!("writing {}", path.display());
        // Pseudonymous interactions: owner-only, like the feature set they come from.
        if format == TableFormat::Parquet {
            let bytes = crate::tables::split_part_parquet(part, &context)?;
            write_atomically(&path, Access::OwnerOnly, |file| file.write_all(&bytes)).map_err(crate::io(context))?;
            continue;
        }
        write_atomically(&path, Access::OwnerOnly, |file| {
            let mut out = csv::Writer::from_writer(file);
            out.write_record(["subject_index", "item_id", "value"])?;
            for s in 0..part.n_subjects() {
                for i in part.subject_interactions(s) {
                    out.write_record([s.to_string(), part.items[i.item as usize].clone(), i.value.to_string()])?;
                }
            }
            out.flush()
        })
        .map_err(crate::io(context))?;
    }
    Ok(())
}

/// Saves the model and writes its card beside it (`X.card.md`, `X.card.html`
/// for `X.hmdl`), and an evaluation's private report (`X.evaluation.md`,
/// `X.evaluation.json`); returns the paths written besides the model.
///
/// # Errors
/// The model's error, or [`Error::Io`] naming a file that cannot be written.
pub fn save_with_card(model: &Model, out: &Path, evaluation: Option<&Evaluation>) -> Result<Vec<String>> {
    model.save(out)?;
    let mut files =
        vec![("card.md", hush_report::card::markdown(model)), ("card.html", hush_report::card::html(model))];
    if let Some(e) = evaluation {
        files.push(("evaluation.md", hush_report::card::evaluation_markdown(model, e)));
        let json = serde_json::to_string_pretty(e)
            .map_err(|e| Error::Format { context: "the evaluation report".into(), source: Box::new(e) })?;
        files.push(("evaluation.json", json));
    }
    let mut written = Vec::new();
    for (extension, text) in files {
        let path = out.with_extension(extension);
        hush_consent::files::write_owner_only(&path, text.as_bytes())
            .map_err(crate::io(format!("writing {}", path.display())))?;
        written.push(path.display().to_string());
    }
    Ok(written)
}

/// One line on a model's privacy guarantee.
pub fn guarantee_line(model: &Model) -> String {
    match &model.meta.privacy {
        PrivacyGuarantee::NonPrivate => "non-private twin: for evaluation only, no privacy guarantee".into(),
        PrivacyGuarantee::Dp { epsilon, delta, rho, noise_seeded, .. } => format!(
            "user-level ({epsilon:.4}, {delta:e})-DP, rho {rho:.5}{}",
            if *noise_seeded { "; SEEDED NOISE: research only, not for release" } else { "" }
        ),
    }
}

/// Offline recommendations for one history of item ids.
#[derive(Clone, Debug, PartialEq)]
pub struct Recommendations {
    /// Item positions in the model and their scores, best first.
    pub items: Vec<(usize, f64)>,
    /// History items the model does not know (ignored).
    pub unknown_items: Vec<String>,
    /// Whether the list is personalized (else the popular fallback).
    pub personalized: bool,
}

/// Recommends `k` items for a history of item ids (with optional values; the
/// default is 4 for explicit and 1 for implicit feedback) by folding the
/// history in; with no known item, the model's popular items.
///
/// # Errors
/// [`Error::Invalid`] if `values` is given but not one per item.
pub fn recommend(model: &Model, items: &[String], values: &[f32], k: usize) -> Result<Recommendations> {
    let index: std::collections::HashMap<&str, usize> =
        model.items.iter().enumerate().map(|(i, id)| (id.as_str(), i)).collect();
    let default_value = match model.meta.feedback {
        Feedback::Explicit => 4.0,
        Feedback::Implicit => 1.0,
    };
    if !values.is_empty() && values.len() != items.len() {
        return Err(Error::Invalid(format!("--values has {} entries but --items has {}", values.len(), items.len())));
    }
    let mut history = Vec::new();
    let mut unknown = Vec::new();
    for (n, item) in items.iter().enumerate() {
        match index.get(item.as_str()) {
            Some(&i) => history.push((i as u32, values.get(n).copied().unwrap_or(default_value))),
            None => unknown.push(item.clone()),
        }
    }
    let seen: std::collections::HashSet<usize> = history.iter().map(|&(i, _)| i as usize).collect();
    let list = if history.is_empty() {
        model.popular(k, |i| seen.contains(&i))
    } else {
        let vector = model.fold_in(&history);
        model.top_k(&vector, k, |i| seen.contains(&i))
    };
    Ok(Recommendations { items: list, unknown_items: unknown, personalized: !history.is_empty() })
}

/// `hush model dump`: the released arrays exactly as stored. The factors
/// are written row by row from the model's items × rank matrix; every value
/// is the stored `f32`.
pub fn dump_json(model: &Model) -> Value {
    let factors: Vec<Vec<f32>> = model.item_factor_matrix().rows().into_iter().map(|r| r.to_vec()).collect();
    json!({
        "meta": model.meta,
        "rank": model.rank,
        "items": model.items,
        "item_factors": factors,
        "item_bias": model.item_bias,
        "popularity": model.popularity,
        "global_mean": model.global_mean,
    })
}

/// `hush model inspect --json`: the model's metadata and its shape.
pub fn inspect_json(model: &Model) -> Value {
    json!({ "meta": model.meta, "items": model.n_items(), "rank": model.rank })
}
