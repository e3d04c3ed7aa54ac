//! What the training commands share: configs, data, budgets, noise, training under a budget claim.

use crate::out;
use std::path::Path;

use anyhow::{bail, Context, Result};
use hush_consent::BudgetPurpose;
use hush_consent::Timestamp;
use hush_features::{ExtractionReport, FeatureSet, Feedback};
use hush_mf::eval::{self, EvalOptions};
use hush_mf::{Model, ModelPurpose, Privacy, TrainParams};
use hush_privacy::{Budget, NoiseSource};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

use super::budget::RunSpec;
use super::extract::run_extraction;
use super::{read_config, ConfigFile};
use crate::cli::*;
use hush_pipeline::learn::{guarantee_line, metrics_json, save_with_card};

pub fn config_of(data: &DataArgs) -> Result<ConfigFile> {
    match &data.config {
        Some(path) => Ok(read_config(path)?),
        None => Ok(ConfigFile::default()),
    }
}

/// The training data: a feature set file, or input files extracted now.
pub fn load_data(g: &Global, data: &DataArgs, config: &ConfigFile) -> Result<FeatureSet> {
    Ok(load_data_with_report(g, data, config, None)?.0)
}

/// The training data and the extraction report behind it: the one just made,
/// or for a feature set file the report written beside it (`X.report.json`
/// for `X.hfs`, or `report`), checked against the set's report digest.
pub fn load_data_with_report(
    g: &Global,
    data: &DataArgs,
    config: &ConfigFile,
    report: Option<&Path>,
) -> Result<(FeatureSet, Option<ExtractionReport>)> {
    if let Some(path) = &data.features {
        let set = FeatureSet::load(path)?;
        let report_path = report.map_or_else(|| path.with_extension("report.json"), Path::to_path_buf);
        let report = match std::fs::read_to_string(&report_path) {
            Ok(text) => {
                let report: ExtractionReport = serde_json::from_str(&text)
                    .with_context(|| format!("{}: not an extraction report", report_path.display()))?;
                // Research sets are digested under a throwaway key: nothing to check them against.
                if !set.meta.research_only && report.digest(&super::load_key(g)?) != set.meta.report_digest {
                    bail!(
                        "{} is not the extraction report of {} (its digest differs from the one the feature set records)",
                        report_path.display(),
                        path.display()
                    );
                }
                Some(report)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && report.is_none() => None,
            Err(e) => return Err(e).with_context(|| format!("reading {}", report_path.display())),
        };
        return Ok((set, report));
    }
    if data.inputs.is_empty() {
        bail!("give --features FILE or --input FILE (with --format)");
    }
    let mut params = config.extract.clone();
    params.research_data |= data.research_data;
    if let Some(f) = data.feedback {
        params.feedback = match f {
            FeedbackArg::Explicit => Feedback::Explicit,
            FeedbackArg::Implicit => Feedback::Implicit,
        };
    }
    if data.as_of.is_some() {
        params.snapshot_at = data.as_of.clone();
    }
    if data.catalogue.is_some() {
        params.catalogue.clone_from(&data.catalogue);
    }
    if data.sampling_seed.is_some() {
        params.sampling_seed = data.sampling_seed;
    }
    let now = Timestamp::now();
    let extract = params.validate(now)?;
    let (set, report) = run_extraction(g, &extract, &data.inputs, &data.format, false, now)?;
    Ok((set, Some(report)))
}

/// The budget the privacy flags ask for; `None` for the non-private twin.
pub fn budget_of(args: &PrivacyArgs) -> Result<Option<Budget>> {
    match (args.epsilon, args.non_private) {
        (Some(epsilon), false) => Ok(Some(Budget::new(epsilon, args.delta)?)),
        (None, true) => Ok(None),
        _ => bail!("choose a privacy budget with --epsilon E [--delta D], or --non-private for the non-private twin"),
    }
}

pub use hush_pipeline::learn::privacy_with;

/// The noise the flags ask for: seeded for research runs, else from the OS.
pub fn noise_of(args: &PrivacyArgs) -> NoiseSource {
    hush_pipeline::learn::noise_of(args.noise_seed)
}

pub fn train_model(g: &Global, set: &FeatureSet, params: &TrainParams, privacy: Privacy) -> Result<Model> {
    let bar = if g.quiet { ProgressBar::hidden() } else { ProgressBar::new(u64::from(params.iterations)) };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} training {bar:30} {pos}/{len} iterations, loss {msg} [{elapsed_precise}]",
        )
        .expect("a valid progress template"),
    );
    let model = hush_mf::train(set, params, privacy, &mut |report| {
        // DP rules may choose another number of iterations than planned.
        bar.set_length(u64::from(report.of));
        bar.set_position(u64::from(report.iteration));
        bar.set_message(format!("{:.4}", report.loss));
    })?;
    bar.finish_and_clear();
    let share = model.personalized_share();
    if model.meta.privacy.epsilon().is_some() && model.meta.params.iterations == 0 {
        tracing::warn!(
            "at this epsilon the noisy item counts support no personalization: this model is DP popularity (its \
             whole budget went to item counts), and it recommends the same popular items to everyone (see the model \
             card)"
        );
    } else if model.meta.privacy.epsilon().is_some() && share < hush_mf::MOSTLY_POPULARITY {
        tracing::warn!(
            "the noise left personalized factors only for items covering {:.0}% of interactions: for the rest this \
             model ranks by noisy popularity, and it may not beat DP popularity (see the model card)",
            share * 100.0
        );
    }
    Ok(model)
}

