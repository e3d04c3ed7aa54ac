//! `hush sweep`: every epsilon and seed, the non-private twin and the
//! baselines on one split, in parallel, resumable, ending in a report.

use crate::out;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use hush_consent::BudgetPurpose;
use hush_features::split::split;
use hush_features::{FeatureSet, SplitSpec};
use hush_mf::eval::{self, EvalOptions};
use hush_mf::TrainParams;
use hush_privacy::{Budget, NoiseSource};
use hush_report::store::{write_atomically, CellStore};
use hush_report::sweep::{self as results, Arm, Cell, DataSummary, SweepResults, SweepSpec};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use serde_json::json;

use crate::budget::{train_claimed, RunSpec};
use crate::cli::{Global, SweepArgs};
use crate::commands::print_json;
use crate::learn::{config_of, load_data_with_report, privacy_with};

/// One cell still to compute.
#[derive(Clone, Copy, Debug)]
struct Job {
    arm: Arm,
    epsilon: Option<f64>,
    seed: Option<u64>,
}

impl Job {
    fn key(&self) -> String {
        results::cell_key(self.arm, self.epsilon, self.seed)
    }
}

/// The noise seed of a DP cell: distinct per (seed, epsilon), so no two
/// cells share a noise stream.
fn noise_seed(seed: u64, epsilon: f64) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ epsilon.to_bits()
}

fn check_args(args: &SweepArgs) -> Result<Vec<f64>> {
    let mut epsilons = args.epsilons.clone();
    if let Some(bad) = epsilons.iter().find(|e| !(e.is_finite() && **e > 0.0)) {
        bail!("--epsilons: {bad} is not a finite positive number");
    }
    epsilons.sort_by(f64::total_cmp);
    epsilons.dedup();
    if epsilons.is_empty() {
        bail!("--epsilons: give at least one epsilon");
    }
    if args.seeds == 0 || args.seeds > 100 {
        bail!("--seeds: give 1 to 100 seeds, not {}", args.seeds);
    }
    if !(args.tolerance > 0.0 && args.tolerance < 1.0) {
        bail!("--tolerance: {} is not in (0, 1)", args.tolerance);
    }
    Budget::new(epsilons[0], args.delta).context("--delta")?;
    Ok(epsilons)
}

pub fn run(g: &Global, args: &SweepArgs) -> Result<()> {
    let started = Instant::now();
    let epsilons = check_args(args)?;
    let config = config_of(&args.data)?;
    let params = config.train_params(false)?;
    let rules = config.dp_rules();
    let (set, extraction) = load_data_with_report(g, &args.data, &config, args.extraction_report.as_deref())?;
    // The DP settings the rules choose before any release (the iterations
    // are chosen per run from its noisy counts and shown in each model's card).
    let dp_params = rules.settle(set.meta.feedback, Budget::new(epsilons[0], args.delta)?, &config.train_params(true)?);
    let split_spec: SplitSpec = args.split.parse()?;
    let parts = split(&set, &split_spec);
    let (train, test) = (parts.train, parts.test);
    let research_only = set.meta.research_only;
    let dataset = if research_only { String::new() } else { crate::budget::store_dataset(g)? };
    let name = args.data.config.as_deref().and_then(Path::file_stem).and_then(|s| s.to_str()).unwrap_or("sweep");
    let spec = SweepSpec {
        name: name.to_string(),
        feedback: set.meta.feedback,
        epsilons: epsilons.clone(),
        seeds: (0..u64::from(args.seeds)).map(|i| params.seed.wrapping_add(i)).collect(),
        delta: args.delta,
        split: args.split.clone(),
        k: args.k,
        tolerance: args.tolerance,
        params: params.clone(),
        dp_params: dp_params.clone(),
        data_digest: format!(
            "{}:{}x{}:{}",
            &set.meta.report_digest[..16.min(set.meta.report_digest.len())],
            set.n_subjects(),
            set.n_items(),
            set.by_subject.nnz()
        ),
        research_only,
        budget_note: if research_only {
            "Research data: not recorded in any budget ledger.".into()
        } else {
            format!(
                "Each DP cell is recorded against the evaluation budget of dataset \"{dataset}\" (see hush budget), \
                 never against its release budget."
            )
        },
        hush_version: env!("CARGO_PKG_VERSION").into(),
    };

    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    if args.fresh {
        let cells = args.out.join("cells");
        if cells.exists() {
            std::fs::remove_dir_all(&cells).with_context(|| format!("removing {}", cells.display()))?;
        }
    }
    let store = CellStore::open(&args.out, &spec)?;

    let mut jobs = vec![Job { arm: Arm::Baseline, epsilon: None, seed: None }];
    for &seed in &spec.seeds {
        jobs.push(Job { arm: Arm::NonPrivate, epsilon: None, seed: Some(seed) });
        for &e in &epsilons {
            jobs.push(Job { arm: Arm::Dp, epsilon: Some(e), seed: Some(seed) });
        }
    }
    let mut cells = Vec::new();
    let mut todo = Vec::new();
    for job in jobs {
        match store.get(&job.key())? {
            Some(cell) => cells.push(cell),
            None => todo.push(job),
        }
    }
    let reused = cells.len();
    let span = tracing::info_span!("sweep", cells = reused + todo.len(), reused, to_compute = todo.len());
    let _entered = span.enter();

    let bar = if g.quiet { ProgressBar::hidden() } else { ProgressBar::new(todo.len() as u64) };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} sweep {bar:30} {pos}/{len} cells, last {msg} [{elapsed_precise}, eta {eta}]",
        )
        .expect("a valid progress template"),
    );
    let options = EvalOptions { k: args.k, ..EvalOptions::default() };
    let fingerprint = spec.fingerprint();
    let context = CellContext {
        g,
        train: &train,
        test: &test,
        params: &params,
        dp_params: &dp_params,
        rules: &rules,
        delta: args.delta,
        options,
        fingerprint: &fingerprint,
        budget: (!research_only).then_some(&config.budget),
    };
    // Cells run in parallel on rayon's pool (one thread per core); each
    // model's own training is parallel too, and rayon shares the cores.
    let computed: Vec<Result<Cell>> = todo
        .par_iter()
        .map(|job| {
            let cell = compute(&context, job)?;
            store.put(&cell)?;
            bar.inc(1);
            bar.set_message(job.key());
            Ok(cell)
        })
        .collect();
    bar.finish_and_clear();
    let computed_count = computed.len();
    for cell in computed {
        cells.push(cell?);
    }

    let data = DataSummary {
        train_subjects: train.n_subjects() as u64,
        train_interactions: train.by_subject.nnz() as u64,
        test_subjects: (0..test.n_subjects()).filter(|&s| !test.by_subject.range(s).is_empty()).count() as u64,
        test_interactions: test.by_subject.nnz() as u64,
        items: train.n_items() as u64,
    };
    let created_at = hush_consent::Timestamp::now().to_rfc3339();
    let results = SweepResults::new(spec, data, extraction, cells, started.elapsed().as_secs_f64(), created_at)?;
    let html = hush_report::render::report_html(&results)?;
    let files = [
        ("results.json", serde_json::to_vec_pretty(&results)?),
        ("results.csv", results.to_csv()?.into_bytes()),
        ("report.html", html.into_bytes()),
    ];
    for (name, bytes) in &files {
        write_atomically(&args.out.join(name), bytes)?;
    }
    let written: Vec<String> = files.iter().map(|(n, _)| args.out.join(n).display().to_string()).collect();
    if g.json {
        return print_json(&json!({
            "computed": computed_count,
            "reused": reused,
            "wall_seconds": results.wall_seconds,
            "recommendation": results.recommendation,
            "files": written,
        }));
    }
    out!(
        "sweep of {} cells: {computed_count} computed, {reused} resumed from {} in {:.1} s",
        computed_count + reused,
        args.out.join("cells").display(),
        results.wall_seconds
    );
    out!("{}", results.recommendation.sentence);
    out!("wrote {}", written.join(", "));
    Ok(())
}

