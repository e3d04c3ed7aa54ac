//! Training, evaluation, offline recommendation and model inspection.

use crate::{out, out_partial};
use std::path::Path;

use anyhow::{bail, Context, Result};
use hush_consent::BudgetPurpose;
use hush_consent::Timestamp;
use hush_features::{ExtractionReport, FeatureSet, Feedback, SplitSpec};
use hush_mf::eval::{self, EvalOptions};
use hush_mf::{Model, ModelPurpose, Privacy, TrainParams};
use hush_privacy::{Budget, NoiseSource};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

use crate::budget::RunSpec;
use crate::cli::*;
use crate::commands::{print_json, read_config, run_extraction, ConfigFile};
use hush_pipeline::learn::{guarantee_line, metrics_json, save_with_card};

pub fn config_of(data: &DataArgs) -> Result<ConfigFile> {
    match &data.config {
        Some(path) => Ok(read_config(path)?),
        None => Ok(ConfigFile::default()),
    }
}

/// The training data: a feature set file, or input files extracted now.
fn load_data(g: &Global, data: &DataArgs, config: &ConfigFile) -> Result<FeatureSet> {
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
                if !set.meta.research_only && report.digest(&crate::commands::load_key(g)?) != set.meta.report_digest {
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
    if model.meta.privacy.epsilon().is_some() && share < hush_mf::MOSTLY_POPULARITY {
        tracing::warn!(
            "the noise left personalized factors only for items covering {:.0}% of interactions: for the rest this \
             model ranks by noisy popularity, and it may not beat DP popularity (see the model card)",
            share * 100.0
        );
    }
    Ok(model)
}

fn print_metrics(metrics: &Value) -> Result<()> {
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
        run_key: crate::budget::new_run_key("train"),
    };
    let privacy = privacy_with(budget, NoiseSource::from_os_entropy(), &config.dp_rules());
    let model = crate::budget::train_claimed(g, Some(budget_config), run, || {
        let mut model = train_model(g, train, params, privacy)?;
        model.set_purpose(ModelPurpose::Evaluation);
        Ok(model)
    })?;
    let options = EvalOptions::default();
    let evaluation = eval::evaluate(&model, train, test, options);
    let baselines = eval::baselines(train, test, options);
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
        purpose: crate::budget::purpose_for(Some(BudgetPurposeArg::Release), Some(budget), false, &set.meta)?,
        budget: Some(budget),
        set,
        params,
        run_key: crate::budget::new_run_key("release"),
    };
    let privacy = privacy_with(Some(budget), NoiseSource::from_os_entropy(), &config.dp_rules());
    let model = crate::budget::train_claimed(g, Some(budget_config), run, || train_model(g, set, params, privacy))?;
    let cards = save_with_card(&model, out, None)?;
    out!("wrote {} and its card {} ({})", out.display(), cards.join(", "), guarantee_line(&model));
    Ok(model)
}

pub fn train(g: &Global, args: &TrainArgs) -> Result<()> {
    // Checked before any budget is spent: a model file may be the one being served.
    if args.out.exists() && !args.force {
        bail!("{} exists (it may be the model being served): pass --force to replace it", args.out.display());
    }
    let config = config_of(&args.data)?;
    let set = load_data(g, &args.data, &config)?;
    let budget = budget_of(&args.privacy)?;
    let split = args.split.as_deref().map(str::parse::<SplitSpec>).transpose()?;
    // Research data has no consent ledger and its models are never served:
    // it spends no storefront budget, so no store is reached for it.
    let store = if set.meta.research_only { None } else { Some(crate::commands::store(g)?) };
    let trained = hush_pipeline::learn::train(
        store.as_ref(),
        hush_pipeline::learn::TrainRun {
            set,
            split,
            config: &config,
            budget,
            noise_seed: args.privacy.noise_seed,
            purpose: args.purpose.map(crate::budget::purpose_of),
        },
        |set, params, privacy| train_model(g, set, params, privacy),
    )?;
    let (model, evaluated) = (trained.model, trained.evaluated);
    let cards = save_with_card(&model, &args.out, evaluated.as_ref().map(|(e, _)| e))?;
    let metrics = evaluated.map(|(_, m)| m);
    if g.json {
        return print_json(&json!({
            "model": args.out,
            "card": cards,
            "model_id": model.meta.model_id,
            "privacy": model.meta.privacy,
            "metrics": metrics,
        }));
    }
    out!("wrote {} and its card {} ({})", args.out.display(), cards.join(", "), guarantee_line(&model));
    if let Some(m) = &metrics {
        print_metrics(m)?;
    }
    Ok(())
}

