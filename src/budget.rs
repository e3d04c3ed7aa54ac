//! The privacy budget ledger from the command line: `hush budget`, and the
//! claim every DP training run makes on it before any noise is drawn.

use crate::out;
use anyhow::{bail, Context, Result};
use hush_consent::{BudgetCap, BudgetPurpose, BudgetRequest, BudgetSpend, Ledger, RunGuarantee, Timestamp};
use hush_features::FeatureSet;
use hush_mf::{Model, TrainParams};
use hush_privacy::{Budget, Delta, Rho};
use serde::{Deserialize, Serialize};

use crate::cli::{BudgetCommand, BudgetPurposeArg, Global, SetCapArgs};
use crate::commands::{open_ledger, print_json};

/// The lifetime cap a store gets at its first run when no config sets one:
/// every release and evaluation on the store's data together, ε at δ = 1e-6.
pub const DEFAULT_LIFETIME_EPSILON: f64 = 10.0;

/// The `[budget]` table of a config file.
///
/// # Privacy
/// There is one budget per store, named after the store's signing identity
/// (see [`store_dataset`]): no free-form name, so a new name cannot open a
/// new budget. A lifetime cap always exists; evaluation runs on the store's
/// data spend from it too (tuning on private data is charged), and have a
/// sub-cap of their own.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    /// The lifetime cap set on the store at its first run, when it has none
    /// yet (default [`DEFAULT_LIFETIME_EPSILON`]). Afterwards the stored cap
    /// rules; change it with `hush budget set-cap`.
    pub lifetime_epsilon: Option<f64>,
    /// δ of the lifetime cap.
    #[serde(default = "default_delta")]
    pub lifetime_delta: f64,
    /// The sub-cap of evaluation runs (default: the lifetime cap).
    pub evaluation_epsilon: Option<f64>,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        BudgetConfig { lifetime_epsilon: None, lifetime_delta: default_delta(), evaluation_epsilon: None }
    }
}

/// The budget's name for this store: `store-` and the first 16 hex digits of
/// its model-signing public key. Derived from the store's key, not chosen.
pub fn store_dataset(g: &Global) -> Result<String> {
    let key = crate::commands::load_key(g)?;
    let identity = Model::store_identity(&key.derive(hush_mf::SIGNING_PURPOSE));
    Ok(format!("store-{}", &identity[..16]))
}

fn default_delta() -> f64 {
    1e-6
}

pub fn purpose_of(arg: BudgetPurposeArg) -> BudgetPurpose {
    match arg {
        BudgetPurposeArg::Release => BudgetPurpose::Release,
        BudgetPurposeArg::Evaluation => BudgetPurpose::Evaluation,
    }
}

/// ρ of a cap stated as (ε, δ): the largest ρ whose ε at δ is within it.
fn cap_rho(epsilon: f64, delta: f64) -> Result<f64> {
    Ok(hush_privacy::rho_for_epsilon(Budget::new(epsilon, delta)?)?.value())
}

/// ε at δ that a spent ρ amounts to (0 for nothing spent).
fn epsilon_of(rho: f64, delta: f64) -> Result<f64> {
    if rho <= 0.0 {
        return Ok(0.0);
    }
    Ok(hush_privacy::epsilon_for_rho(Rho::new(rho)?, Delta::new(delta)?)?)
}

/// A training run's hold on the ledger: commit it with the model, or drop it
/// (training failed, nothing was released) to give the budget back.
pub struct Claim {
    ledger: Ledger,
    run_key: String,
    committed: bool,
}

impl Claim {
    /// Records that the reserved budget was spent on `model_id`.
    pub fn commit(mut self, model_id: &str) -> Result<()> {
        self.ledger.commit_budget(&self.run_key, model_id)?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if !self.committed {
            if let Err(e) = self.ledger.cancel_budget(&self.run_key) {
                tracing::warn!(error = %e, "could not give back an unused budget reservation");
            }
        }
    }
}

