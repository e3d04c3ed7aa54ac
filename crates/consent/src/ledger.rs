//! The consent ledger and event store, on one of two backends chosen by the
//! store URL: an embedded SQLite file (the default) or a PostgreSQL server
//! (for several serving replicas). Both keep the same schema, semantics and
//! guarantees; [`Ledger`] is the one interface the rest of hush uses.

use std::cell::RefCell;
use std::collections::HashSet;
use std::path::Path;

use serde::Serialize;

use crate::budget::{BudgetCap, BudgetPurpose, BudgetRequest, BudgetRun, BudgetSpend};
use crate::catalogue::{CatalogueItem, ItemUpsertReport};
use crate::connect::ConnectOptions;
use crate::postgres::{PgBatch, PgStore};
use crate::pseudonym::SuppressionTag;
use crate::sqlite::{SqliteBatch, SqliteStore};
use crate::{
    ConsentChange, ConsentRecord, Decision, Error, Event, Pseudonym, Purpose, Result, SubjectEvent, Timestamp,
};

/// The newest schema version this build understands.
pub const SCHEMA_VERSION: i64 = crate::sqlite::SCHEMA_VERSION;

pub use hush_vocab::rule::ConsentState;

/// The answer to "may we use this subject's data for this purpose at time T?".
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConsentStatus {
    /// The purpose asked about.
    pub purpose: Purpose,
    /// The state at the asked time.
    pub state: ConsentState,
    /// The time the asked about.
    pub as_of: Timestamp,
    /// The record that decides it, if any.
    pub decided_by: Option<ConsentRecord>,
}

impl ConsentStatus {
    /// `true` only for an explicit, unwithdrawn grant.
    pub fn is_granted(&self) -> bool {
        self.state == ConsentState::Granted
    }

    /// The status at `as_of` decided by the consent rule over every record of
    /// one subject and `purpose` (in any order); a question about the present
    /// counts every recorded decision, whatever the clocks ([`crate::rule::query_time`]).
    pub(crate) fn from_records(mut records: Vec<ConsentRecord>, purpose: Purpose, as_of: Timestamp) -> Self {
        let decisions: Vec<Decision> = records.iter().map(ConsentRecord::decision).collect();
        let at = crate::rule::query_time(&decisions, as_of, Timestamp::now());
        let state = crate::rule::state_at(&decisions, at);
        let decided_by = crate::rule::deciding(&decisions, at).map(|i| records.swap_remove(i));
        ConsentStatus { purpose, state, as_of, decided_by }
    }
}

/// What happened to one event offered for ingestion.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IngestOutcome {
    /// Stored.
    Stored,
    /// Not stored: the subject had no purpose granted at ingestion time.
    NoConsent,
    /// Not stored: the subject was erased and is suppressed.
    Suppressed,
    /// Not stored: the store already holds this event (the same `event_id`
    /// of the subject, or without an id the same subject, item, kind,
    /// value and time). Retried imports are idempotent.
    Duplicate,
    /// Not stored: the store holds an event of the subject with this
    /// `event_id` and different content. The first one stands.
    Conflict,
}

/// Counts of an ingestion batch, plus the outcome of each event in order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct IngestReport {
    /// Events offered.
    pub received: u64,
    /// Events stored.
    pub stored: u64,
    /// Events refused because the subject had no purpose granted.
    pub dropped_no_consent: u64,
    /// Events refused because the subject was erased.
    pub dropped_suppressed: u64,
    /// Events not stored again: the store already held them.
    pub duplicates: u64,
    /// Events refused because their `event_id` was held with other content.
    pub conflicts: u64,
    /// The outcome of each event, in the order offered.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub outcomes: Vec<IngestOutcome>,
}

impl IngestReport {
    pub(crate) fn count(&mut self, outcome: IngestOutcome) {
        self.received += 1;
        match outcome {
            IngestOutcome::Stored => self.stored += 1,
            IngestOutcome::NoConsent => self.dropped_no_consent += 1,
            IngestOutcome::Suppressed => self.dropped_suppressed += 1,
            IngestOutcome::Duplicate => self.duplicates += 1,
            IngestOutcome::Conflict => self.conflicts += 1,
        }
        self.outcomes.push(outcome);
    }