pub fn evaluate(g: &Global, args: &EvaluateArgs) -> Result<()> {
    let config = config_of(&args.data)?;
    let set = load_data(g, &args.data, &config)?;
    // A given model is evaluated as it is: no budget flag is needed for it.
    let budget = if args.model.is_some() { None } else { budget_of(&args.privacy)? };
    let store = if set.meta.research_only { None } else { Some(crate::commands::store(g)?) };
    let evaluated = hush_pipeline::learn::evaluate(
        store.as_ref(),
        hush_pipeline::learn::EvaluateRun {
            set: &set,
            split: args.split.parse::<SplitSpec>()?,
            validation: args.validation.as_deref().map(str::parse::<SplitSpec>).transpose()?,
            model: args.model.as_deref(),
            config: &config,
            budget,
            noise_seed: args.privacy.noise_seed,
            k: args.k,
            write_split: args.write_split.as_deref().map(|dir| (dir, args.split_format)),
        },
        |set, params, privacy| train_model(g, set, params, privacy),
    )?;
    let metrics = evaluated.metrics;
    if g.json {
        return print_json(&metrics);
    }
    print_metrics(&metrics)?;
    Ok(())
}

/// Titles and categories of the store's catalogue (`hush items import`),
/// when there is a store: offline answers show them as the API does. An
/// offline run with only a model file has none, and that is no error.
struct Titles(std::collections::HashMap<String, hush_consent::CatalogueItem>);

impl Titles {
    fn of_store(g: &Global) -> Titles {
        let existing = Global { create: false, ..g.clone() };
        let items = crate::commands::open_ledger(&existing).and_then(|l| Ok(l.catalogue_items()?));
        Titles(items.map(|items| items.into_iter().map(|i| (i.id.clone(), i)).collect()).unwrap_or_default())
    }

    /// The `title` and `category` of `item` (null when unknown), for JSON.
    fn json(&self, item: &str) -> (Value, Value) {
        let entry = self.0.get(item);
        (json!(entry.and_then(|e| e.title.as_deref())), json!(entry.and_then(|e| e.category.as_deref())))
    }

    /// `  Title (category)` after an id in text output, or nothing.
    fn text(&self, item: &str) -> String {
        match self.0.get(item) {
            Some(e) => match (&e.title, &e.category) {
                (Some(t), Some(c)) => format!("  {t} ({c})"),
                (Some(t), None) => format!("  {t}"),
                (None, Some(c)) => format!("  ({c})"),
                (None, None) => String::new(),
            },
            None => String::new(),
        }
    }
}

pub fn recommend(g: &Global, args: &RecommendArgs) -> Result<()> {
    let model = Model::load(&args.model)?;
    let found = hush_pipeline::learn::recommend(&model, &args.items, &args.values, args.k)?;
    let (recommendations, unknown) = (found.items, found.unknown_items);
    let titles = Titles::of_store(g);
    let list: Vec<Value> = recommendations
        .iter()
        .map(|(i, s)| {
            let (title, category) = titles.json(&model.items[*i]);
            json!({ "item": model.items[*i], "title": title, "category": category, "score": s })
        })
        .collect();
    if g.json {
        return print_json(
            &json!({ "recommendations": list, "unknown_items": unknown, "personalized": found.personalized }),
        );
    }
    if !unknown.is_empty() {
        eprintln!("note: {} items are not in the model and were ignored: {}", unknown.len(), unknown.join(", "));
    }
    for (rank, (i, score)) in recommendations.iter().enumerate() {
        out!("{:>3}. {}  {score:.4}{}", rank + 1, model.items[*i], titles.text(&model.items[*i]));
    }
    Ok(())
}

