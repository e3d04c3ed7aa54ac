//! The consent ledger and event store, on one of two backends chosen by the
//! store URL: an embedded SQLite file (the default) or a PostgreSQL server
//! (for several serving replicas). Both keep the same schema, semantics and
//! guarantees; [`Ledger`] is the one interface the rest of hush uses.

use std::collections::{HashMap, HashSet};
use std::ops::ControlFlow;
use std::path::Path;

use serde::Serialize;

use crate::budget::{BudgetCap, BudgetPurpose, BudgetRequest, BudgetRun, BudgetSpend};
use crate::catalogue::{CatalogueItem, ItemUpsertReport};
use crate::connect::ConnectOptions;
use crate::pseudonym::SuppressionTag;
use crate::store::sqlite::SqliteStore;
use crate::store::{Store, Tx};
use crate::{
    ConsentChange, ConsentRecord, Decision, Error, Event, Pseudonym, Purpose, Result, SubjectEvent, Timestamp,
};

/// The newest schema version this build understands.
pub const SCHEMA_VERSION: i64 = crate::store::sqlite::SCHEMA_VERSION;

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

/// The consent ledger and event store.
///
/// Every decision about subjects is made here, once, above the storage
/// primitives of the crate-private storage seam: the backends only read and
/// write rows.
pub struct Ledger {
    store: Box<dyn Store>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger").field("location", &self.location()).finish()
    }
}

