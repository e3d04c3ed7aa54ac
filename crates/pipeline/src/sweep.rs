//! Sweeps: every epsilon and seed, the non-private twin and the baselines on
//! one split, in parallel, resumable from the cells already computed, ending
//! in the results files and the HTML report.

use std::path::{Path, PathBuf};
use std::time::Instant;

use hush_consent::BudgetPurpose;
use hush_features::split::split;
use hush_features::{ExtractionReport, FeatureSet, SplitSpec};
use hush_mf::eval::{self, EvalOptions};
use hush_mf::TrainParams;
use hush_privacy::{Budget, NoiseSource};
use hush_report::store::{write_atomically, CellStore};
use hush_report::sweep::{self as results, Arm, Cell, DataSummary, SweepResults, SweepSpec};
use rayon::prelude::*;

use crate::budget::{train_claimed, RunSpec};
use crate::config::{BudgetConfig, ConfigFile};
use crate::learn::privacy_with;
use crate::store::Store;
use crate::{Error, Result};

/// What a sweep runs.
#[derive(Clone, Debug)]
pub struct SweepRequest {
    /// The sweep's name (the config file's stem).
    pub name: String,
    /// The target epsilons of the DP cells.
    pub epsilons: Vec<f64>,
    /// How many seeds (1 to 100), counted up from the config's seed.
    pub seeds: u32,
    /// δ of every DP cell.
    pub delta: f64,
    /// The holdout split, as text (`holdout:0.2:42`).
    pub split: String,
    /// Metrics at k.
    pub k: usize,
    /// The relative loss the recommendation tolerates, in (0, 1).
    pub tolerance: f64,
    /// The output directory (cells, results, report).
    pub out: PathBuf,
    /// Start afresh: forget the cells of an earlier run.
    pub fresh: bool,
}

/// What a sweep tells its caller while it runs.
#[derive(Clone, Debug)]
pub enum SweepProgress {
    /// The cells to compute (the others were resumed).
    Planned {
        /// Cells to compute.
        to_compute: usize,
    },
    /// One cell is done.
    CellDone {
        /// The cell's key.
        cell: String,
    },
}

/// A finished sweep.
#[derive(Debug)]
pub struct SweepOutcome {
    /// The results (also written to `results.json`).
    pub results: SweepResults,
    /// Cells computed in this run.
    pub computed: usize,
    /// Cells resumed from an earlier run.
    pub reused: usize,
    /// The files written.
    pub files: Vec<String>,
}

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

/// The noise of a DP cell: its own domain per epsilon, so no two cells
/// share a noise stream (nor one with a plain run seeded alike).
fn cell_noise(seed: u64, epsilon: f64) -> NoiseSource {
    NoiseSource::seeded_for(seed, &format!("sweep cell, epsilon bits {:016x}", epsilon.to_bits()))
}

/// The request's epsilons, sorted and deduplicated, once every setting is checked.
///
/// # Errors
/// [`Error::Invalid`] naming the setting out of range.
pub fn check_request(request: &SweepRequest) -> Result<Vec<f64>> {
    let mut epsilons = request.epsilons.clone();
    if let Some(bad) = epsilons.iter().find(|e| !(e.is_finite() && **e > 0.0)) {
        return Err(Error::Invalid(format!("--epsilons: {bad} is not a finite positive number")));
    }
    epsilons.sort_by(f64::total_cmp);
    epsilons.dedup();
    if epsilons.is_empty() {
        return Err(Error::Invalid("--epsilons: give at least one epsilon".into()));
    }
    if request.seeds == 0 || request.seeds > 100 {
        return Err(Error::Invalid(format!("--seeds: give 1 to 100 seeds, not {}", request.seeds)));
    }
    if !(request.tolerance > 0.0 && request.tolerance < 1.0) {
        return Err(Error::Invalid(format!("--tolerance: {} is not in (0, 1)", request.tolerance)));
    }
    Budget::new(epsilons[0], request.delta)
        .map_err(|e| Error::Format { context: "--delta".into(), source: Box::new(e) })?;
    Ok(epsilons)
}