/// `hush similar`: the model's exact cosine neighbours of one item.
pub fn similar(g: &Global, args: &SimilarArgs) -> Result<()> {
    let model = Model::load(&args.model).with_context(|| format!("loading {}", args.model.display()))?;
    let position = |id: &str| model.items.iter().position(|i| i == id);
    let Some(item) = position(&args.item) else {
        bail!("--item {}: the model's catalogue has no such item", args.item);
    };
    let excluded: std::collections::HashSet<usize> = args.exclude.iter().filter_map(|id| position(id)).collect();
    let similar = model.similar(item, args.k, |i| excluded.contains(&i));
    let titles = Titles::of_store(g);
    if g.json {
        let list: Vec<Value> = similar
            .iter()
            .map(|&(i, s)| {
                let (title, category) = titles.json(&model.items[i]);
                json!({ "item": model.items[i], "title": title, "category": category, "similarity": s })
            })
            .collect();
        let basis = if model.has_factors(item) { "item_factors" } else { "none" };
        return print_json(&json!({ "item": args.item, "items": list, "basis": basis }));
    }
    if !model.has_factors(item) {
        eprintln!("note: the model learned no factors for {}: it knows nothing it is like", args.item);
    }
    for (rank, (i, similarity)) in similar.iter().enumerate() {
        out!("{:>3}. {}  {similarity:.4}{}", rank + 1, model.items[*i], titles.text(&model.items[*i]));
    }
    Ok(())
}

pub fn card(g: &Global, args: &CardArgs) -> Result<()> {
    let model = Model::load(&args.model).with_context(|| format!("loading {}", args.model.display()))?;
    if g.json {
        return print_json(&hush_report::card::json(&model));
    }
    let text = if args.html { hush_report::card::html(&model) } else { hush_report::card::markdown(&model) };
    out_partial!("{text}");
    Ok(())
}

/// `hush model dump`: the released arrays exactly as stored. The factors
/// are written row by row from the model's items × rank matrix; every value
/// is the stored `f32`, printed in its shortest round-tripping form.
pub fn dump(args: &DumpArgs) -> Result<()> {
    let model = Model::load(&args.model).with_context(|| format!("loading {}", args.model.display()))?;
    print_json(&hush_pipeline::learn::dump_json(&model))
}

pub fn inspect(g: &Global, args: &InspectArgs) -> Result<()> {
    let model = Model::load(&args.model).with_context(|| format!("loading {}", args.model.display()))?;
    if g.json {
        return print_json(&hush_pipeline::learn::inspect_json(&model));
    }
    print_card(&model, &args.model)?;
    Ok(())
}

fn print_card(model: &Model, path: &Path) -> Result<()> {
    let m = &model.meta;
    out!("{}: hush model {} (hush {})", path.display(), m.model_id, m.hush_version);
    out!("  privacy: {}", guarantee_line(model));
    out!(
        "  data: {} items ({}), consent snapshot {}",
        model.n_items(),
        m.data.catalogue.as_deref().unwrap_or("seen in private rows"),
        Timestamp::from_unix_millis(m.data.snapshot_at_ms),
    );
    out!(
        "  training: {} feedback, rank {}, {} iterations, lambda {}, purpose {}",
        crate::commands::wire_name(&m.feedback),
        model.rank,
        m.params.iterations,
        m.params.lambda,
        crate::commands::wire_name(&m.purpose)
    );
    let blockers = model.not_releasable_because();
    if blockers.is_empty() {
        out!("  release: may be served (with the store's release entry)");
    } else {
        out!("  release: NOT servable: {}", blockers.join("; "));
    }
    Ok(())
}