impl Ledger {
    /// Opens (creating if needed) the SQLite store at `path` and migrates its schema.
    ///
    /// # Errors
    /// [`Error::Store`] if SQLite fails; [`Error::SchemaTooNew`] if the file
    /// was written by a newer hush.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Ok(Ledger { store: Box::new(SqliteStore::open(path)?) })
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
            #[cfg(feature = "postgres")]
            StoreUrl::Postgres(url) => {
                Ok(Ledger { store: Box::new(crate::store::postgres::PgStore::connect(&url, options)?) })
            }
            #[cfg(not(feature = "postgres"))]
            StoreUrl::Postgres(url) => {
                let _ = options;
                Err(Error::Connect {
                    location: redact(&url),
                    message: "this build of hush-consent has no PostgreSQL support (cargo feature `postgres`)".into(),
                })
            }
        }
    }

    /// Another connection to the same store, with the same settings.
    ///
    /// # Errors
    /// As [`Ledger::connect`].
    pub fn reopen(&self) -> Result<Self> {
        Ok(Ledger { store: self.store.reopen()? })
    }

    /// The URL and settings of a PostgreSQL store, to open more connections like this one.
    pub(crate) fn postgres_settings(&self) -> Option<(String, ConnectOptions)> {
        self.store.postgres_settings()
    }

    /// Whether the connection is known to be unusable (a PostgreSQL
    /// connection the server closed); a pool then replaces it.
    pub fn is_broken(&self) -> bool {
        self.store.is_broken()
    }

    /// Where the store is, for messages (a file path, or a URL without its password).
    pub fn location(&self) -> String {
        self.store.location()
    }

    /// Whether the store is a server reached over the network: its calls
    /// block on I/O, so async code must run them off the reactor.
    pub fn is_remote(&self) -> bool {
        self.store.sqlite_path().is_none()
    }

    /// The SQLite file, for the SQLite backend.
    pub fn sqlite_path(&self) -> Option<&Path> {
        self.store.sqlite_path()
    }

    /// `result`, after telling the store what its error says about the connection.
    fn noted<T>(&self, result: Result<T>) -> Result<T> {
        if let Err(error) = &result {
            self.store.note_error(error);
        }
        result
    }

    /// The schema version the store is at.
    ///
    /// # Errors
    /// [`Error::Store`] if the store fails.
    pub fn schema_version(&self) -> Result<i64> {
        self.noted(self.store.schema_version())
    }

    /// Starts a batch of writes that commit together or not at all.
    ///
    /// Bulk imports use one batch for a whole file, so a failed import leaves
    /// the store exactly as it was.
    ///
    /// # Errors
    /// [`Error::Store`] if the write transaction cannot be started.
    pub fn batch(&mut self) -> Result<WriteBatch<'_>> {
        Ok(WriteBatch::new(self.store.batch()?))
    }

    /// Appends one consent decision and returns the stored record.
    ///
    /// # Errors
    /// [`Error::Vocabulary`] (its `InvalidField`) for bad text fields or an
    /// `effective_at` outside the rule's bounds (in the future beyond
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
        let records = self.noted(self.store.consent_records(subject, Some(purpose)))?;
        Ok(ConsentStatus::from_records(records, purpose, as_of))
    }

    /// The full consent history of a subject, in the order it was recorded.
    ///
    /// # Errors
    /// [`Error::Store`] if the store fails.
    pub fn history(&self, subject: &Pseudonym) -> Result<Vec<ConsentRecord>> {
        self.noted(self.store.consent_records(subject, None))
    }

    /// Every stored event of a subject, oldest first.
    ///
    /// # Errors
    /// [`Error::Store`] if the store fails.
    pub fn events_of(&self, subject: &Pseudonym) -> Result<Vec<Event>> {
        self.noted(self.store.events_of(subject))
    }

    /// The subject's `limit` most recent events, newest first (ties by
    /// arrival): what serving folds in, read without visiting older events.
    ///
    /// # Errors
    /// [`Error::Store`] if the store fails.
    pub fn recent_events(&self, subject: &Pseudonym, limit: usize) -> Result<Vec<Event>> {
        self.noted(self.store.recent_events(subject, limit))
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
        self.noted(self.store.gated_read(key, subject, purpose, as_of, limit))
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
        Ok(self.noted(self.store.suppression(subject))?.is_some())
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
        let result = self.store.delete_suppression(subject);
        self.noted(result)
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
        let mut batch = self.batch()?;
        let (consent_records_deleted, events_deleted, subject_was_known) = batch.erase(subject, now)?;
        batch.commit()?;
        let result = self.store.after_erasure();
        let wal_truncated = self.noted(result)?;
        tracing::info!(subject = %subject.short(), consent_records_deleted, events_deleted, "erased subject");
        Ok(ErasureReceipt {
            erased_at: now,
            consent_records_deleted,
            events_deleted,
            suppressed: true,
            wal_truncated,
            subject_was_known,
        })
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
        let (mut visit, mut outcome) = (visit, Visit::default());
        let streamed = self.store.for_each_event(&mut |event| outcome.step(visit(event)));
        outcome.finish(streamed)
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
        let (mut visit, mut outcome) = (visit, Visit::default());
        let streamed = self.store.for_each_consent_decision(purpose, &mut |s, d| outcome.step(visit(s, d)));
        outcome.finish(streamed)
    }

    /// Stores a new API key record (the secret itself is never stored).
    ///
    /// # Errors
    /// [`Error::Store`] if the store fails (e.g. a duplicate key id).
    pub fn insert_api_key(&mut self, key: &crate::keys::ApiKeyRecord, secret_sha256: &[u8; 32]) -> Result<()> {
        let result = self.store.insert_api_key(key, secret_sha256);
        self.noted(result)
    }

    /// The key record and secret digest of `key_id`, revoked or not.
    ///
    /// # Errors
    /// [`Error::Store`] if the store fails.
    pub fn api_key(&self, key_id: &str) -> Result<Option<(crate::keys::ApiKeyRecord, [u8; 32])>> {
        self.noted(self.store.api_key(key_id))
    }

    /// Every API key record, oldest first.
    ///
    /// # Errors
    /// [`Error::Store`] if the store fails.
    pub fn api_keys(&self) -> Result<Vec<crate::keys::ApiKeyRecord>> {
        self.noted(self.store.api_keys())
    }

    /// Revokes a key; returns whether an active key was revoked.
    ///
    /// # Errors
    /// [`Error::Store`] if the store fails.
    pub fn revoke_api_key(&mut self, key_id: &str, now: Timestamp) -> Result<bool> {
        let result = self.store.revoke_api_key(key_id, now);
        self.noted(result)
    }

    /// The whole suppression list.
    ///
    /// # Errors
    /// [`Error::Store`] if the store fails.
    pub fn suppression_tags(&self) -> Result<HashSet<SuppressionTag>> {
        self.noted(self.store.suppression_tags())
    }

    /// Counts of what the store holds.
    ///
    /// # Errors
    /// [`Error::Store`] if the store fails.
    pub fn stats(&self) -> Result<LedgerStats> {
        self.noted(self.store.stats())
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
        let result = self.store.upsert_items(items, now);
        self.noted(result)
    }

    /// The whole catalogue, by item id in byte order (empty if none was imported).
    ///
    /// # Errors
    /// [`Error::Store`] if the store fails; [`Error::Corrupt`] for
    /// attributes that are not a JSON object.
    pub fn catalogue_items(&self) -> Result<Vec<CatalogueItem>> {
        let mut items = self.noted(self.store.catalogue_items())?;
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
        let result = self.store.set_budget_cap(cap);
        self.noted(result)
    }

    /// The cap of a dataset and purpose, if one is set.
    ///
    /// # Errors
    /// [`Error::Store`] if the store fails.
    pub fn budget_cap(&self, dataset: &str, purpose: BudgetPurpose) -> Result<Option<BudgetCap>> {
        self.noted(self.store.budget_cap(dataset, purpose))
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
        let tx = self.store.budget_batch(&request.dataset, request.purpose)?;
        let mut batch = WriteBatch::new(tx);
        let run = batch.reserve_budget(request, now)?;
        batch.commit()?;
        Ok(run)
    }

    /// Marks a reserved run as spent on `model_id`.
    ///
    /// # Errors
    /// [`Error::InvalidField`] if no run has that key; [`Error::Store`] if the store fails.
    pub fn commit_budget(&mut self, run_key: &str, model_id: &str) -> Result<()> {
        let result = self.store.commit_budget(run_key, model_id);
        if !self.noted(result)? {
            return Err(Error::InvalidField { field: "run_key", message: format!("no budget run `{run_key}`") });
        }
        Ok(())
    }

    /// Gives a reserved run's budget back (its training failed before any
    /// release). A committed run cannot be cancelled: its model exists.
    /// Returns whether a reservation was removed.
    ///
    /// # Errors
    /// [`Error::Store`] if the store fails.
    pub fn cancel_budget(&mut self, run_key: &str) -> Result<bool> {
        let result = self.store.cancel_budget(run_key);
        self.noted(result)
    }

    /// What every dataset and purpose with a cap or a run has spent, sorted.
    ///
    /// # Errors
    /// [`Error::Store`] if the store fails.
    pub fn budget_spending(&self) -> Result<Vec<BudgetSpend>> {
        let mut spending = Vec::new();
        for (dataset, purpose) in self.noted(self.store.budget_keys())? {
            let totals = self.noted(self.store.budget_totals(&dataset, purpose))?;
            let cap = self.budget_cap(&dataset, purpose)?;
            spending.push(BudgetSpend {
                dataset,
                purpose,
                cap,
                spent_rho: totals.spent_rho,
                private_runs: totals.private_runs,
                non_private_runs: totals.non_private_runs,
            });
        }
        Ok(spending)
    }

    /// Every recorded run of a dataset (or of all datasets), oldest first.
    ///
    /// # Errors
    /// [`Error::Store`] if the store fails.
    pub fn budget_runs(&self, dataset: Option<&str>) -> Result<Vec<BudgetRun>> {
        self.noted(self.store.budget_runs(dataset))
    }
}