    /// Adds another report's counts (outcomes are not kept).
    pub fn absorb_counts(&mut self, other: &IngestReport) {
        self.received += other.received;
        self.stored += other.stored;
        self.dropped_no_consent += other.dropped_no_consent;
        self.dropped_suppressed += other.dropped_suppressed;
        self.duplicates += other.duplicates;
        self.conflicts += other.conflicts;
    }
}

/// The receipt of an erasure: what was deleted and when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ErasureReceipt {
    /// When the erasure was committed.
    pub erased_at: Timestamp,
    /// Consent records deleted.
    pub consent_records_deleted: u64,
    /// Events deleted.
    pub events_deleted: u64,
    /// Whether a suppression entry now blocks later imports of the subject.
    pub suppressed: bool,
    /// Whether the write-ahead log was truncated, so no old copy of the rows remains in it.
    pub wal_truncated: bool,
    /// Whether hush held anything of the subject or had erased it before.
    /// `false` means the id was never seen (often a variant spelling): nothing
    /// was deleted; later imports of the id are still suppressed, but an
    /// explicit grant through the API or CLI is an opt-in and lifts that.
    pub subject_was_known: bool,
}

/// Whether recording `change` lifts the suppression of a subject whose entry
/// says `Some(subject_was_known)`: only an explicit grant through the API or
/// the CLI lifts the entry of an erasure that found nothing held (an id hush
/// had never seen); a bulk import never does, nor does anything lift the
/// entry of a subject whose data was erased.
pub(crate) fn opt_in_lifts(change: &ConsentChange, suppression: Option<bool>) -> bool {
    suppression == Some(false) && change.granted && change.source != crate::ConsentSource::Import
}

/// What a personalized request may use, read in one go by
/// [`Ledger::gated_read`]: each part is read only if the one before allows it.
#[derive(Clone, Debug, PartialEq)]
pub enum GatedRead {
    /// The presented API key was refused; nothing about the subject is returned.
    KeyRefused(crate::keys::KeyCheck),
    /// The purpose is not granted (the status says why); no events are returned.
    NotGranted(ConsentStatus),
    /// The purpose is granted.
    Granted {
        /// The status that grants it.
        status: ConsentStatus,
        /// The subject's most recent events, newest first (see [`Ledger::recent_events`]).
        recent: Vec<Event>,
    },
}

/// Everything held about one subject (GDPR Art. 15 access, Art. 20 portability).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SubjectExport {
    /// The subject's pseudonym (the only identity hush holds).
    pub subject: Pseudonym,
    /// When this export was made.
    pub exported_at: Timestamp,
    /// Current status of every purpose.
    pub consent_status: Vec<ConsentStatus>,
    /// Full consent history, oldest first.
    pub consent_history: Vec<ConsentRecord>,
    /// Every stored event, oldest first.
    pub events: Vec<Event>,
}

/// Counts of what the store holds, for reports and health checks.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LedgerStats {
    /// Distinct subjects with at least one consent record.
    pub subjects_with_consent: u64,
    /// Consent records.
    pub consent_records: u64,
    /// Stored events.
    pub events: u64,
    /// Entries on the suppression list.
    pub suppressed_subjects: u64,
    /// Erasures performed.
    pub erasures: u64,
    /// Event batches ingested through [`Ledger::ingest_events`], whatever they stored.
    pub ingested_batches: u64,
}

/// Where the store lives: `sqlite:///path/hush.db` (or a plain path) or
/// `postgres://user@host:port/db`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreUrl {
    /// An SQLite file.
    Sqlite(std::path::PathBuf),
    /// A PostgreSQL connection string.
    Postgres(String),
}

impl StoreUrl {
    /// Parses a store URL; anything without a scheme is an SQLite file path.
    ///
    /// # Errors
    /// [`Error::InvalidField`] for an unknown scheme or an empty path.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = |message: String| Error::InvalidField { field: "store URL", message };
        if let Some(path) = text.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(bad(format!("`{text}` names no file; expected sqlite:///path/to/hush.db")));
            }
            return Ok(StoreUrl::Sqlite(path.into()));
        }
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            return Ok(StoreUrl::Postgres(text.to_string()));
        }
        if let Some((scheme, _)) = text.split_once("://") {
            return Err(bad(format!(
                "unknown scheme `{scheme}` in `{}`; expected sqlite:///path/hush.db, postgres://... or a file path",
                redact(text)
            )));
        }
        if text.is_empty() {
            return Err(bad("empty; expected sqlite:///path/hush.db, postgres://... or a file path".into()));
        }
        Ok(StoreUrl::Sqlite(text.into()))
    }
}

