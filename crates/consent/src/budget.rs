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

use rusqlite::{params, OptionalExtension, TransactionBehavior};
use serde::{Deserialize, Serialize};

use crate::sqlite::{collect_rows, conversion_error, SqliteStore};
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

    fn parse(text: &str) -> Option<Self> {
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

impl SqliteStore {
    /// Sets (or replaces) the lifetime cap of a dataset and purpose.
    ///
    /// # Errors
    /// [`Error::InvalidField`] for an empty dataset name or a cap that is not
    /// finite and positive; [`Error::Store`] if SQLite fails.
    pub fn set_budget_cap(&mut self, cap: &BudgetCap) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO budget_caps (dataset, purpose, epsilon, delta, rho, set_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (dataset, purpose) DO UPDATE SET
                     epsilon = excluded.epsilon, delta = excluded.delta, rho = excluded.rho, set_at = excluded.set_at",
                params![
                    cap.dataset,
                    cap.purpose.as_str(),
                    cap.epsilon,
                    cap.delta,
                    cap.rho,
                    cap.set_at.as_unix_millis()
                ],
            )
            .map_err(Error::db(&self.path))?;
        Ok(())
    }

    /// The cap of a dataset and purpose, if one is set.
    ///
    /// # Errors
    /// [`Error::Store`] if SQLite fails.
    pub fn budget_cap(&self, dataset: &str, purpose: BudgetPurpose) -> Result<Option<BudgetCap>> {
        read_cap(&self.conn, dataset, purpose).map_err(Error::db(&self.path))
    }

    /// Reserves a run's budget: checks the cap and records the run in one
    /// immediate transaction, so concurrent runs are serialized and cannot
    /// both pass a cap that only one of them fits under.
    ///
    /// Reserving a `run_key` that is already recorded returns that record
    /// unchanged and spends nothing more.
    ///
    /// # Errors
    /// [`Error::BudgetExceeded`] if the run does not fit under the cap;
    /// [`Error::InvalidField`] for a non-private release run or a bad
    /// guarantee; [`Error::Store`] if SQLite fails.
    pub fn reserve_budget(&mut self, request: &BudgetRequest, now: Timestamp) -> Result<BudgetRun> {
        let path = self.path.clone();
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(Error::db(&path))?;
        if let Some(existing) = read_run(&tx, &request.run_key).map_err(Error::db(&path))? {
            return Ok(existing);
        }
        if request.guarantee.is_some() {
            let (spent, _, _) = sum_runs(&tx, &request.dataset, request.purpose).map_err(Error::db(&path))?;
            let cap = read_cap(&tx, &request.dataset, request.purpose).map_err(Error::db(&path))?;
            check_fits(request, spent, cap.as_ref())?;
        }
        tx.execute(
            "INSERT INTO budget_runs (run_key, dataset, purpose, model_id, epsilon, delta, rho, snapshot_at, state, created_at)
             VALUES (?1, ?2, ?3, NULL, ?4, ?5, ?6, ?7, 'reserved', ?8)",
            params![
                request.run_key,
                request.dataset,
                request.purpose.as_str(),
                request.guarantee.map(|g| g.epsilon),
                request.guarantee.map(|g| g.delta),
                request.guarantee.map(|g| g.rho),
                request.snapshot_at.as_unix_millis(),
                now.as_unix_millis()
            ],
        )
        .map_err(Error::db(&path))?;
        let run = read_run(&tx, &request.run_key).map_err(Error::db(&path))?.expect("the run was just inserted");
        tx.commit().map_err(Error::db(&path))?;
        Ok(run)
    }

    /// Marks a reserved run as spent on `model_id`.
    ///
    /// # Errors
    /// [`Error::InvalidField`] if no run has that key; [`Error::Store`] if SQLite fails.
    pub fn commit_budget(&mut self, run_key: &str, model_id: &str) -> Result<()> {
        let changed = self
            .conn
            .execute(
                "UPDATE budget_runs SET state = 'committed', model_id = ?2 WHERE run_key = ?1",
                params![run_key, model_id],
            )
            .map_err(Error::db(&self.path))?;
        if changed == 0 {
            return Err(Error::InvalidField { field: "run_key", message: format!("no budget run `{run_key}`") });
        }
        Ok(())
    }

    /// Gives a reserved run's budget back (its training failed before any
    /// release). A committed run cannot be cancelled: its model exists.
    /// Returns whether a reservation was removed.
    ///
    /// # Errors
    /// [`Error::Store`] if SQLite fails.
    pub fn cancel_budget(&mut self, run_key: &str) -> Result<bool> {
        let changed = self
            .conn
            .execute("DELETE FROM budget_runs WHERE run_key = ?1 AND state = 'reserved'", [run_key])
            .map_err(Error::db(&self.path))?;
        Ok(changed > 0)
    }

    /// What every dataset and purpose with a cap or a run has spent, sorted.
    ///
    /// # Errors
    /// [`Error::Store`] if SQLite fails.
    pub fn budget_spending(&self) -> Result<Vec<BudgetSpend>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT dataset, purpose FROM budget_caps UNION SELECT dataset, purpose FROM budget_runs
                 ORDER BY 1, 2",
            )
            .map_err(Error::db(&self.path))?;
        let keys = stmt
            .query_map([], |row| Ok((row.get::<_, String>(0)?, parse_purpose(row, 1)?)))
            .map_err(Error::db(&self.path))?;
        let keys = collect_rows(keys, &self.path)?;
        let mut out = Vec::with_capacity(keys.len());
        let read = |dataset: &str, purpose| -> rusqlite::Result<BudgetSpend> {
            let (spent_rho, private_runs, non_private_runs) = sum_runs(&self.conn, dataset, purpose)?;
            let cap = read_cap(&self.conn, dataset, purpose)?;
            Ok(BudgetSpend { dataset: dataset.to_string(), purpose, cap, spent_rho, private_runs, non_private_runs })
        };
        for (dataset, purpose) in keys {
            out.push(read(&dataset, purpose).map_err(Error::db(&self.path))?);
        }
        Ok(out)
    }

    /// Every recorded run of a dataset (or of all datasets), oldest first.
    ///
    /// # Errors
    /// [`Error::Store`] if SQLite fails.
    pub fn budget_runs(&self, dataset: Option<&str>) -> Result<Vec<BudgetRun>> {
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT {RUN_COLUMNS} FROM budget_runs WHERE ?1 IS NULL OR dataset = ?1 ORDER BY id"))
            .map_err(Error::db(&self.path))?;
        let rows = stmt.query_map([dataset], run_from_row).map_err(Error::db(&self.path))?;
        collect_rows(rows, &self.path)
    }
}

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