/// A caller's visitor that may fail, run by a store's streaming read that
/// stops when told: the visitor's first error stops the stream and is what
/// the caller gets back.
struct Visit<E> {
    failed: Option<E>,
}

impl<E> Default for Visit<E> {
    fn default() -> Self {
        Visit { failed: None }
    }
}

impl<E: From<Error>> Visit<E> {
    /// Whether the stream goes on after the visitor said `result`.
    fn step(&mut self, result: std::result::Result<(), E>) -> ControlFlow<()> {
        match result {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                self.failed = Some(e);
                ControlFlow::Break(())
            }
        }
    }

    /// The store's error, else the visitor's, else success.
    fn finish(self, streamed: Result<()>) -> std::result::Result<(), E> {
        streamed?;
        self.failed.map_or(Ok(()), Err)
    }
}

/// Writes that commit together or not at all; dropping it without
/// [`WriteBatch::commit`] rolls everything back.
///
/// This is where the rules of writing live, once for every backend: the
/// ingest gate, consent recording under suppression, the erasure sequence
/// and budget reservation. The store's transaction only reads and writes.
pub struct WriteBatch<'a> {
    tx: Box<dyn Tx + 'a>,
    /// Whether a subject had some purpose granted at a time (batches of one
    /// group are each decided at their own arrival time).
    allowed: HashMap<(Pseudonym, Timestamp), bool>,
    /// `Some(subject_was_known)` of each suppressed subject asked about, `None` for the others.
    suppression: HashMap<Pseudonym, Option<bool>>,
}

