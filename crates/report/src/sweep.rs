//! The results of a privacy-budget sweep: every cell (an epsilon and a seed,
//! the non-private twin per seed, the baselines), their summary over seeds,
//! the recommended epsilon, and the files notebooks read.

use std::collections::BTreeMap;

use hush_features::{ExtractionReport, Feedback};
use hush_mf::eval::{Baselines, Evaluation};
use hush_mf::TrainParams;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// What a sweep measures. Two sweeps with the same [`fingerprint`](Self::fingerprint)
/// produce interchangeable cells, so an interrupted sweep can be resumed (and
/// extended with more epsilons or seeds) without recomputing finished cells.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SweepSpec {
    /// A name for the report, usually the config's file stem.
    pub name: String,
    /// Ratings or implicit signals.
    pub feedback: Feedback,
    /// The target epsilons, ascending.
    pub epsilons: Vec<f64>,
    /// The seeds (initialization, contribution-bound sampling and noise).
    pub seeds: Vec<u64>,
    /// δ of every DP cell.
    pub delta: f64,
    /// The split every cell is trained and evaluated on, e.g. `holdout:0.2:42`.
    pub split: String,
    /// Length of recommendation lists.
    pub k: usize,
    /// Relative tolerance of the recommendation, e.g. 0.05 for "within 5%".
    pub tolerance: f64,
    /// Training settings of the non-private twin (the seed is replaced per cell).
    pub params: TrainParams,
    /// Training settings of the DP cells.
    pub dp_params: TrainParams,
    /// A digest of the data (the feature set's report digest and size).
    pub data_digest: String,
    /// Research data: no consent ledger, nothing trained here is servable.
    pub research_only: bool,
    /// Which budget the sweep's runs were recorded against, in words.
    pub budget_note: String,
    /// The hush version.
    pub hush_version: String,
}

impl SweepSpec {
    /// A digest of everything that changes what a cell computes. Epsilons,
    /// seeds, tolerance and notes are left out: cells are keyed by their own
    /// epsilon and seed, and the others only change how results are read.
    pub fn fingerprint(&self) -> String {
        let identity = serde_json::json!({
            "feedback": self.feedback,
            "delta": self.delta,
            "split": self.split,
            "k": self.k,
            "params": self.params,
            "dp_params": self.dp_params,
            "data": self.data_digest,
            // Cells seeded alike under another derivation hold other noise.
            "seed_derivation": hush_privacy::seed::DERIVATION,
        });
        hex(&Sha256::digest(identity.to_string().as_bytes())[..16])
    }

    /// The primary metric: RMSE for ratings, NDCG@k for implicit signals.
    pub fn primary_metric(&self) -> String {
        match self.feedback {
            Feedback::Explicit => "rmse".into(),
            Feedback::Implicit => format!("ndcg_at_{}", self.k),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether higher values of a metric are better.
pub fn higher_is_better(metric: &str) -> bool {
    !(metric.ends_with("rmse") || metric.ends_with("mae") || metric == "popularity_bias" || metric == "train_seconds")
}

/// What a cell trained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arm {
    /// A DP model at one epsilon.
    Dp,
    /// The non-private twin.
    NonPrivate,
    /// The non-personalized baselines (popularity, item mean, global mean).
    Baseline,
}

impl Arm {
    /// The name used in files.
    pub fn as_str(self) -> &'static str {
        match self {
            Arm::Dp => "dp",
            Arm::NonPrivate => "non_private",
            Arm::Baseline => "baseline",
        }
    }
}

/// One finished cell of the grid.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    /// What was trained.
    pub arm: Arm,
    /// Target epsilon (DP cells).
    pub epsilon: Option<f64>,
    /// Seed (model cells).
    pub seed: Option<u64>,
    /// The achieved epsilon, never above the target.
    pub achieved_epsilon: Option<f64>,
    /// ρ the cell spent.
    pub rho: Option<f64>,
    /// Every metric by its stable name (see [`metrics_of`]).
    pub metrics: BTreeMap<String, f64>,
    /// The sweep fingerprint the cell belongs to.
    pub fingerprint: String,
}

