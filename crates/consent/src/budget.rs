//! The privacy budget ledger: lifetime caps per dataset and every training
//! run that spent from them.
//!
//! Budgets are kept in zCDP's ρ because ρ composes by addition: the runs on
//! one dataset together satisfy ρ-zCDP with ρ the sum of theirs, whatever δ
//! each run was reported at. A cap is stated by people as (ε, δ) and stored
//! with the ρ it converts to; the conversion belongs to `hush-privacy`, so
//! this module takes both from its caller.
//!
//! A run first *reserves* its ρ (a transaction that checks the cap and
//! inserts the run, so two concurrent runs cannot both overspend), then
//! *commits* it with the model id once the model exists, or *cancels* it if
//! training failed before anything was released.

use serde::{Deserialize, Serialize};

use crate::{Error, Result, Timestamp};

/// What a budget pays for. The two are capped and counted separately.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetPurpose {
    /// Models that may be released (served, shipped).
    Release,
    /// Exploratory runs (sweeps, evaluations): never released.
    Evaluation,
}

impl BudgetPurpose {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetPurpose::Release => "release",
            BudgetPurpose::Evaluation => "evaluation",
        }
    }

    /// The purpose of a stored name.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        match text {
            "release" => Some(BudgetPurpose::Release),
            "evaluation" => Some(BudgetPurpose::Evaluation),
            _ => None,
        }
    }
}

impl std::fmt::Display for BudgetPurpose {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A lifetime cap on what all runs of one purpose may spend on one dataset.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BudgetCap {
    /// The dataset the cap protects.
    pub dataset: String,
    /// What the capped budget pays for.
    pub purpose: BudgetPurpose,
    /// The cap as people state it: ε ...
    pub epsilon: f64,
    /// ... at this δ.
    pub delta: f64,
    /// The same cap in zCDP, which is what runs are summed in.
    pub rho: f64,
    /// When the cap was set.
    pub set_at: Timestamp,
}

/// A training run that asks for budget.
#[derive(Clone, Debug, PartialEq)]
pub struct BudgetRequest {
    /// A unique key of the run. Reserving the same key twice returns the
    /// first reservation (a resumed sweep does not pay twice).
    pub run_key: String,
    /// The dataset the run trains on.
    pub dataset: String,
    /// What the run's model is for.
    pub purpose: BudgetPurpose,
    /// The run's guarantee, or `None` for a non-private run (recorded, never
    /// released, and not summable).
    pub guarantee: Option<RunGuarantee>,
    /// Consent snapshot time of the run's data.
    pub snapshot_at: Timestamp,
}

/// The DP guarantee of one run.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct RunGuarantee {
    /// ε at `delta`.
    pub epsilon: f64,
    /// δ.
    pub delta: f64,
    /// zCDP ρ, the quantity that is summed.
    pub rho: f64,
}

/// Whether a run's budget is only reserved or spent on a finished model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Training is under way (or was interrupted): the budget is held.
    Reserved,
    /// The model exists: the budget is spent.
    Committed,
}

impl RunState {
    /// The state of a stored name.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        match text {
            "reserved" => Some(RunState::Reserved),
            "committed" => Some(RunState::Committed),
            _ => None,
        }
    }
}

/// One recorded run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BudgetRun {
    /// The run's unique key.
    pub run_key: String,
    /// The dataset.
    pub dataset: String,
    /// What the run's model is for.
    pub purpose: BudgetPurpose,
    /// The trained model, once committed.
    pub model_id: Option<String>,
    /// The guarantee; `None` for a non-private run.
    pub guarantee: Option<RunGuarantee>,
    /// Consent snapshot time of the data.
    pub snapshot_at: Timestamp,
    /// Reserved or committed.
    pub state: RunState,
    /// When the run was recorded.
    pub created_at: Timestamp,
}

/// What one purpose has spent on one dataset.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BudgetSpend {
    /// The dataset.
    pub dataset: String,
    /// The purpose.
    pub purpose: BudgetPurpose,
    /// The cap, if one is set.
    pub cap: Option<BudgetCap>,
    /// Sum of ρ over reserved and committed private runs.
    pub spent_rho: f64,
    /// Private runs recorded.
    pub private_runs: u64,
    /// Non-private runs recorded (never releasable).
    pub non_private_runs: u64,
}

impl BudgetSpend {
    /// ρ left under the cap, if one is set (never negative).
    pub fn remaining_rho(&self) -> Option<f64> {
        self.cap.as_ref().map(|c| (c.rho - self.spent_rho).max(0.0))
    }
}

/// Room for floating-point error when a run spends exactly what is left.
const CAP_SLACK: f64 = 1e-12;

/// Checks a cap before any backend stores it.
pub(crate) fn check_cap(cap: &BudgetCap) -> Result<()> {
    check_dataset(&cap.dataset)?;
    for (field, value) in [("epsilon", cap.epsilon), ("rho", cap.rho)] {
        if !(value.is_finite() && value > 0.0) {
            return Err(Error::InvalidField { field, message: format!("{value} is not a finite positive number") });
        }
    }
    if !(cap.delta > 0.0 && cap.delta < 1.0) {
        return Err(Error::InvalidField { field: "delta", message: format!("{} is not in (0, 1)", cap.delta) });
    }
    Ok(())
}

/// Refuses a request whose ρ, added to what is `spent`, would pass `cap`.
pub(crate) fn check_fits(request: &BudgetRequest, spent: f64, cap: Option<&BudgetCap>) -> Result<()> {
    match (request.guarantee, cap) {
        (Some(g), Some(cap)) if spent + g.rho > cap.rho * (1.0 + CAP_SLACK) => Err(Error::BudgetExceeded {
            dataset: request.dataset.clone(),
            purpose: request.purpose.as_str(),
            spent_rho: spent,
            requested_rho: g.rho,
            cap_rho: cap.rho,
            cap_epsilon: cap.epsilon,
            cap_delta: cap.delta,
        }),
        _ => Ok(()),
    }
}

/// Checks a budget request before any backend records it.
pub(crate) fn check_request(request: &BudgetRequest) -> Result<()> {
    check_dataset(&request.dataset)?;
    match request.guarantee {
        None if request.purpose == BudgetPurpose::Release => Err(Error::InvalidField {
            field: "purpose",
            message: "a non-private model has no privacy guarantee and can never be released".into(),
        }),
        Some(g) if !(g.rho.is_finite() && g.rho > 0.0 && g.epsilon.is_finite() && g.epsilon > 0.0) => {
            Err(Error::InvalidField {
                field: "guarantee",
                message: format!("rho {} and epsilon {} must be finite and positive", g.rho, g.epsilon),
            })
        }
        _ => Ok(()),
    }
}

fn check_dataset(dataset: &str) -> Result<()> {
    if dataset.trim().is_empty() || dataset.len() > 200 {
        return Err(Error::InvalidField { field: "dataset", message: "give a name of 1 to 200 characters".into() });
    }
    Ok(())
}