/// What a training run asks the ledger for (the dataset is the store's).
pub struct RunSpec<'a> {
    /// Release or evaluation.
    pub purpose: BudgetPurpose,
    /// `None` for the non-private twin.
    pub budget: Option<Budget>,
    /// The run's training data.
    pub set: &'a FeatureSet,
    /// The run's settings (the privacy plan depends on them).
    pub params: &'a TrainParams,
    /// A unique key; resumed runs reuse theirs.
    pub run_key: String,
}

/// Reserves a run's budget before it trains: sets the config's initial cap
/// if the dataset has none, computes the run's ρ from its calibrated plan,
/// and refuses (with the numbers) a run that would pass the cap.
fn claim(g: &Global, config: &BudgetConfig, run: RunSpec<'_>) -> Result<Claim> {
    let dataset = store_dataset(g)?;
    let mut ledger = open_ledger(g)?;
    let now = Timestamp::now();
    let lifetime = config.lifetime_epsilon.unwrap_or(DEFAULT_LIFETIME_EPSILON);
    for (purpose, epsilon) in
        [(BudgetPurpose::Release, lifetime), (BudgetPurpose::Evaluation, config.evaluation_epsilon.unwrap_or(lifetime))]
    {
        if ledger.budget_cap(&dataset, purpose)?.is_none() {
            let cap = BudgetCap {
                dataset: dataset.clone(),
                purpose,
                epsilon,
                delta: config.lifetime_delta,
                rho: cap_rho(epsilon, config.lifetime_delta)?,
                set_at: now,
            };
            ledger.set_budget_cap(&cap)?;
            tracing::info!(dataset, epsilon, purpose = purpose.as_str(), "set a lifetime cap");
        }
    }
    let guarantee = match run.budget {
        Some(budget) => {
            let params = run.params.validate()?;
            let calibration = hush_mf::plan(run.set.meta.feedback, &params).calibrate(budget)?;
            Some(RunGuarantee { epsilon: calibration.epsilon, delta: calibration.delta, rho: calibration.rho })
        }
        None => None,
    };
    // Releases and evaluations together stay within the lifetime cap: a
    // setting chosen on private evaluations is paid for. A run's δ may not
    // exceed the cap's: a large δ would buy a small ε with little noise.
    if let (Some(g), Some(cap)) = (guarantee, ledger.budget_cap(&dataset, BudgetPurpose::Release)?) {
        if g.delta > cap.delta {
            bail!(
                "delta {:e} is larger than this store's lifetime delta {:e}: a run may not buy a smaller epsilon \
                 with a larger delta",
                g.delta,
                cap.delta
            );
        }
        let spent: f64 = ledger.budget_spending()?.iter().filter(|s| s.dataset == dataset).map(|s| s.spent_rho).sum();
        if spent + g.rho > cap.rho * (1.0 + 1e-12) {
            bail!(
                "this run (rho {:.6}) would exceed the lifetime budget of this store ({dataset}): releases and \
                 evaluations together have spent rho {spent:.6} of epsilon {} at delta {:e} (rho {:.6}); see \
                 `hush budget show`",
                g.rho,
                cap.epsilon,
                cap.delta,
                cap.rho
            );
        }
    }
    let request = BudgetRequest {
        run_key: run.run_key.clone(),
        dataset,
        purpose: run.purpose,
        guarantee,
        snapshot_at: Timestamp::from_unix_millis(run.set.meta.snapshot_at_ms),
    };
    ledger.reserve_budget(&request, now)?;
    Ok(Claim { ledger, run_key: run.run_key, committed: false })
}

/// The budget a training run spends: release for a servable DP model, else
/// evaluation. Asking to release a model that can never be released is an error.
pub fn purpose_for(
    asked: Option<BudgetPurposeArg>,
    budget: Option<Budget>,
    seeded_noise: bool,
    data: &hush_features::FeatureMeta,
) -> Result<BudgetPurpose> {
    let blocker = if budget.is_none() {
        Some("it is non-private")
    } else if seeded_noise {
        Some("its noise is seeded")
    } else if data.research_only {
        Some("it is trained on research data")
    } else if data.sampling_seeded {
        Some("its per-subject sampling is seeded (extracted with --sampling-seed)")
    } else if data.catalogue.is_none() {
        Some("its item list comes from private rows: extract with a --catalogue")
    } else {
        None
    };
    let releasable = blocker.is_none();
    match asked.map(purpose_of) {
        Some(BudgetPurpose::Release) if !releasable => bail!(
            "--purpose release: this model can never be released ({}); use --purpose evaluation",
            blocker.unwrap_or_default()
        ),
        Some(purpose) => Ok(purpose),
        None if releasable => Ok(BudgetPurpose::Release),
        None => Ok(BudgetPurpose::Evaluation),
    }
}

