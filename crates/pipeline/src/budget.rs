//! The claim every training run makes on the store's privacy budget before
//! any noise is drawn, and which budget (release or evaluation) a run spends.

use hush_consent::{BudgetCap, BudgetPurpose, BudgetRequest, Ledger, RunGuarantee, Timestamp};
use hush_features::FeatureSet;
use hush_mf::{Model, TrainParams};
use hush_privacy::{Budget, Delta, Rho};

use crate::config::{BudgetConfig, DEFAULT_LIFETIME_EPSILON};
use crate::store::Store;
use crate::{Error, Result};

/// ρ of a cap stated as (ε, δ): the largest ρ whose ε at δ is within it.
///
/// # Errors
/// The privacy crate's error for an ε or δ out of range.
pub fn cap_rho(epsilon: f64, delta: f64) -> Result<f64> {
    Ok(hush_privacy::rho_for_epsilon(Budget::new(epsilon, delta)?)?.value())
}

/// ε at δ that a spent ρ amounts to (0 for nothing spent).
///
/// # Errors
/// The privacy crate's error for a ρ or δ out of range.
pub fn epsilon_of(rho: f64, delta: f64) -> Result<f64> {
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
    ///
    /// # Errors
    /// The ledger's error; the reservation then stays pending, never lost.
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
///
/// # Privacy
/// The run's ρ is the calibration of the very plan training will follow
/// (`hush_mf::plan`), so what is reserved is what the noise delivers.
/// Releases and evaluations together stay within the lifetime cap; the
/// comparison allows a relative 1e-12 for rounding in the ρ sums, never more.
///
/// # Errors
/// [`Error::Budget`] for a run past the cap or with a δ above the cap's; the
/// ledger's error if it cannot be reached.
pub fn claim(store: &Store, config: &BudgetConfig, run: RunSpec<'_>) -> Result<Claim> {
    let dataset = store.dataset();
    let mut ledger = store.ledger()?;
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
            return Err(Error::Budget(format!(
                "delta {:e} is larger than this store's lifetime delta {:e}: a run may not buy a smaller epsilon \
                 with a larger delta",
                g.delta, cap.delta
            )));
        }
        let spent: f64 = ledger.budget_spending()?.iter().filter(|s| s.dataset == dataset).map(|s| s.spent_rho).sum();
        if spent + g.rho > cap.rho * (1.0 + 1e-12) {
            return Err(Error::Budget(format!(
                "this run (rho {:.6}) would exceed the lifetime budget of this store ({dataset}): releases and \
                 evaluations together have spent rho {spent:.6} of epsilon {} at delta {:e} (rho {:.6}); see \
                 `hush budget show`",
                g.rho, cap.epsilon, cap.delta, cap.rho
            )));
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
///
/// # Errors
/// [`Error::Invalid`] when `asked` is release and the model could never be released.
pub fn purpose_for(
    asked: Option<BudgetPurpose>,
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
    match (asked, blocker) {
        (Some(BudgetPurpose::Release), Some(blocker)) => Err(Error::Invalid(format!(
            "--purpose release: this model can never be released ({blocker}); use --purpose evaluation"
        ))),
        (Some(purpose), _) => Ok(purpose),
        (None, None) => Ok(BudgetPurpose::Release),
        (None, Some(_)) => Ok(BudgetPurpose::Evaluation),
    }
}

/// Trains under a budget claim: reserves the run's budget first (unless
/// `budget` is `None`: research data spends from no storefront's budget),
/// runs `train`, and records the model against the claim. A training that
/// fails gives the reservation back.
///
/// A release is sealed with the store's signing key once its budget entry is
/// committed: `hush serve` admits only models this store sealed and recorded.
///
/// # Errors
/// [`Error::Store`] if a budget is to be claimed without a store; the
/// claim's errors; whatever `train` returns.
pub fn train_claimed<E: From<Error>>(
    store: Option<&Store>,
    budget: Option<&BudgetConfig>,
    run: RunSpec<'_>,
    train: impl FnOnce() -> Result<Model, E>,
) -> Result<Model, E> {
    let release = run.purpose == BudgetPurpose::Release;
    let claimed = match (budget, store) {
        (Some(config), Some(store)) => Some((claim(store, config, run)?, store)),
        (Some(_), None) => {
            return Err(Error::Store(
                "this data comes from a store's consent ledger: its runs spend the store's privacy budget, so \
                 the store (and its key) must be given"
                    .into(),
            )
            .into())
        }
        (None, _) => None,
    };
    let mut model = train()?;
    if let Some((claim, store)) = claimed {
        claim.commit(&model.meta.model_id)?;
        if release {
            model.seal(&store.key().derive(hush_mf::SIGNING_PURPOSE));
        }
    }
    Ok(model)
}

/// A fresh run key: time and randomness, so concurrent runs never collide.
pub fn new_run_key(prefix: &str) -> String {
    format!("{prefix}-{}-{:016x}", Timestamp::now().as_unix_millis(), rand::random::<u64>())
}