/// What every cell shares.
struct CellContext<'a> {
    g: &'a Global,
    train: &'a FeatureSet,
    test: &'a FeatureSet,
    params: &'a TrainParams,
    dp_params: &'a TrainParams,
    rules: &'a hush_mf::DpRules,
    delta: f64,
    options: EvalOptions,
    fingerprint: &'a str,
    /// The budget config, unless the data is research data.
    budget: Option<&'a crate::budget::BudgetConfig>,
}

fn compute(cx: &CellContext<'_>, job: &Job) -> Result<Cell> {
    let span = tracing::info_span!("sweep_cell", cell = %job.key());
    let _entered = span.enter();
    if job.arm == Arm::Baseline {
        let baselines = eval::baselines(cx.train, cx.test, cx.options);
        return Ok(Cell {
            arm: Arm::Baseline,
            epsilon: None,
            seed: None,
            achieved_epsilon: None,
            rho: None,
            metrics: results::baseline_metrics(&baselines),
            fingerprint: cx.fingerprint.to_string(),
        });
    }
    let seed = job.seed.expect("model cells have a seed");
    let base = if job.arm == Arm::Dp { cx.dp_params } else { cx.params };
    let params = TrainParams { seed, ..base.clone() };
    let budget = job.epsilon.map(|e| Budget::new(e, cx.delta)).transpose()?;
    // Exploratory runs spend the evaluation budget, once per cell: the run key
    // is the cell's, so a resumed sweep does not pay again.
    let run = RunSpec {
        purpose: BudgetPurpose::Evaluation,
        budget,
        set: cx.train,
        params: &params,
        run_key: format!("sweep-{}-{}", cx.fingerprint, job.key()),
    };
    let noise = NoiseSource::seeded(noise_seed(seed, job.epsilon.unwrap_or(0.0)));
    let privacy = privacy_with(budget, noise, cx.rules);
    let started = std::time::Instant::now();
    let model = train_claimed(cx.g, cx.budget, run, || Ok(hush_mf::train(cx.train, &params, privacy, &mut |_| {})?))?;
    let train_seconds = started.elapsed().as_secs_f64();
    let evaluation = eval::evaluate(&model, cx.train, cx.test, cx.options);
    let (achieved_epsilon, rho) = match &model.meta.privacy {
        hush_mf::PrivacyGuarantee::Dp { epsilon, rho, .. } => (Some(*epsilon), Some(*rho)),
        hush_mf::PrivacyGuarantee::NonPrivate => (None, None),
    };
    let mut metrics = results::metrics_of(&evaluation);
    metrics.insert("train_seconds".into(), train_seconds);
    Ok(Cell {
        arm: job.arm,
        epsilon: job.epsilon,
        seed: Some(seed),
        achieved_epsilon,
        rho,
        metrics,
        fingerprint: cx.fingerprint.to_string(),
    })
}