pub fn print_metrics(metrics: &Value) -> Result<()> {
    let get = |key: &str| metrics.get(key).and_then(Value::as_f64);
    let private = match get("epsilon") {
        Some(e) => format!("DP epsilon {e:.3}, delta {}", metrics["delta"]),
        None => "NON-PRIVATE twin".into(),
    };
    out!("model {} ({private})", metrics["model_id"].as_str().unwrap_or("?"));
    if let Some(rmse) = get("rmse") {
        out!("  RMSE {rmse:.4}  MAE {:.4}", get("mae").unwrap_or(f64::NAN));
    }
    let k = metrics["k"].as_u64().unwrap_or(10);
    let ranking = ["precision", "recall", "ndcg", "map"].map(|m| format!("{m}_at_{k}"));
    for key in ranking.iter().map(String::as_str).chain(["coverage", "popularity_bias"]) {
        if let Some(v) = get(key) {
            out!("  {key:<16} {v:.4}");
        }
    }
    let b = &metrics["baselines"];
    let num = |v: &Value| v.as_f64().map_or("-".to_string(), |x| format!("{x:.4}"));
    out!(
        "  baselines: popularity recall@{k} {} ndcg@{k} {}; global mean RMSE {}; item mean RMSE {}",
        num(&b[format!("popularity_recall_at_{k}")]),
        num(&b[format!("popularity_ndcg_at_{k}")]),
        num(&b["global_mean_rmse"]),
        num(&b["item_mean_rmse"])
    );
    if let Some(recall) = b[format!("dp_popularity_recall_at_{k}")].as_f64() {
        // The bar a DP model should clear: popularity with the same budget.
        out!(
            "  DP popularity at the same epsilon: recall@{k} {recall:.4} ndcg@{k} {}",
            num(&b[format!("dp_popularity_ndcg_at_{k}")])
        );
    }
    for (title, key, groups) in [
        ("by subject activity", "by_activity", &["light", "medium", "heavy"][..]),
        ("by item popularity", "by_item_popularity", &["head", "tail"][..]),
    ] {
        let parts: Vec<String> = groups
            .iter()
            .map(|g| {
                let m = &metrics[key][*g];
                let rmse = m["rmse"].as_f64().map(|r| format!(" RMSE {r:.4}")).unwrap_or_default();
                format!("{g}: recall@{k} {}{rmse}", num(&m["recall"]))
            })
            .collect();
        out!("  {title}: {}", parts.join("; "));
    }
    Ok(())
}

pub fn train_and_report(
    g: &Global,
    train: &FeatureSet,
    test: &FeatureSet,
    config: &ConfigFile,
    epsilon: Option<f64>,
    out: &Path,
) -> Result<(Model, Value)> {
    let budget = epsilon.map(|e| Budget::new(e, 1e-6)).transpose()?;
    let (params, budget_config) = (&config.train_params(budget.is_some())?, &config.budget);
    let run = RunSpec {
        purpose: BudgetPurpose::Evaluation,
        budget,
        set: train,
        params,
        run_key: super::budget::new_run_key("train"),
    };
    let privacy = privacy_with(budget, NoiseSource::from_os_entropy(), &config.dp_rules());
    let model = super::budget::train_claimed(g, Some(budget_config), run, || {
        let mut model = train_model(g, train, params, privacy)?;
        model.set_purpose(ModelPurpose::Evaluation);
        Ok(model)
    })?;
    let options = EvalOptions::default();
    let evaluation = eval::evaluate(&model, train, test, options);
    let baselines = eval::baselines_for(&model, train, test, options, NoiseSource::from_os_entropy())?;
    let metrics = metrics_json(&model, train, None, &evaluation, &baselines);
    let cards = save_with_card(&model, out, Some(&evaluation))?;
    out!("wrote {} and its card {} ({})", out.display(), cards.join(", "), guarantee_line(&model));
    print_metrics(&metrics)?;
    Ok((model, metrics))
}

/// Trains the model to serve: DP on the whole feature set, spending from
/// the release budget.
pub fn train_for_release(
    g: &Global,
    set: &FeatureSet,
    config: &ConfigFile,
    budget: Budget,
    out: &Path,
) -> Result<Model> {
    let (params, budget_config) = (&config.train_params(true)?, &config.budget);
    let run = RunSpec {
        purpose: super::budget::purpose_for(Some(BudgetPurposeArg::Release), Some(budget), false, &set.meta)?,
        budget: Some(budget),
        set,
        params,
        run_key: super::budget::new_run_key("release"),
    };
    let privacy = privacy_with(Some(budget), NoiseSource::from_os_entropy(), &config.dp_rules());
    let model = super::budget::train_claimed(g, Some(budget_config), run, || train_model(g, set, params, privacy))?;
    let cards = save_with_card(&model, out, None)?;
    out!("wrote {} and its card {} ({})", out.display(), cards.join(", "), guarantee_line(&model));
    Ok(model)
}