impl<'a> WriteBatch<'a> {
    fn new(tx: Box<dyn Tx + 'a>) -> Self {
        WriteBatch { tx, allowed: HashMap::new(), suppression: HashMap::new() }
    }

    /// Appends one consent decision. See [`Ledger::record_consent`].
    ///
    /// A suppressed subject's decision is refused unless it is an explicit
    /// grant through the API or the CLI after an erasure that found nothing
    /// held, which lifts the suppression.
    ///
    /// # Errors
    /// As [`Ledger::record_consent`].
    pub fn record_consent(
        &mut self,
        subject: &Pseudonym,
        change: &ConsentChange,
        recorded_at: Timestamp,
    ) -> Result<ConsentRecord> {
        change.validate_at(recorded_at)?;
        if let Some(entry) = self.suppression(subject)? {
            if !opt_in_lifts(change, Some(entry)) {
                return Err(Error::Suppressed);
            }
            self.tx.delete_suppression(subject)?;
            self.suppression.insert(*subject, None);
        }
        let seq = self.tx.insert_consent(subject, change, recorded_at)?;
        self.allowed.retain(|(s, _), _| s != subject);
        Ok(ConsentRecord {
            seq,
            purpose: change.purpose,
            granted: change.granted,
            effective_at: change.effective_at,
            recorded_at,
            source: change.source,
            notice_version: change.notice_version.clone(),
            proof_ref: change.proof_ref.clone(),
        })
    }

    /// Whether the ledger already holds this very decision of `subject`
    /// (same purpose, decision, `effective_at`, source, notice and proof):
    /// imports skip such a record rather than re-record an old decision.
    ///
    /// # Errors
    /// [`Error::Store`] if the store fails.
    pub fn holds_consent_record(&mut self, subject: &Pseudonym, change: &ConsentChange) -> Result<bool> {
        self.tx.holds_consent_record(subject, change)
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
        self.tx.prefetch(events)
    }

    /// Stores one event if its subject is not suppressed, has some purpose
    /// granted at `now`, and the store does not already hold it.
    ///
    /// # Errors
    /// [`Error::Store`] if the store fails.
    pub fn ingest_event(&mut self, event: &SubjectEvent, now: Timestamp) -> Result<IngestOutcome> {
        let subject = &event.subject;
        if self.suppression(subject)?.is_some() {
            return Ok(IngestOutcome::Suppressed);
        }
        if !self.allowed(subject, now)? {
            return Ok(IngestOutcome::NoConsent);
        }
        if let Some(outcome) = self.repeat_of(event)? {
            return Ok(outcome);
        }
        self.tx.insert_event(event)?;
        Ok(IngestOutcome::Stored)
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
        self.tx.count_received(batches, events)
    }