impl Cell {
    /// The cell's key (also its file name in the cell store).
    pub fn key(&self) -> String {
        cell_key(self.arm, self.epsilon, self.seed)
    }
}

/// The key of the cell of `arm` at `epsilon` and `seed`.
pub fn cell_key(arm: Arm, epsilon: Option<f64>, seed: Option<u64>) -> String {
    match (arm, epsilon, seed) {
        (Arm::Dp, Some(e), Some(s)) => format!("dp_eps{e}_seed{s}"),
        (Arm::NonPrivate, _, Some(s)) => format!("non_private_seed{s}"),
        _ => arm.as_str().to_string(),
    }
}

/// The metrics of an evaluation under stable names: `rmse`, `mae`,
/// `precision_at_K`, `recall_at_K`, `ndcg_at_K`, `map_at_K`, `coverage`,
/// `popularity_bias`, and the fairness audit as `activity_<group>_<metric>`
/// and `items_<group>_<metric>`.
pub fn metrics_of(e: &Evaluation) -> BTreeMap<String, f64> {
    let k = e.ranking.k;
    let mut m = BTreeMap::new();
    if let Some(r) = e.rating {
        m.insert("rmse".into(), r.rmse);
        m.insert("mae".into(), r.mae);
    }
    m.insert(format!("precision_at_{k}"), e.ranking.precision);
    m.insert(format!("recall_at_{k}"), e.ranking.recall);
    m.insert(format!("ndcg_at_{k}"), e.ranking.ndcg);
    m.insert(format!("map_at_{k}"), e.ranking.map);
    m.insert("coverage".into(), e.coverage);
    m.insert("popularity_bias".into(), e.popularity_bias);
    for (prefix, groups) in [("activity", &e.by_activity), ("items", &e.by_item_popularity)] {
        for (name, g) in groups {
            if let Some(rmse) = g.rmse {
                m.insert(format!("{prefix}_{name}_rmse"), rmse);
            }
            m.insert(format!("{prefix}_{name}_recall_at_{k}"), g.recall);
            m.insert(format!("{prefix}_{name}_ndcg_at_{k}"), g.ndcg);
        }
    }
    m
}

/// The baselines as metrics: ranking metrics of the popularity list, and the
/// item-mean RMSE as `rmse` (the rating baseline people compare with).
pub fn baseline_metrics(b: &Baselines) -> BTreeMap<String, f64> {
    let mut m = metrics_of(&b.popularity);
    if let Some(item_mean) = b.item_mean {
        m.insert("rmse".into(), item_mean.rmse);
        m.insert("mae".into(), item_mean.mae);
    }
    if let Some(global) = b.global_mean {
        m.insert("global_mean_rmse".into(), global.rmse);
    }
    m
}

/// Mean, spread and range of one metric of one arm at one epsilon.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SummaryRow {
    /// The arm.
    pub arm: Arm,
    /// Target epsilon (DP rows).
    pub epsilon: Option<f64>,
    /// The metric.
    pub metric: String,
    /// Cells summarized.
    pub n: usize,
    /// Mean over seeds.
    pub mean: f64,
    /// Sample standard deviation over seeds (0 for one cell).
    pub std: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
}

/// DP utility relative to the twin at one epsilon.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RelativeUtility {
    /// Target epsilon.
    pub epsilon: f64,
    /// Mean over seeds of DP metric / twin metric (paired by seed).
    pub mean: f64,
    /// Lower end of the 95% t-interval of that mean.
    pub low: f64,
    /// Upper end.
    pub high: f64,
    /// Seeds.
    pub n: usize,
    /// Whether the mean is within the tolerance.
    pub within: bool,
    /// Whether the whole interval is within the tolerance.
    pub confidently_within: bool,
}