const RUN_COLUMNS: &str = "run_key, dataset, purpose, model_id, epsilon, delta, rho, snapshot_at, state, created_at";

fn parse_purpose(row: &rusqlite::Row<'_>, column: usize) -> rusqlite::Result<BudgetPurpose> {
    let text: String = row.get(column)?;
    BudgetPurpose::parse(&text).ok_or_else(|| conversion_error(column, format!("unknown budget purpose `{text}`")))
}

fn run_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<BudgetRun> {
    let rho: Option<f64> = row.get(6)?;
    let guarantee = match rho {
        Some(rho) => Some(RunGuarantee { epsilon: row.get(4)?, delta: row.get(5)?, rho }),
        None => None,
    };
    let state: String = row.get(8)?;
    Ok(BudgetRun {
        run_key: row.get(0)?,
        dataset: row.get(1)?,
        purpose: parse_purpose(row, 2)?,
        model_id: row.get(3)?,
        guarantee,
        snapshot_at: Timestamp::from_unix_millis(row.get(7)?),
        state: match state.as_str() {
            "reserved" => RunState::Reserved,
            "committed" => RunState::Committed,
            other => return Err(conversion_error(8, format!("unknown run state `{other}`"))),
        },
        created_at: Timestamp::from_unix_millis(row.get(9)?),
    })
}

fn read_run(conn: &rusqlite::Connection, run_key: &str) -> rusqlite::Result<Option<BudgetRun>> {
    conn.query_row(&format!("SELECT {RUN_COLUMNS} FROM budget_runs WHERE run_key = ?1"), [run_key], run_from_row)
        .optional()
}

fn read_cap(conn: &rusqlite::Connection, dataset: &str, purpose: BudgetPurpose) -> rusqlite::Result<Option<BudgetCap>> {
    conn.query_row(
        "SELECT epsilon, delta, rho, set_at FROM budget_caps WHERE dataset = ?1 AND purpose = ?2",
        params![dataset, purpose.as_str()],
        |row| {
            Ok(BudgetCap {
                dataset: dataset.to_string(),
                purpose,
                epsilon: row.get(0)?,
                delta: row.get(1)?,
                rho: row.get(2)?,
                set_at: Timestamp::from_unix_millis(row.get(3)?),
            })
        },
    )
    .optional()
}

/// (Σρ of private runs, private runs, non-private runs).
fn sum_runs(conn: &rusqlite::Connection, dataset: &str, purpose: BudgetPurpose) -> rusqlite::Result<(f64, u64, u64)> {
    conn.query_row(
        "SELECT COALESCE(SUM(rho), 0.0), COUNT(rho), COUNT(*) - COUNT(rho) FROM budget_runs
         WHERE dataset = ?1 AND purpose = ?2",
        params![dataset, purpose.as_str()],
        |row| Ok((row.get(0)?, row.get::<_, i64>(1)? as u64, row.get::<_, i64>(2)? as u64)),
    )
}