/// A connection string without its password, for messages and logs: the
/// password of `user:password@host` and the value of every query parameter
/// whose name contains `password` (e.g. `?password=` or `sslpassword=`).
pub fn redact(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let mut out = redact_credentials(base);
    if let Some(query) = query {
        let params: Vec<String> = query
            .split('&')
            .map(|param| match param.split_once('=') {
                Some((name, _)) if name.to_ascii_lowercase().contains("password") => format!("{name}=***"),
                _ => param.to_string(),
            })
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
}

fn redact_credentials(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

enum Backend {
    Sqlite(SqliteStore),
    // A client needs `&mut` even to read; reads through `&Ledger` borrow it.
    Postgres(Box<RefCell<PgStore>>),
}

/// The consent ledger and event store.
pub struct Ledger {
    backend: Backend,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger").field("location", &self.location()).finish()
    }
}

/// Runs `$body` with `$store` bound to whichever backend `$ledger` uses.
macro_rules! on_backend {
    ($ledger:expr, $store:ident => $body:expr) => {
        match $ledger {
            Backend::Sqlite($store) => $body,
            Backend::Postgres(cell) => {
                let $store = &mut *cell.borrow_mut();
                let result = $body;
                $store.noting_loss(result)
            }
        }
    };
}

impl Ledger {
    /// Opens (creating if needed) the SQLite store at `path` and migrates its schema.
    ///
    /// # Errors
    /// [`Error::Store`] if SQLite fails; [`Error::SchemaTooNew`] if the file
    /// was written by a newer hush.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Ok(Ledger { backend: Backend::Sqlite(SqliteStore::open(path)?) })
    }

    /// Opens the store a URL names (see [`StoreUrl`]) and migrates its schema.
    ///
    /// # Errors
    /// As [`Ledger::open`], and for PostgreSQL [`Error::Connect`] when the
    /// server cannot be reached or refuses the credentials.
    pub fn connect(url: &str) -> Result<Self> {
        Ledger::connect_with(url, ConnectOptions::default())
    }

    /// As [`Ledger::connect`], with settings that are not part of the URL.
    /// A PostgreSQL URL's `sslmode` and `sslrootcert` are read as libpq reads
    /// them; TLS is on by default for hosts that are not loopback (see
    /// [`crate::connect`]).
    ///
    /// # Errors
    /// As [`Ledger::connect`]; [`Error::CleartextRefused`] for
    /// `sslmode=disable` to a host that is not loopback without
    /// [`ConnectOptions::allow_cleartext`]; [`Error::InvalidField`] for bad
    /// TLS settings.
    pub fn connect_with(url: &str, options: ConnectOptions) -> Result<Self> {
        match StoreUrl::parse(url)? {
            StoreUrl::Sqlite(path) => Ledger::open(path),
            StoreUrl::Postgres(url) => {
                Ok(Ledger { backend: Backend::Postgres(Box::new(RefCell::new(PgStore::connect(&url, options)?))) })
            }
        }
    }

    /// Another connection to the same store, with the same settings.
    ///
    /// # Errors
    /// As [`Ledger::connect`].
    pub fn reopen(&self) -> Result<Self> {
        match &self.backend {
            Backend::Sqlite(s) => Ledger::open(s.path()),
            Backend::Postgres(p) => {
                let p = p.borrow();
                Ledger::connect_with(p.url(), p.options())
            }
        }
    }

    /// The URL and settings of a PostgreSQL store, to open more connections like this one.
    pub(crate) fn postgres_settings(&self) -> Option<(String, ConnectOptions)> {
        match &self.backend {
            Backend::Sqlite(_) => None,
            Backend::Postgres(p) => {
                let p = p.borrow();
                Some((p.url().to_string(), p.options()))
            }
        }
    }

    /// Whether the connection is known to be unusable (a PostgreSQL
    /// connection the server closed); a pool then replaces it.
    pub fn is_broken(&self) -> bool {
        match &self.backend {
            Backend::Sqlite(_) => false,
            Backend::Postgres(p) => p.borrow().is_closed(),
        }
    }

    /// Where the store is, for messages (a file path, or a URL without its password).
    pub fn location(&self) -> String {
        match &self.backend {
            Backend::Sqlite(s) => s.path().display().to_string(),
            Backend::Postgres(p) => p.borrow().location().to_string(),
        }
    }

    /// Whether the store is a server reached over the network: its calls
    /// block on I/O, so async code must run them off the reactor.
    pub fn is_remote(&self) -> bool {
        !matches!(self.backend, Backend::Sqlite(_))
    }

    /// The SQLite file, for the SQLite backend.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match &self.backend {
            Backend::Sqlite(s) => Some(s.path()),
            Backend::Postgres(_) => None,
        }
    }

    /// The schema version the store is at.
    ///
    /// # Errors
    /// [`Error::Store`] if the store fails.
    pub fn schema_version(&self) -> Result<i64> {
        on_backend!(&self.backend, s => s.schema_version())
    }

    /// Starts a batch of writes that commit together or not at all.
    ///
    /// Bulk imports use one batch for a whole file, so a failed import leaves
    /// the store exactly as it was.
    ///
    /// # Errors
    /// [`Error::Store`] if the write transaction cannot be started.
    pub fn batch(&mut self) -> Result<WriteBatch<'_>> {
        Ok(match &mut self.backend {
            Backend::Sqlite(s) => WriteBatch { inner: BatchBackend::Sqlite(s.batch()?) },
            Backend::Postgres(p) => WriteBatch { inner: BatchBackend::Postgres(Box::new(p.get_mut().batch()?)) },
        })
    }

    /// Appends one consent decision and returns the stored record.
    ///
    /// # Errors
    /// [`Error::InvalidField`] for bad text fields or an `effective_at`
    /// outside the rule's bounds (in the future beyond
    /// [`crate::MAX_CLOCK_SKEW_MS`], or before 1970), [`Error::Suppressed`] for
    /// an erased subject, [`Error::Store`] if the store fails.
    pub fn record_consent(
        &mut self,
        subject: &Pseudonym,
        change: &ConsentChange,
        recorded_at: Timestamp,
    ) -> Result<ConsentRecord> {
        let mut batch = self.batch()?;
        let record = batch.record_consent(subject, change, recorded_at)?;
        batch.commit()?;
        Ok(record)
    }

    /// Stores the events of subjects who have some purpose granted at `now`,
    /// all in one transaction.
    ///
    /// # Errors
    /// [`Error::Store`] if the store fails; nothing of the batch is stored then.
    pub fn ingest_events(&mut self, events: &[SubjectEvent], now: Timestamp) -> Result<IngestReport> {
        let mut reports = self.ingest_event_batches(&[(events, now)])?;
        Ok(reports.pop().unwrap_or_default())
    }

    /// Stores several batches of events, each with the time it arrived, in
    /// one transaction (group commit): each batch is decided exactly as
    /// [`Ledger::ingest_events`] would decide it at its own time after the
    /// batches before it, and gets its own report, but the store is locked,
    /// read and made durable once for all of them. A server takes every
    /// batch waiting for the writer at once, so a busy store pays its
    /// per-transaction round trips and flush once per group rather than once
    /// per request.
    ///
    /// # Errors
    /// [`Error::Store`] if the store fails; nothing of any batch is stored then.
    pub fn ingest_event_batches(&mut self, batches: &[(&[SubjectEvent], Timestamp)]) -> Result<Vec<IngestReport>> {
        let mut batch = self.batch()?;
        let all: Vec<SubjectEvent>;
        let prefetched = match batches {
            [(one, _)] => *one,
            _ => {
                all = batches.iter().flat_map(|(b, _)| b.iter().cloned()).collect();
                &all[..]
            }
        };
        batch.prefetch(prefetched)?;
        let mut reports = Vec::with_capacity(batches.len());
        for &(events, now) in batches {
            let mut report = IngestReport::default();
            for event in events {
                report.count(batch.ingest_event(event, now)?);
            }
            reports.push(report);
        }
        // Every batch writes, so every batch commits durably alike: how long
        // the answer takes must not say whether anything was stored.
        let events = reports.iter().map(|r| r.received).sum();
        batch.count_received(batches.len() as u64, events)?;
        batch.commit()?;
        Ok(reports)
    }

    /// The consent state of `subject` for `purpose` at `as_of`, under the
    /// consent rule of [`crate::rule`]: the latest recorded decision in force
    /// then wins.
    ///
    /// # Errors
    /// [`Error::Store`] if the store fails.
    pub fn status(&self, subject: &Pseudonym, purpose: Purpose, as_of: Timestamp) -> Result<ConsentStatus> {
        on_backend!(&self.backend, s => s.status(subject, purpose, as_of))
    }

    /// The full consent history of a subject, in the order it was recorded.
    ///
    /// # Errors
    /// [`Error::Store`] if the store fails.
    pub fn history(&self, subject: &Pseudonym) -> Result<Vec<ConsentRecord>> {
        on_backend!(&self.backend, s => s.history(subject))
    }

    /// Every stored event of a subject, oldest first.
    ///
    /// # Errors
    /// [`Error::Store`] if the store fails.
    pub fn events_of(&self, subject: &Pseudonym) -> Result<Vec<Event>> {
        on_backend!(&self.backend, s => s.events_of(subject))
    }

    /// The subject's `limit` most recent events, newest first (ties by
    /// arrival): what serving folds in, read without visiting older events.
    ///
    /// # Errors
    /// [`Error::Store`] if the store fails.
    pub fn recent_events(&self, subject: &Pseudonym, limit: usize) -> Result<Vec<Event>> {
        on_backend!(&self.backend, s => s.recent_events(subject, limit))
    }

    /// What a personalized request needs, read as one consistent step (on
    /// PostgreSQL one prepared statement, so one round trip and one snapshot):
    /// the presented API key checked for `scope` (`None`: keys are not
    /// required), then the subject's status for `purpose` at `as_of`, then
    /// their `limit` most recent events. Nothing about the subject is
    /// returned unless the key is accepted, and no event unless the purpose
    /// is granted.
    ///
    /// The read starts after every write acknowledged before the call, so a
    /// withdrawal or erasure acknowledged by any replica is seen.
    ///
    /// # Errors
    /// [`Error::Store`] if the store fails.
    pub fn gated_read(
        &self,
        key: Option<(&crate::keys::PresentedKey, &str)>,
        subject: &Pseudonym,
        purpose: Purpose,
        as_of: Timestamp,
        limit: usize,
    ) -> Result<GatedRead> {
        match &self.backend {
            Backend::Postgres(cell) => cell.borrow_mut().gated_read(key, subject, purpose, as_of, limit),
            Backend::Sqlite(_) => {
                if let Some((presented, scope)) = key {
                    if let Err(why) = crate::keys::verify(self.api_key(&presented.key_id)?, presented, scope) {
                        return Ok(GatedRead::KeyRefused(why));
                    }
                }
                let status = self.status(subject, purpose, as_of)?;
                if !status.is_granted() {
                    return Ok(GatedRead::NotGranted(status));
                }
                Ok(GatedRead::Granted { recent: self.recent_events(subject, limit)?, status })
            }
        }
    }

    /// Whether hush has seen the subject: a consent record, an event, or an
    /// erasure. A decision about an id never seen is often a misspelling.
    ///
    /// # Errors
    /// [`Error::Store`] if the store fails.
    pub fn is_known(&self, subject: &Pseudonym) -> Result<bool> {
        Ok(!self.history(subject)?.is_empty()
            || !self.recent_events(subject, 1)?.is_empty()
            || self.is_suppressed(subject)?)
    }

    /// Whether the subject was erased and is on the suppression list.
    ///
    /// # Errors
    /// [`Error::Store`] if the store fails.
    pub fn is_suppressed(&self, subject: &Pseudonym) -> Result<bool> {
        on_backend!(&self.backend, s => s.is_suppressed(subject))
    }

    /// Lifts the suppression of an erased subject who opts in afresh.
    ///
    /// Suppression exists to stop stale backfills from bringing an erased
    /// person back; a new, explicit opt-in by that person is a different
    /// matter, and the operator lifts the suppression knowingly.
    ///
    /// # Errors
    /// [`Error::Store`] if the store fails.
    pub fn lift_suppression(&mut self, subject: &Pseudonym) -> Result<bool> {
        on_backend!(&mut self.backend, s => s.lift_suppression(subject))
    }

    /// Erases a subject: deletes every consent record and event in one
    /// transaction and adds a suppression entry (a one-way hash of the
    /// pseudonym). On SQLite the write-ahead log is truncated afterwards.
    ///
    /// Erasing a subject who is already suppressed and holds nothing is not an
    /// error; the receipt then counts zero rows. Erasing an id never seen
    /// deletes nothing and says so ([`ErasureReceipt::subject_was_known`]).
    ///
    /// # Errors
    /// [`Error::Store`] if the store fails; nothing is deleted then.
    pub fn erase(&mut self, subject: &Pseudonym, now: Timestamp) -> Result<ErasureReceipt> {
        on_backend!(&mut self.backend, s => s.erase(subject, now))
    }

    /// Everything held about a subject.
    ///
    /// # Errors
    /// [`Error::UnknownSubject`] if nothing is held (including after erasure),
    /// [`Error::Store`] if the store fails.
    pub fn export(&self, subject: &Pseudonym, now: Timestamp) -> Result<SubjectExport> {
        let consent_history = self.history(subject)?;
        let events = self.events_of(subject)?;
        if consent_history.is_empty() && events.is_empty() {
            return Err(Error::UnknownSubject);
        }
        let consent_status = Purpose::ALL.iter().map(|&p| self.status(subject, p, now)).collect::<Result<Vec<_>>>()?;
        Ok(SubjectExport { subject: *subject, exported_at: now, consent_status, consent_history, events })
    }

    /// Calls `visit` for every stored event in ingestion order, streaming
    /// (the event table is never loaded into memory at once).
    ///
    /// # Errors
    /// Whatever `visit` returns, or [`Error::Store`] if the store fails.
    pub fn for_each_event<E: From<Error>>(
        &self,
        visit: impl FnMut(SubjectEvent) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        match &self.backend {
            // Streams for extraction: their error type is the caller's.
            Backend::Sqlite(s) => s.for_each_event(visit),
            Backend::Postgres(cell) => cell.borrow_mut().for_each_event(visit),
        }
    }

    /// Calls `visit(subject, decision)` for every decision on `purpose`, in
    /// ledger order.
    ///
    /// # Errors
    /// Whatever `visit` returns, or [`Error::Store`] if the store fails.
    pub fn for_each_consent_decision<E: From<Error>>(
        &self,
        purpose: Purpose,
        visit: impl FnMut(Pseudonym, Decision) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        match &self.backend {
            // Streams for extraction: their error type is the caller's.
            Backend::Sqlite(s) => s.for_each_consent_decision(purpose, visit),
            Backend::Postgres(cell) => cell.borrow_mut().for_each_consent_decision(purpose, visit),
        }
    }

    /// Stores a new API key record (the secret itself is never stored).
    ///
    /// # Errors
    /// [`Error::Store`] if the store fails (e.g. a duplicate key id).
    pub fn insert_api_key(&mut self, key: &crate::keys::ApiKeyRecord, secret_sha256: &[u8; 32]) -> Result<()> {
        on_backend!(&mut self.backend, s => s.insert_api_key(key, secret_sha256))
    }

    /// The key record and secret digest of `key_id`, revoked or not.
    ///
    /// # Errors
    /// [`Error::Store`] if the store fails.
    pub fn api_key(&self, key_id: &str) -> Result<Option<(crate::keys::ApiKeyRecord, [u8; 32])>> {
        on_backend!(&self.backend, s => s.api_key(key_id))
    }

    /// Every API key record, oldest first.
    ///
    /// # Errors
    /// [`Error::Store`] if the store fails.
    pub fn api_keys(&self) -> Result<Vec<crate::keys::ApiKeyRecord>> {
        on_backend!(&self.backend, s => s.api_keys())
    }

    /// Revokes a key; returns whether an active key was revoked.
    ///
    /// # Errors
    /// [`Error::Store`] if the store fails.
    pub fn revoke_api_key(&mut self, key_id: &str, now: Timestamp) -> Result<bool> {
        on_backend!(&mut self.backend, s => s.revoke_api_key(key_id, now))
    }

    /// The whole suppression list.
    ///
    /// # Errors
    /// [`Error::Store`] if the store fails.
    pub fn suppression_tags(&self) -> Result<HashSet<SuppressionTag>> {
        on_backend!(&self.backend, s => s.suppression_tags())
    }

    /// Counts of what the store holds.
    ///
    /// # Errors
    /// [`Error::Store`] if the store fails.
    pub fn stats(&self) -> Result<LedgerStats> {
        on_backend!(&self.backend, s => s.stats())
    }

    /// Imports catalogue items, upserting by item id in one transaction:
    /// an item the store does not hold is inserted, one held with another
    /// title, category or attributes is replaced, one held exactly so is left
    /// alone. Items the store holds and `items` does not are kept.
    ///
    /// # Errors
    /// [`Error::InvalidField`] for an item that breaks
    /// [`CatalogueItem::validate`] or an id given twice (nothing is written
    /// then); [`Error::Store`] if the store fails.
    pub fn upsert_items(&mut self, items: &[CatalogueItem], now: Timestamp) -> Result<ItemUpsertReport> {
        let mut seen = HashSet::with_capacity(items.len());
        for (position, item) in items.iter().enumerate() {
            item.validate().map_err(|e| Error::InvalidField {
                field: "catalogue item",
                message: format!("item {} of the batch: {e}", position + 1),
            })?;
            if !seen.insert(item.id.as_str()) {
                return Err(Error::InvalidField {
                    field: "catalogue item",
                    message: format!("item {} of the batch repeats an id given earlier", position + 1),
                });
            }
        }
        on_backend!(&mut self.backend, s => s.upsert_items(items, now))
    }

    /// The whole catalogue, by item id in byte order (empty if none was imported).
    ///
    /// # Errors
    /// [`Error::Store`] if the store fails; [`Error::Corrupt`] for
    /// attributes that are not a JSON object.
    pub fn catalogue_items(&self) -> Result<Vec<CatalogueItem>> {
        let mut items = on_backend!(&self.backend, s => s.catalogue_items())?;
        // Both backends sort by bytes; sorting again costs little and makes it a guarantee.
        items.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        Ok(items)
    }

    /// Sets (or replaces) the lifetime cap of a dataset and purpose.
    ///
    /// # Errors
    /// [`Error::InvalidField`] for an empty dataset name or a cap that is not
    /// finite and positive; [`Error::Store`] if the store fails.
    pub fn set_budget_cap(&mut self, cap: &BudgetCap) -> Result<()> {
        crate::budget::check_cap(cap)?;
        on_backend!(&mut self.backend, s => s.set_budget_cap(cap))
    }

    /// The cap of a dataset and purpose, if one is set.
    ///
    /// # Errors
    /// [`Error::Store`] if the store fails.
    pub fn budget_cap(&self, dataset: &str, purpose: BudgetPurpose) -> Result<Option<BudgetCap>> {
        on_backend!(&self.backend, s => s.budget_cap(dataset, purpose))
    }

    /// Reserves a run's budget: checks the cap and records the run in one
    /// serialized transaction, so concurrent runs cannot both pass a cap that
    /// only one of them fits under.
    ///
    /// Reserving a `run_key` that is already recorded returns that record
    /// unchanged and spends nothing more.
    ///
    /// # Errors
    /// [`Error::BudgetExceeded`] if the run does not fit under the cap;
    /// [`Error::InvalidField`] for a non-private release run or a bad
    /// guarantee; [`Error::Store`] if the store fails.
    pub fn reserve_budget(&mut self, request: &BudgetRequest, now: Timestamp) -> Result<BudgetRun> {
        crate::budget::check_request(request)?;
        on_backend!(&mut self.backend, s => s.reserve_budget(request, now))
    }

    /// Marks a reserved run as spent on `model_id`.
    ///
    /// # Errors
    /// [`Error::InvalidField`] if no run has that key; [`Error::Store`] if the store fails.
    pub fn commit_budget(&mut self, run_key: &str, model_id: &str) -> Result<()> {
        on_backend!(&mut self.backend, s => s.commit_budget(run_key, model_id))
    }

    /// Gives a reserved run's budget back (its training failed before any
    /// release). A committed run cannot be cancelled: its model exists.
    /// Returns whether a reservation was removed.
    ///
    /// # Errors
    /// [`Error::Store`] if the store fails.
    pub fn cancel_budget(&mut self, run_key: &str) -> Result<bool> {
        on_backend!(&mut self.backend, s => s.cancel_budget(run_key))
    }

    /// What every dataset and purpose with a cap or a run has spent, sorted.
    ///
    /// # Errors
    /// [`Error::Store`] if the store fails.
    pub fn budget_spending(&self) -> Result<Vec<BudgetSpend>> {
        on_backend!(&self.backend, s => s.budget_spending())
    }

    /// Every recorded run of a dataset (or of all datasets), oldest first.
    ///
    /// # Errors
    /// [`Error::Store`] if the store fails.
    pub fn budget_runs(&self, dataset: Option<&str>) -> Result<Vec<BudgetRun>> {
        on_backend!(&self.backend, s => s.budget_runs(dataset))
    }
}