/// The epsilon the sweep recommends, with its uncertainty.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Recommendation {
    /// The metric compared.
    pub metric: String,
    /// Whether higher is better for it.
    pub higher_is_better: bool,
    /// The relative tolerance.
    pub tolerance: f64,
    /// DP relative to the twin, per epsilon.
    pub relative: Vec<RelativeUtility>,
    /// The smallest epsilon whose mean is within tolerance.
    pub epsilon: Option<f64>,
    /// The smallest epsilon whose whole 95% interval is within tolerance.
    pub epsilon_confident: Option<f64>,
    /// The recommendation in plain words.
    pub sentence: String,
}

/// Where the sweep's data came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DataSummary {
    /// Subjects in the training part.
    pub train_subjects: u64,
    /// Interactions in the training part.
    pub train_interactions: u64,
    /// Subjects in the test part.
    pub test_subjects: u64,
    /// Interactions in the test part.
    pub test_interactions: u64,
    /// Items.
    pub items: u64,
}

/// Everything a sweep produced: `results.json` holds exactly this.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SweepResults {
    /// What was measured.
    pub spec: SweepSpec,
    /// The data.
    pub data: DataSummary,
    /// The extraction report behind the data, when known.
    pub extraction: Option<ExtractionReport>,
    /// Every cell, ordered by arm, epsilon and seed.
    pub cells: Vec<Cell>,
    /// Every metric summarized over seeds.
    pub summary: Vec<SummaryRow>,
    /// The recommended epsilon.
    pub recommendation: Recommendation,
    /// Wall time of the whole sweep, seconds (this run, resumed cells included as zero).
    pub wall_seconds: f64,
    /// When the results were written, RFC 3339.
    pub created_at: String,
}

/// Two-sided 97.5% quantiles of Student's t for 1 to 30 degrees of freedom.
const T_975: [f64; 30] = [
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131, 2.120,
    2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
];

/// Mean and sample standard deviation.
fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    if values.len() < 2 {
        return (mean, 0.0);
    }
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

/// A 95% t-interval of the mean (the mean itself for one value).
fn interval(values: &[f64]) -> (f64, f64, f64) {
    let (mean, std) = mean_std(values);
    let n = values.len();
    if n < 2 {
        return (mean, mean, mean);
    }
    let t = T_975.get(n - 2).copied().unwrap_or(1.96);
    let half = t * std / (n as f64).sqrt();
    (mean, mean - half, mean + half)
}