/// Runs a sweep on `set` (whose extraction report, if known, goes into the
/// results) and writes `results.json`, `results.csv`, `results.parquet` and
/// `report.html` into the request's directory; cells already there are reused.
///
/// # Privacy
/// Every DP cell trains through [`train_claimed`] on the store's evaluation
/// budget, once per cell (a resumed sweep does not pay again), with a noise
/// stream of its own; research data is recorded in no ledger.
///
/// # Errors
/// [`Error::Invalid`] for settings out of range; budget, training and report errors.
pub fn sweep(
    store: Option<&Store>,
    config: &ConfigFile,
    set: &FeatureSet,
    extraction: Option<ExtractionReport>,
    request: &SweepRequest,
    progress: &(dyn Fn(SweepProgress) + Sync),
) -> Result<SweepOutcome> {
    let started = Instant::now();
    let epsilons = check_request(request)?;
    let params = config.train_params(false)?;
    let rules = config.dp_rules();
    // The DP settings the rules choose before any release (the iterations
    // are chosen per run from its noisy counts and shown in each model's card).
    let dp_params =
        rules.settle(set.meta.feedback, Budget::new(epsilons[0], request.delta)?, &config.train_params(true)?);
    let split_spec: SplitSpec = request.split.parse()?;
    let parts = split(set, &split_spec);
    let (train, test) = (parts.train, parts.test);
    let research_only = set.meta.research_only;
    let dataset = match (research_only, store) {
        (true, _) => String::new(),
        (false, Some(store)) => store.dataset(),
        (false, None) => {
            return Err(Error::Store(
                "this data comes from a store's consent ledger: its sweep spends the store's evaluation budget, \
                 so the store (and its key) must be given"
                    .into(),
            ))
        }
    };
    let spec = sweep_spec(request, set, &params, &dp_params, epsilons.clone(), &dataset);

    let out = &request.out;
    std::fs::create_dir_all(out).map_err(crate::io(format!("creating {}", out.display())))?;
    if request.fresh {
        let cells = out.join("cells");
        if cells.exists() {
            std::fs::remove_dir_all(&cells).map_err(crate::io(format!("removing {}", cells.display())))?;
        }
    }
    let store_of_cells = CellStore::open(out, &spec)?;

    let (mut cells, todo) = plan(&store_of_cells, &spec.seeds, &epsilons)?;
    let reused = cells.len();
    let span = tracing::info_span!("sweep", cells = reused + todo.len(), reused, to_compute = todo.len());
    let _entered = span.enter();
    progress(SweepProgress::Planned { to_compute: todo.len() });

    let options = EvalOptions { k: request.k, ..EvalOptions::default() };
    let fingerprint = spec.fingerprint();
    let context = CellContext {
        store,
        train: &train,
        test: &test,
        params: &params,
        dp_params: &dp_params,
        rules: &rules,
        delta: request.delta,
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
            store_of_cells.put(&cell)?;
            progress(SweepProgress::CellDone { cell: job.key() });
            Ok(cell)
        })
        .collect();
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
    let files = write_results(out, &results)?;
    Ok(SweepOutcome { results, computed: computed_count, reused, files })
}

/// What a sweep is: its settings and a digest of its data, recorded with
/// every cell so a resumed sweep reuses only cells of the same sweep.
fn sweep_spec(
    request: &SweepRequest,
    set: &FeatureSet,
    params: &TrainParams,
    dp_params: &TrainParams,
    epsilons: Vec<f64>,
    dataset: &str,
) -> SweepSpec {
    let research_only = set.meta.research_only;
    SweepSpec {
        name: request.name.clone(),
        feedback: set.meta.feedback,
        epsilons,
        seeds: (0..u64::from(request.seeds)).map(|i| params.seed.wrapping_add(i)).collect(),
        delta: request.delta,
        split: request.split.clone(),
        k: request.k,
        tolerance: request.tolerance,
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
    }
}

/// The cells of a sweep: those already in `store` (reused as they are),
/// and the jobs left to compute, the popularity baseline first, then per
/// seed the non-private twin and one DP cell per ε.
fn plan(store: &CellStore, seeds: &[u64], epsilons: &[f64]) -> Result<(Vec<Cell>, Vec<Job>)> {
    let mut jobs = vec![Job { arm: Arm::Baseline, epsilon: None, seed: None }];
    for &seed in seeds {
        jobs.push(Job { arm: Arm::NonPrivate, epsilon: None, seed: Some(seed) });
        for &e in epsilons {
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
    Ok((cells, todo))
}

/// Writes the results as JSON, CSV, Parquet and the HTML report into
/// `out`, each file atomically; returns their paths.
fn write_results(out: &Path, results: &SweepResults) -> Result<Vec<String>> {
    let html = hush_report::render::report_html(results)?;
    let json = serde_json::to_vec_pretty(results)
        .map_err(|e| Error::Format { context: "the sweep results".into(), source: Box::new(e) })?;
    let files = [
        ("results.json", json),
        ("results.csv", results.to_csv()?.into_bytes()),
        ("results.parquet", crate::tables::results_parquet(results)?),
        ("report.html", html.into_bytes()),
    ];
    for (name, bytes) in &files {
        write_atomically(&out.join(name), bytes)?;
    }
    let files: Vec<String> = files.iter().map(|(n, _)| out.join(n).display().to_string()).collect();
    Ok(files)
}

/// What every cell shares.
struct CellContext<'a> {
    store: Option<&'a Store>,
    train: &'a FeatureSet,
    test: &'a FeatureSet,
    params: &'a TrainParams,
    dp_params: &'a TrainParams,
    rules: &'a hush_mf::DpRules,
    delta: f64,
    options: EvalOptions,
    fingerprint: &'a str,
    /// The budget config, unless the data is research data.
    budget: Option<&'a BudgetConfig>,
}

fn compute(cx: &CellContext<'_>, job: &Job) -> Result<Cell> {
    let span = tracing::info_span!("sweep_cell", cell = %job.key());
    let _entered = span.enter();
    let Some(seed) = job.seed else {
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
    };
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
    let noise = cell_noise(seed, job.epsilon.unwrap_or(0.0));
    let privacy = privacy_with(budget, noise, cx.rules);
    let started = std::time::Instant::now();
    let model = train_claimed(cx.store, cx.budget, run, || -> Result<_> {
        Ok(hush_mf::train(cx.train, &params, privacy, &mut |_| {})?)
    })?;
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

/// The name of a sweep whose config is `config`: the file's stem, or `sweep`.
pub fn sweep_name(config: Option<&Path>) -> String {
    config.and_then(Path::file_stem).and_then(|s| s.to_str()).unwrap_or("sweep").to_string()
}