enum BatchBackend<'a> {
    Sqlite(SqliteBatch<'a>),
    Postgres(Box<PgBatch<'a>>),
}

/// Writes that commit together or not at all; dropping it without
/// [`WriteBatch::commit`] rolls everything back.
pub struct WriteBatch<'a> {
    inner: BatchBackend<'a>,
}

impl WriteBatch<'_> {
    /// Appends one consent decision. See [`Ledger::record_consent`].
    ///
    /// # Errors
    /// As [`Ledger::record_consent`].
    pub fn record_consent(
        &mut self,
        subject: &Pseudonym,
        change: &ConsentChange,
        recorded_at: Timestamp,
    ) -> Result<ConsentRecord> {
        match &mut self.inner {
            BatchBackend::Sqlite(b) => b.record_consent(subject, change, recorded_at),
            BatchBackend::Postgres(b) => b.record_consent(subject, change, recorded_at),
        }
    }

    /// Whether the ledger already holds this very decision of `subject`
    /// (same purpose, decision, `effective_at`, source, notice and proof):
    /// imports skip such a record rather than re-record an old decision.
    ///
    /// # Errors
    /// [`Error::Store`] if the store fails.
    pub fn holds_consent_record(&mut self, subject: &Pseudonym, change: &ConsentChange) -> Result<bool> {
        match &mut self.inner {
            BatchBackend::Sqlite(b) => b.holds_consent_record(subject, change),
            BatchBackend::Postgres(b) => b.holds_consent_record(subject, change),
        }
    }

    /// Reads at once what deciding about `events` needs (their subjects'
    /// consent decisions and suppression, and the stored events they could
    /// repeat), so [`WriteBatch::ingest_event`] does not ask the store per
    /// subject (on PostgreSQL, one round trip instead of three per subject;
    /// SQLite reads in-process and needs none of it). The decisions are
    /// kept whole, so events can then be decided at any time.
    ///
    /// # Errors
    /// [`Error::Store`] if the store fails.
    pub fn prefetch(&mut self, events: &[SubjectEvent]) -> Result<()> {
        match &mut self.inner {
            BatchBackend::Sqlite(_) => Ok(()),
            BatchBackend::Postgres(b) => b.prefetch(events),
        }
    }

    /// Stores one event if its subject has some purpose granted at `now`.
    ///
    /// # Errors
    /// [`Error::Store`] if the store fails.
    pub fn ingest_event(&mut self, event: &SubjectEvent, now: Timestamp) -> Result<IngestOutcome> {
        match &mut self.inner {
            BatchBackend::Sqlite(b) => b.ingest_event(event, now),
            BatchBackend::Postgres(b) => b.ingest_event(event, now),
        }
    }

    /// Counts `batches` ingested batches holding `events` events in all
    /// (stored or not) in the store. A batch that stores nothing would
    /// otherwise write nothing and commit faster than one that stores, and
    /// that difference would tell a client whether the batch's subjects
    /// consented.
    ///
    /// # Errors
    /// [`Error::Store`] if the store fails.
    pub fn count_received(&mut self, batches: u64, events: u64) -> Result<()> {
        match &mut self.inner {
            BatchBackend::Sqlite(b) => b.count_received(batches, events),
            BatchBackend::Postgres(b) => b.count_received(batches, events),
        }
    }

    /// Makes every write of the batch durable at once.
    ///
    /// # Errors
    /// [`Error::Store`] if the store fails; nothing is stored then.
    pub fn commit(self) -> Result<()> {
        match self.inner {
            BatchBackend::Sqlite(b) => b.commit(),
            BatchBackend::Postgres(b) => (*b).commit(),
        }
    }
}

#[cfg(test)]
mod redact_tests {
    use super::redact;

    #[test]
    fn passwords_leave_urls_wherever_they_stand() {
        assert_eq!(redact("postgres://u:s3cret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(
            redact("postgres://u@h/db?password=s3cret&sslmode=require"),
            "postgres://u@h/db?password=***&sslmode=require"
        );
        assert_eq!(
            redact("postgres://h/db?sslmode=require&SSLPassword=x"),
            "postgres://h/db?sslmode=require&SSLPassword=***"
        );
        assert_eq!(redact("postgres://u:a@h/db?password=b"), "postgres://u:***@h/db?password=***");
        assert_eq!(redact("hush.db"), "hush.db");
        for url in ["postgres://u:s3cret@h/db?password=s3cret", "postgres://h/db?user=u&password=s3cret"] {
            assert!(!redact(url).contains("s3cret"), "{url}");
        }
    }
}