impl SweepResults {
    /// Assembles the results and computes the summary and recommendation.
    ///
    /// # Errors
    /// [`Error::Results`] if a cell belongs to another sweep (fingerprint).
    pub fn new(
        spec: SweepSpec,
        data: DataSummary,
        extraction: Option<ExtractionReport>,
        mut cells: Vec<Cell>,
        wall_seconds: f64,
        created_at: String,
    ) -> Result<Self> {
        let fingerprint = spec.fingerprint();
        if let Some(stray) = cells.iter().find(|c| c.fingerprint != fingerprint) {
            return Err(Error::Results(format!(
                "cell {} belongs to another sweep (fingerprint {}, expected {fingerprint})",
                stray.key(),
                stray.fingerprint
            )));
        }
        cells.sort_by(|a, b| {
            (a.arm, a.epsilon.unwrap_or(0.0), a.seed)
                .partial_cmp(&(b.arm, b.epsilon.unwrap_or(0.0), b.seed))
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        let summary = summarize(&cells);
        let recommendation = recommend(&spec, &cells);
        Ok(SweepResults { spec, data, extraction, cells, summary, recommendation, wall_seconds, created_at })
    }

    /// The summary row of `metric` for `arm` at `epsilon`.
    pub fn summary_of(&self, arm: Arm, epsilon: Option<f64>, metric: &str) -> Option<&SummaryRow> {
        self.summary.iter().find(|r| r.arm == arm && r.epsilon == epsilon && r.metric == metric)
    }

    /// Every result as a long table: one row per cell and metric (and the
    /// cell's achieved ε and ρ when it has them), in cell order. The rows of
    /// `results.csv` and `results.parquet`.
    pub fn rows(&self) -> impl Iterator<Item = ResultRow<'_>> {
        self.cells.iter().flat_map(|c| {
            let extra = [("achieved_epsilon", c.achieved_epsilon), ("rho", c.rho)];
            c.metrics.iter().map(|(k, v)| (k.as_str(), Some(*v))).chain(extra).filter_map(move |(metric, value)| {
                Some(ResultRow { arm: c.arm, epsilon: c.epsilon, seed: c.seed, metric, value: value? })
            })
        })
    }

    /// `results.csv`: one row per cell and metric, `arm,epsilon,seed,metric,value`.
    ///
    /// # Errors
    /// [`Error::Results`] if CSV writing fails.
    pub fn to_csv(&self) -> Result<String> {
        let mut out = csv::Writer::from_writer(Vec::new());
        let fail = |e: csv::Error| Error::Results(format!("writing results.csv: {e}"));
        out.write_record(["arm", "epsilon", "seed", "metric", "value"]).map_err(fail)?;
        for row in self.rows() {
            let epsilon = row.epsilon.map(|e| e.to_string()).unwrap_or_default();
            let seed = row.seed.map(|s| s.to_string()).unwrap_or_default();
            out.write_record([row.arm.as_str(), &epsilon, &seed, row.metric, &row.value.to_string()]).map_err(fail)?;
        }
        let bytes = out.into_inner().map_err(|e| Error::Results(format!("writing results.csv: {e}")))?;
        String::from_utf8(bytes).map_err(|e| Error::Results(e.to_string()))
    }
}

/// One row of the results table (see [`SweepResults::rows`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ResultRow<'a> {
    /// The arm.
    pub arm: Arm,
    /// The cell's ε (`None` for the twin and baselines).
    pub epsilon: Option<f64>,
    /// The cell's noise seed, if it has one.
    pub seed: Option<u64>,
    /// The metric's name.
    pub metric: &'a str,
    /// Its value.
    pub value: f64,
}

fn summarize(cells: &[Cell]) -> Vec<SummaryRow> {
    // Epsilons key the groups by their bits: exact, and ordered like the
    // values themselves for positive numbers.
    let mut groups: BTreeMap<(Arm, Option<u64>, String), Vec<f64>> = BTreeMap::new();
    for c in cells {
        for (metric, value) in &c.metrics {
            groups.entry((c.arm, c.epsilon.map(f64::to_bits), metric.clone())).or_default().push(*value);
        }
    }
    groups
        .into_iter()
        .map(|((arm, epsilon, metric), values)| {
            let (mean, std) = mean_std(&values);
            SummaryRow {
                arm,
                epsilon: epsilon.map(f64::from_bits),
                metric,
                n: values.len(),
                mean,
                std,
                min: values.iter().copied().fold(f64::INFINITY, f64::min),
                max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            }
        })
        .collect()
}

