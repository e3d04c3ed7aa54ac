//! `hush erase`: erases subjects (one, or a file of erasure requests).

use crate::out;
use std::path::Path;

use anyhow::{bail, Context, Result};
use hush_consent::{Ledger, PseudonymKey, Timestamp};
use serde::Serialize;

use super::{load_key, open_ledger, print_json};
use crate::cli::*;

/// Subject ids from an erasure-request CSV (column `subject_id`), with line numbers in errors.
pub fn erasure_requests(path: &Path) -> Result<Vec<hush_consent::SubjectId>> {
    let mut reader = csv::Reader::from_path(path).with_context(|| format!("reading {}", path.display()))?;
    let column = reader
        .headers()
        .with_context(|| format!("{}:1: unreadable header", path.display()))?
        .iter()
        .position(|h| h == "subject_id")
        .with_context(|| format!("{}:1: field `subject_id`: column is missing from the header", path.display()))?;
    let mut ids = Vec::new();
    for (index, record) in reader.records().enumerate() {
        let line = index + 2;
        let record =
            record.with_context(|| format!("{}:{line}: unreadable row (expected UTF-8 CSV)", path.display()))?;
        match record.get(column).filter(|s| !s.is_empty()) {
            Some(id) => ids.push(
                hush_consent::SubjectId::parse(id)
                    .map_err(|e| anyhow::anyhow!("{}:{line}: field `subject_id`: {e}", path.display()))?,
            ),
            None => bail!("{}:{line}: field `subject_id`: expected a subject id", path.display()),
        }
    }
    Ok(ids)
}

#[derive(Serialize, Default)]
pub struct EraseSummary {
    pub subjects: u64,
    /// Ids hush had never seen: nothing was held, nothing was suppressed.
    pub unknown_subjects: u64,
    pub consent_records_deleted: u64,
    pub events_deleted: u64,
    pub receipts: Vec<hush_consent::ErasureReceipt>,
}

pub fn run(g: &Global, args: &EraseArgs) -> Result<()> {
    let key = load_key(g)?;
    let mut ledger = open_ledger(g)?;
    let ids = match (&args.target.subject, &args.target.requests) {
        (Some(id), _) => vec![id.clone()],
        (None, Some(path)) => erasure_requests(path)?,
        (None, None) => unreachable!("clap requires one of --subject and --requests"),
    };
    let summary = erase_all(&mut ledger, &key, &ids)?;
    if args.target.subject.is_some() && summary.unknown_subjects == 1 {
        anyhow::bail!(
            "hush has never seen this subject id: nothing was held, so nothing was erased (a variant spelling \
             would leave the real subject untouched; check the id); later imports of it are suppressed, \
             an explicit opt-in still works"
        );
    }
    if g.json {
        return print_json(&summary);
    }
    out!(
        "erased {} subjects: {} consent records and {} events deleted; later imports of them are suppressed",
        summary.subjects - summary.unknown_subjects,
        summary.consent_records_deleted,
        summary.events_deleted
    );
    if summary.unknown_subjects > 0 {
        out!(
            "{} requested ids were never seen: nothing was held of them (later imports of them are suppressed)",
            summary.unknown_subjects
        );
    }
    Ok(())
}

pub fn erase_all(ledger: &mut Ledger, key: &PseudonymKey, ids: &[hush_consent::SubjectId]) -> Result<EraseSummary> {
    let mut summary = EraseSummary::default();
    for id in ids {
        let receipt = ledger.erase(&id.pseudonymize(key), Timestamp::now())?;
        summary.subjects += 1;
        summary.unknown_subjects += u64::from(!receipt.subject_was_known);
        summary.consent_records_deleted += receipt.consent_records_deleted;
        summary.events_deleted += receipt.events_deleted;
        summary.receipts.push(receipt);
    }
    Ok(summary)
}