    /// Makes every write of the batch durable at once.
    ///
    /// # Errors
    /// [`Error::Store`] if the store fails; nothing is stored then.
    pub fn commit(self) -> Result<()> {
        self.tx.commit()
    }

    /// The subject's suppression entry, asked of the store once per batch.
    fn suppression(&mut self, subject: &Pseudonym) -> Result<Option<bool>> {
        if let Some(&entry) = self.suppression.get(subject) {
            return Ok(entry);
        }
        let entry = self.tx.suppression(subject)?;
        self.suppression.insert(*subject, entry);
        Ok(entry)
    }

    /// Whether `subject` had some purpose granted at `now`, under [`crate::rule`].
    fn allowed(&mut self, subject: &Pseudonym, now: Timestamp) -> Result<bool> {
        if let Some(&allowed) = self.allowed.get(&(*subject, now)) {
            return Ok(allowed);
        }
        let records = self.tx.consent_records(subject)?;
        let allowed = Purpose::ALL.iter().any(|&purpose| {
            let of_purpose: Vec<ConsentRecord> = records.iter().filter(|r| r.purpose == purpose).cloned().collect();
            ConsentStatus::from_records(of_purpose, purpose, now).is_granted()
        });
        self.allowed.insert((*subject, now), allowed);
        Ok(allowed)
    }

    /// `Duplicate` or `Conflict` if the store (this batch included) already
    /// holds the event: by its id when it has one (the same content is a
    /// duplicate, other content a conflict: the first one stands), else by
    /// its content among the subject's events without an id.
    fn repeat_of(&mut self, event: &SubjectEvent) -> Result<Option<IngestOutcome>> {
        let subject = &event.subject;
        Ok(match &event.event_id {
            Some(id) => self.tx.event_with_id(subject, id)?.map(|held| {
                if held == event.event {
                    IngestOutcome::Duplicate
                } else {
                    IngestOutcome::Conflict
                }
            }),
            None => self.tx.holds_event_without_id(subject, &event.event)?.then_some(IngestOutcome::Duplicate),
        })
    }

    /// The erasure sequence: delete the subject's consent records and
    /// events, then leave a suppression entry (saying whether hush held
    /// anything of them or had erased them before) and a log entry of
    /// counts only. Returns (consent records, events, subject was known).
    fn erase(&mut self, subject: &Pseudonym, now: Timestamp) -> Result<(u64, u64, bool)> {
        let (consent_records, events) = self.tx.delete_subject(subject)?;
        let known = consent_records > 0 || events > 0 || self.suppression(subject)? == Some(true);
        self.tx.suppress(subject, now, known)?;
        self.tx.log_erasure(now, consent_records, events)?;
        self.suppression.insert(*subject, Some(known));
        self.allowed.retain(|(s, _), _| s != subject);
        Ok((consent_records, events, known))
    }

    /// Budget reservation: a run already recorded under its key is returned
    /// unchanged; otherwise a private run must fit under its cap, and the
    /// run is recorded as reserved. The transaction
    /// ([`Store::budget_batch`]) serializes the reservations of one budget,
    /// so the check and the insert are one step for each of them.
    fn reserve_budget(&mut self, request: &BudgetRequest, now: Timestamp) -> Result<BudgetRun> {
        if let Some(existing) = self.tx.budget_run(&request.run_key)? {
            return Ok(existing);
        }
        if request.guarantee.is_some() {
            let spent = self.tx.budget_totals(&request.dataset, request.purpose)?.spent_rho;
            let cap = self.tx.budget_cap(&request.dataset, request.purpose)?;
            crate::budget::check_fits(request, spent, cap.as_ref())?;
        }
        self.tx.insert_budget_run(request, now)?;
        self.tx.budget_run(&request.run_key)?.ok_or_else(|| Error::Corrupt {
            location: "budget_runs".into(),
            message: format!("the run `{}` was not found right after it was recorded", request.run_key),
        })
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