/// Trains under a budget claim: reserves the run's budget first (unless
/// `config` is `None`: research data spends from no storefront's budget),
/// runs `train`, and records the model against the claim. A training that
/// fails gives the reservation back.
///
/// A release is sealed with the store's signing key once its budget entry is
/// committed: `hush serve` admits only models this store sealed and recorded.
pub fn train_claimed(
    g: &Global,
    config: Option<&BudgetConfig>,
    run: RunSpec<'_>,
    train: impl FnOnce() -> Result<Model>,
) -> Result<Model> {
    let release = run.purpose == BudgetPurpose::Release;
    let claim = config.map(|config| claim(g, config, run)).transpose()?;
    let mut model = train()?;
    if let Some(claim) = claim {
        claim.commit(&model.meta.model_id)?;
        if release {
            let key = crate::commands::load_key(g)?;
            model.seal(&key.derive(hush_mf::SIGNING_PURPOSE));
        }
    }
    Ok(model)
}

/// A fresh run key: time and randomness, so concurrent runs never collide.
pub fn new_run_key(prefix: &str) -> String {
    format!("{prefix}-{}-{:016x}", Timestamp::now().as_unix_millis(), rand::random::<u64>())
}

pub fn run(g: &Global, command: &BudgetCommand) -> Result<()> {
    match command {
        BudgetCommand::Show => show(g),
        BudgetCommand::SetCap(args) => set_cap(g, args),
        BudgetCommand::Runs(args) => {
            let runs = open_ledger(g)?.budget_runs(args.dataset.as_deref())?;
            if g.json {
                return print_json(&runs);
            }
            for r in runs {
                let guarantee = match r.guarantee {
                    Some(x) => format!("epsilon {:.4} delta {:e} rho {:.6}", x.epsilon, x.delta, x.rho),
                    None => "NON-PRIVATE (never releasable)".into(),
                };
                out!(
                    "{} {} {:<10} {} {} model {} snapshot {} ({})",
                    r.created_at,
                    r.dataset,
                    r.purpose.as_str(),
                    crate::commands::wire_name(&r.state),
                    guarantee,
                    r.model_id.as_deref().unwrap_or("-"),
                    r.snapshot_at,
                    r.run_key
                );
            }
            Ok(())
        }
    }
}

fn set_cap(g: &Global, args: &SetCapArgs) -> Result<()> {
    let dataset = store_dataset(g)?;
    let mut ledger = open_ledger(g)?;
    let purpose = purpose_of(args.purpose);
    let cap = BudgetCap {
        dataset: dataset.clone(),
        purpose,
        epsilon: args.epsilon,
        delta: args.delta,
        rho: cap_rho(args.epsilon, args.delta).context("the cap")?,
        set_at: Timestamp::now(),
    };
    let spent = ledger
        .budget_spending()?
        .into_iter()
        .find(|s| s.dataset == dataset && s.purpose == purpose)
        .map_or(0.0, |s| s.spent_rho);
    let current = ledger.budget_cap(&dataset, purpose)?;
    if let Some(current) = current.as_ref().filter(|c| cap.rho > c.rho || cap.delta > c.delta) {
        if !args.force {
            bail!(
                "raising the {purpose} cap of `{dataset}` from epsilon {} (delta {:e}) to {} (delta {:e}) lets every \
                 model on this store reveal more; pass --force to do it",
                current.epsilon,
                current.delta,
                cap.epsilon,
                cap.delta
            );
        }
    }
    if spent > cap.rho && !args.force {
        bail!(
            "`{dataset}` has already spent rho {spent:.6} of its {purpose} budget, more than the new cap's rho {:.6}; \
             pass --force to set it anyway (no further run will fit)",
            cap.rho
        );
    }
    ledger.set_budget_cap(&cap)?;
    if g.json {
        return print_json(&cap);
    }
    out!(
        "lifetime {purpose} cap of `{}`: epsilon {} at delta {:e} (rho {:.6})",
        cap.dataset,
        cap.epsilon,
        cap.delta,
        cap.rho
    );
    Ok(())
}