fn recommend(spec: &SweepSpec, cells: &[Cell]) -> Recommendation {
    let metric = spec.primary_metric();
    let higher = higher_is_better(&metric);
    let tol = spec.tolerance;
    let twin: BTreeMap<u64, f64> = cells
        .iter()
        .filter(|c| c.arm == Arm::NonPrivate)
        .filter_map(|c| Some((c.seed?, *c.metrics.get(&metric)?)))
        .collect();
    let twin_mean = if twin.is_empty() { f64::NAN } else { twin.values().sum::<f64>() / twin.len() as f64 };
    let mut relative = Vec::new();
    for &epsilon in &spec.epsilons {
        // Paired by seed, so seed-to-seed variation common to both cancels.
        let ratios: Vec<f64> = cells
            .iter()
            .filter(|c| c.arm == Arm::Dp && c.epsilon == Some(epsilon))
            .filter_map(|c| {
                let value = *c.metrics.get(&metric)?;
                let reference = c.seed.and_then(|s| twin.get(&s).copied()).unwrap_or(twin_mean);
                Some(value / reference)
            })
            .filter(|r| r.is_finite())
            .collect();
        if ratios.is_empty() {
            continue;
        }
        let (mean, low, high) = interval(&ratios);
        let ok = |r: f64| if higher { r >= 1.0 - tol } else { r <= 1.0 + tol };
        relative.push(RelativeUtility {
            epsilon,
            mean,
            low,
            high,
            n: ratios.len(),
            within: ok(mean),
            confidently_within: ok(if higher { low } else { high }),
        });
    }
    let epsilon = relative.iter().find(|r| r.within).map(|r| r.epsilon);
    let epsilon_confident = relative.iter().find(|r| r.confidently_within).map(|r| r.epsilon);
    let sentence = recommendation_sentence(&metric, higher, tol, &relative, epsilon, epsilon_confident);
    Recommendation { metric, higher_is_better: higher, tolerance: tol, relative, epsilon, epsilon_confident, sentence }
}

/// A metric's name as people read it.
pub fn metric_label(metric: &str) -> String {
    let base = metric
        .replace("ndcg_at_", "NDCG@")
        .replace("recall_at_", "Recall@")
        .replace("precision_at_", "Precision@")
        .replace("map_at_", "MAP@");
    match base.as_str() {
        "rmse" => "RMSE".into(),
        "mae" => "MAE".into(),
        "coverage" => "catalogue coverage".into(),
        "popularity_bias" => "popularity bias".into(),
        _ => base,
    }
}

