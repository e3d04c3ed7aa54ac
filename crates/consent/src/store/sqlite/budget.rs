//! The budget ledger's SQL on SQLite, shared by the store's reads and a
//! write transaction's (the reservation decision itself is in the ledger).

use rusqlite::{params, Connection, OptionalExtension};

use super::conversion_error;
use crate::budget::{BudgetCap, BudgetPurpose, BudgetRequest, BudgetRun};
use crate::store::decode::{self, RUN_COLUMNS};
use crate::store::RunTotals;
use crate::Timestamp;

pub(super) fn set_cap(conn: &Connection, cap: &BudgetCap) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO budget_caps (dataset, purpose, epsilon, delta, rho, set_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (dataset, purpose) DO UPDATE SET
             epsilon = excluded.epsilon, delta = excluded.delta, rho = excluded.rho, set_at = excluded.set_at",
        params![cap.dataset, cap.purpose.as_str(), cap.epsilon, cap.delta, cap.rho, cap.set_at.as_unix_millis()],
    )?;
    Ok(())
}

pub(super) fn read_cap(
    conn: &Connection,
    dataset: &str,
    purpose: BudgetPurpose,
) -> rusqlite::Result<Option<BudgetCap>> {
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

pub(super) fn keys(conn: &Connection) -> rusqlite::Result<Vec<(String, BudgetPurpose)>> {
    let mut stmt = conn.prepare(
        "SELECT dataset, purpose FROM budget_caps UNION SELECT dataset, purpose FROM budget_runs
         ORDER BY 1, 2",
    )?;
    let rows = stmt.query_map([], |row| Ok((row.get::<_, String>(0)?, parse_purpose(row, 1)?)))?;
    rows.collect()
}

pub(super) fn totals(conn: &Connection, dataset: &str, purpose: BudgetPurpose) -> rusqlite::Result<RunTotals> {
    conn.query_row(
        "SELECT COALESCE(SUM(rho), 0.0), COUNT(rho), COUNT(*) - COUNT(rho) FROM budget_runs
         WHERE dataset = ?1 AND purpose = ?2",
        params![dataset, purpose.as_str()],
        |row| {
            Ok(RunTotals {
                spent_rho: row.get(0)?,
                private_runs: row.get::<_, i64>(1)? as u64,
                non_private_runs: row.get::<_, i64>(2)? as u64,
            })
        },
    )
}

pub(super) fn runs(conn: &Connection, dataset: Option<&str>) -> rusqlite::Result<Vec<BudgetRun>> {
    let mut stmt =
        conn.prepare(&format!("SELECT {RUN_COLUMNS} FROM budget_runs WHERE ?1 IS NULL OR dataset = ?1 ORDER BY id"))?;
    let rows = stmt.query_map([dataset], run_from_row)?;
    rows.collect()
}

pub(super) fn read_run(conn: &Connection, run_key: &str) -> rusqlite::Result<Option<BudgetRun>> {
    conn.query_row(&format!("SELECT {RUN_COLUMNS} FROM budget_runs WHERE run_key = ?1"), [run_key], run_from_row)
        .optional()
}

pub(super) fn insert_run(conn: &Connection, request: &BudgetRequest, now: Timestamp) -> rusqlite::Result<()> {
    conn.execute(
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
    )?;
    Ok(())
}

fn parse_purpose(row: &rusqlite::Row<'_>, column: usize) -> rusqlite::Result<BudgetPurpose> {
    let text = row.get_ref(column)?.as_str().map_err(|e| conversion_error(column, e.to_string()))?;
    decode::budget_purpose(text).map_err(|m| conversion_error(column, m))
}

fn run_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<BudgetRun> {
    let text = |column: usize| -> rusqlite::Result<&str> {
        row.get_ref(column)?.as_str().map_err(|e| conversion_error(column, e.to_string()))
    };
    decode::run(decode::RunColumns {
        run_key: row.get(0)?,
        dataset: row.get(1)?,
        purpose: text(2)?,
        model_id: row.get(3)?,
        epsilon: row.get(4)?,
        delta: row.get(5)?,
        rho: row.get(6)?,
        snapshot_at: row.get(7)?,
        state: text(8)?,
        created_at: row.get(9)?,
    })
    .map_err(|m| conversion_error(0, m))
}