/// One row of `hush budget`: what a dataset and purpose spent, in ρ and in ε.
#[derive(Serialize)]
struct SpendSummary<'a> {
    #[serde(flatten)]
    spend: &'a BudgetSpend,
    /// ε at `at_delta` of everything spent.
    spent_epsilon: f64,
    /// δ of the cap, or 1e-6 without one.
    at_delta: f64,
    remaining_rho: Option<f64>,
    /// ρ composes by addition, ε does not: what is left is stated as the ε
    /// of one run that would spend all the remaining ρ.
    remaining_epsilon_for_one_run: Option<f64>,
}

fn summary(s: &BudgetSpend) -> Result<SpendSummary<'_>> {
    let delta = s.cap.as_ref().map_or(1e-6, |c| c.delta);
    Ok(SpendSummary {
        spend: s,
        spent_epsilon: epsilon_of(s.spent_rho, delta)?,
        at_delta: delta,
        remaining_rho: s.remaining_rho(),
        remaining_epsilon_for_one_run: s.remaining_rho().map(|rho| epsilon_of(rho, delta)).transpose()?,
    })
}

/// One line on what this store's lifetime budget has spent (releases and
/// evaluations together) and has left.
pub fn release_line(g: &Global) -> Result<String> {
    let dataset = store_dataset(g)?;
    let ledger = open_ledger(g)?;
    let spent: f64 = ledger.budget_spending()?.iter().filter(|s| s.dataset == dataset).map(|s| s.spent_rho).sum();
    Ok(match ledger.budget_cap(&dataset, BudgetPurpose::Release)? {
        Some(cap) => format!(
            "privacy budget of this store ({dataset}): epsilon {:.3} of a lifetime {} spent by releases and \
             evaluations together (delta {:e}); one more run of up to epsilon {:.3} fits (`hush budget show`)",
            epsilon_of(spent, cap.delta)?,
            cap.epsilon,
            cap.delta,
            epsilon_of((cap.rho - spent).max(0.0), cap.delta)?
        ),
        None => format!("privacy budget of this store ({dataset}): nothing spent, no lifetime cap set yet"),
    })
}

fn show(g: &Global) -> Result<()> {
    let spending = open_ledger(g)?.budget_spending()?;
    let rows = spending.iter().map(summary).collect::<Result<Vec<_>>>()?;
    if g.json {
        return print_json(&rows);
    }
    if rows.is_empty() {
        out!("no training runs and no caps recorded; set one with `hush budget set-cap --epsilon E`");
    }
    for row in &rows {
        let s = row.spend;
        let spent =
            format!("spent rho {:.6} (epsilon {:.3} at delta {:e})", s.spent_rho, row.spent_epsilon, row.at_delta);
        let cap = match &s.cap {
            Some(c) => format!(
                "of cap epsilon {} (rho {:.6}); remaining rho {:.6}, enough for one run of epsilon {:.3}",
                c.epsilon,
                c.rho,
                row.remaining_rho.unwrap_or(0.0),
                row.remaining_epsilon_for_one_run.unwrap_or(0.0)
            ),
            None => "no cap set".into(),
        };
        let label = match s.purpose {
            BudgetPurpose::Release => "release",
            BudgetPurpose::Evaluation => "evaluation (not for release)",
        };
        out!(
            "{} / {label}: {spent} {cap}; {} private runs, {} non-private runs",
            s.dataset,
            s.private_runs,
            s.non_private_runs
        );
    }
    Ok(())
}