fn recommendation_sentence(
    metric: &str,
    higher: bool,
    tol: f64,
    relative: &[RelativeUtility],
    epsilon: Option<f64>,
    confident: Option<f64>,
) -> String {
    let label = metric_label(metric);
    let pct = tol * 100.0;
    let bound = if higher { format!("at least {:.0}%", 100.0 - pct) } else { format!("at most {:.0}%", 100.0 + pct) };
    let Some(e) = epsilon else {
        let best = relative.last().map_or(String::new(), |r| {
            format!(
                " Even at epsilon {} the private model's {label} is {:.1}% of the twin's.",
                r.epsilon,
                r.mean * 100.0
            )
        });
        return format!(
            "No epsilon in this sweep keeps {label} within {pct:.0}% of the non-private twin ({bound} of its value).{best} \
             Consider larger epsilons, more data per item, or a looser tolerance."
        );
    };
    let r = relative.iter().find(|r| r.epsilon == e).expect("the recommended epsilon has a row");
    let mut s = format!(
        "Choose epsilon = {e}: it is the smallest epsilon whose {label} is within {pct:.0}% of the non-private \
         twin (on average over {} seeds it reaches {:.1}% of the twin's value; 95% interval {:.1}% to {:.1}%).",
        r.n,
        r.mean * 100.0,
        r.low * 100.0,
        r.high * 100.0
    );
    match confident {
        Some(c) if c == e => s.push_str(" The whole interval is within the tolerance, so the choice is robust to the noise."),
        Some(c) => s.push_str(&format!(
            " Its interval still reaches past the tolerance; epsilon = {c} is the smallest whose whole interval stays within it."
        )),
        None => s.push_str(" No epsilon in the sweep has its whole interval within the tolerance: run more seeds to be sure."),
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> SweepSpec {
        SweepSpec {
            name: "t".into(),
            feedback: Feedback::Implicit,
            epsilons: vec![1.0, 4.0],
            seeds: vec![0, 1, 2],
            delta: 1e-6,
            split: "holdout:0.2:42".into(),
            k: 10,
            tolerance: 0.05,
            params: TrainParams::default(),
            dp_params: TrainParams::default(),
            data_digest: "d".into(),
            research_only: true,
            budget_note: String::new(),
            hush_version: "0".into(),
        }
    }

    fn cell(arm: Arm, epsilon: Option<f64>, seed: u64, ndcg: f64) -> Cell {
        Cell {
            arm,
            epsilon,
            seed: Some(seed),
            achieved_epsilon: epsilon,
            rho: None,
            metrics: BTreeMap::from([("ndcg_at_10".to_string(), ndcg)]),
            fingerprint: spec().fingerprint(),
        }
    }

    #[test]
    fn the_recommendation_is_the_smallest_epsilon_within_tolerance() {
        let mut cells = Vec::new();
        for seed in 0..3 {
            cells.push(cell(Arm::NonPrivate, None, seed, 0.30));
            cells.push(cell(Arm::Dp, Some(1.0), seed, 0.20 + 0.01 * seed as f64));
            cells.push(cell(Arm::Dp, Some(4.0), seed, 0.29 + 0.002 * seed as f64));
        }
        let r = SweepResults::new(spec(), data(), None, cells, 1.0, "now".into()).unwrap();
        let rec = &r.recommendation;
        assert_eq!(rec.epsilon, Some(4.0));
        assert_eq!(rec.epsilon_confident, Some(4.0));
        assert!((rec.relative[1].mean - 0.2920 / 0.30).abs() < 1e-9);
        assert!(rec.sentence.starts_with("Choose epsilon = 4:"), "{}", rec.sentence);
        let mean = r.summary_of(Arm::Dp, Some(1.0), "ndcg_at_10").unwrap();
        assert!((mean.mean - 0.21).abs() < 1e-12 && (mean.min - 0.20).abs() < 1e-12 && mean.n == 3);
    }

    #[test]
    fn lower_is_better_for_rmse_and_no_epsilon_may_qualify() {
        let mut s = spec();
        s.feedback = Feedback::Explicit;
        let rmse = |arm, eps, seed, v: f64| Cell {
            metrics: BTreeMap::from([("rmse".to_string(), v)]),
            fingerprint: s.fingerprint(),
            ..cell(arm, eps, seed, 0.0)
        };
        let cells = vec![
            rmse(Arm::NonPrivate, None, 0, 0.85),
            rmse(Arm::Dp, Some(1.0), 0, 1.0),
            rmse(Arm::Dp, Some(4.0), 0, 0.95),
        ];
        let r = SweepResults::new(s, data(), None, cells, 1.0, "now".into()).unwrap();
        assert_eq!(r.recommendation.epsilon, None);
        assert!(r.recommendation.sentence.starts_with("No epsilon in this sweep keeps RMSE within 5%"));
    }

    #[test]
    fn a_cell_of_another_sweep_is_refused() {
        let mut c = cell(Arm::Dp, Some(1.0), 0, 0.2);
        c.fingerprint = "other".into();
        assert!(matches!(SweepResults::new(spec(), data(), None, vec![c], 0.0, "now".into()), Err(Error::Results(_))));
    }

    #[test]
    fn csv_rows_are_one_per_cell_and_metric() {
        let cells = vec![cell(Arm::Dp, Some(0.5), 3, 0.25)];
        let r = SweepResults::new(spec(), data(), None, cells, 0.0, "now".into()).unwrap();
        let csv = r.to_csv().unwrap();
        assert_eq!(csv, "arm,epsilon,seed,metric,value\ndp,0.5,3,ndcg_at_10,0.25\ndp,0.5,3,achieved_epsilon,0.5\n");
    }

    fn data() -> DataSummary {
        DataSummary { train_subjects: 1, train_interactions: 1, test_subjects: 1, test_interactions: 1, items: 1 }
    }
}
