//! Bulk imports into the ledger: one transaction per file, per-row errors.
//!
//! A file is imported whole or not at all. Malformed rows are skipped and
//! counted unless `strict` is set (then the first one stops the import); if
//! more than `max_malformed_fraction` of the rows are malformed the import is
//! rolled back, so a wrong file never half-lands in the store.

use std::path::Path;

use hush_formats::{ConsentFormat, ConsentReader, EventFormat, EventReader};
use serde::Serialize;

use crate::{Error, IngestOutcome, Ledger, PseudonymKey, Result, RowError, SubjectEvent, Timestamp, WriteBatch};

/// How tolerant an import is of malformed rows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ImportOptions {
    /// Stop at the first malformed row.
    pub strict: bool,
    /// Roll back when more than this fraction of rows is malformed.
    pub max_malformed_fraction: f64,
}

impl Default for ImportOptions {
    /// Lenient, but a file with more than 1% bad rows is probably the wrong file.
    fn default() -> Self {
        ImportOptions { strict: false, max_malformed_fraction: 0.01 }
    }
}

/// How many malformed rows an [`ImportReport`] quotes in full.
pub const QUOTED_ERRORS: usize = 20;

/// What an import did.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ImportReport {
    /// The input file.
    pub path: String,
    /// Data rows read.
    pub rows: u64,
    /// Rows stored.
    pub stored: u64,
    /// Rows skipped because the store already held exactly that record:
    /// re-importing a file changes nothing. Consent: the same decision
    /// (subject, purpose, decision, `effective_at`, source, notice, proof);
    /// events: the same subject and event id, or, without an id, the same
    /// subject, item, kind, value and time.
    pub duplicates: u64,
    /// Rows refused because the subject was erased (suppressed).
    pub dropped_suppressed: u64,
    /// Event rows refused because the subject had no purpose granted at ingestion time.
    pub dropped_no_consent: u64,
    /// Malformed rows skipped.
    pub malformed: u64,
    /// The first malformed rows, in file order.
    pub errors: Vec<RowError>,
}

impl ImportReport {
    fn malformed_row(&mut self, error: RowError, options: &ImportOptions) -> Result<()> {
        if options.strict {
            return Err(Error::Row(error));
        }
        self.malformed += 1;
        if self.errors.len() < QUOTED_ERRORS {
            self.errors.push(error);
        }
        Ok(())
    }

    fn check_fraction(&self, options: &ImportOptions) -> Result<()> {
        if self.rows > 0 && self.malformed as f64 > options.max_malformed_fraction * self.rows as f64 {
            return Err(Error::TooManyMalformed {
                path: self.path.clone(),
                bad: self.malformed,
                total: self.rows,
                allowed: options.max_malformed_fraction,
                first: Box::new(self.errors[0].clone()),
            });
        }
        Ok(())
    }
}

/// Reads every row with `next_row`, hands good rows to `store` inside one
/// write batch, and counts malformed ones; commits only if the file passes.
fn import_rows<R>(
    ledger: &mut Ledger,
    path: &Path,
    options: &ImportOptions,
    progress: &mut dyn FnMut(u64),
    mut next_row: impl FnMut() -> Result<Option<std::result::Result<R, RowError>>>,
    mut store: impl FnMut(&mut WriteBatch<'_>, R, &mut ImportReport) -> Result<()>,
) -> Result<ImportReport> {
    let mut report = ImportReport { path: path.display().to_string(), ..ImportReport::default() };
    let mut batch = ledger.batch()?;
    while let Some(row) = next_row()? {
        report.rows += 1;
        match row {
            Ok(raw) => store(&mut batch, raw, &mut report)?,
            Err(e) => report.malformed_row(e, options)?,
        }
        if report.rows.is_multiple_of(10_000) {
            progress(report.rows);
        }
    }
    report.check_fraction(options)?;
    batch.commit()?;
    progress(report.rows);
    Ok(report)
}

/// Imports consent records from `path`, pseudonymizing each subject at once.
///
/// `progress` is called with the number of rows read so far, now and then.
///
/// # Errors
/// [`Error::Io`], [`Error::Row`] (strict mode or bad header),
/// [`Error::TooManyMalformed`], [`Error::Store`]; the store is unchanged then.
pub fn import_consent(
    ledger: &mut Ledger,
    key: &PseudonymKey,
    path: &Path,
    format: ConsentFormat,
    options: &ImportOptions,
    now: Timestamp,
    progress: &mut dyn FnMut(u64),
) -> Result<ImportReport> {
    let mut reader = ConsentReader::open(path, format)?;
    import_rows(
        ledger,
        path,
        options,
        progress,
        || Ok(reader.next_row()?),
        |batch, raw, report| {
            // A row dated in the future is the file's fault, not the store's: a malformed row.
            if let Err(hush_vocab::Error::InvalidField { field, message }) =
                crate::rule::check_effective_at(raw.change.effective_at, now)
            {
                let error = RowError { path: report.path.clone(), line: raw.line, field: Some(field.into()), message };
                return report.malformed_row(error, options);
            }
            let subject = key.pseudonymize(&raw.subject_id);
            if batch.holds_consent_record(&subject, &raw.change)? {
                report.duplicates += 1;
                return Ok(());
            }
            match batch.record_consent(&subject, &raw.change, now) {
                Ok(_) => report.stored += 1,
                Err(Error::Suppressed) => report.dropped_suppressed += 1,
                Err(e) => return Err(e),
            }
            Ok(())
        },
    )
}

/// Imports events from `path` into the event store; events of subjects with
/// no purpose granted at `now`, or erased, are counted and not stored, and
/// so are events the store already holds (`duplicates`): re-importing a
/// file, or a file that overlaps an earlier one, stores nothing twice. A row
/// with an `event_id` is the same event as any other of the subject with
/// that id (a different content under a stored id is a malformed row); a
/// row without one is the same event as an identical stored one.
///
/// # Errors
/// As [`import_consent`].
pub fn import_events(
    ledger: &mut Ledger,
    key: &PseudonymKey,
    path: &Path,
    format: &EventFormat,
    options: &ImportOptions,
    now: Timestamp,
    progress: &mut dyn FnMut(u64),
) -> Result<ImportReport> {
    let mut reader = EventReader::open(path, format)?;
    let event_id_field = reader.field_context().event_id_name().to_string();
    import_rows(
        ledger,
        path,
        options,
        progress,
        || Ok(reader.next_row()?),
        |batch, raw, report| {
            let event =
                SubjectEvent { subject: key.pseudonymize(&raw.subject_id), event: raw.event, event_id: raw.event_id };
            match batch.ingest_event(&event, now)? {
                IngestOutcome::Stored => report.stored += 1,
                IngestOutcome::NoConsent => report.dropped_no_consent += 1,
                IngestOutcome::Suppressed => report.dropped_suppressed += 1,
                IngestOutcome::Duplicate => report.duplicates += 1,
                IngestOutcome::Conflict => {
                    let error = RowError {
                        path: report.path.clone(),
                        line: raw.line,
                        field: Some(event_id_field.clone()),
                        message: "the store holds this event id of the subject with other content".into(),
                    };
                    return report.malformed_row(error, options);
                }
            }
            Ok(())
        },
    )
}
