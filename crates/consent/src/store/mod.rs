//! The storage seam: what a backend must do, and nothing it may decide.
//!
//! [`Store`] and [`Tx`] are storage primitives (read these rows, insert that
//! one), in the spirit of tantivy's `Directory` and gorse's `Database`. Every
//! decision is made once, above them, in [`crate::Ledger`] and
//! [`crate::WriteBatch`]: whether an event may be stored (suppression, then
//! consent at arrival, then repeats), whether an opt-in lifts a suppression,
//! what an erasure deletes and in which order, whether a training run fits
//! under its budget cap, and the consent status itself ([`crate::rule`]).
//! A backend that answers these primitives truthfully inherits all of it.
//!
//! The seam is crate-private on purpose: its primitives bypass the policy
//! (an `insert_event` stores without asking about consent), so only the
//! ledger may call them. The backends are [`sqlite`] (embedded, the default)
//! and [`postgres`] (for several serving replicas, behind the `postgres`
//! cargo feature). The consent tests' `on_both_backends!` suite is the
//! seam's conformance test: every law of the ledger is checked on each.

use std::collections::HashSet;
use std::ops::ControlFlow;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::budget::{BudgetCap, BudgetPurpose, BudgetRequest, BudgetRun};
use crate::catalogue::{CatalogueItem, ItemUpsertReport};
use crate::connect::ConnectOptions;
use crate::keys::{ApiKeyRecord, PresentedKey};
use crate::ledger::{ConsentStatus, GatedRead, LedgerStats};
use crate::pseudonym::SuppressionTag;
use crate::{ConsentChange, ConsentRecord, Decision, Event, Pseudonym, Purpose, Result, SubjectEvent, Timestamp};

mod decode;
#[cfg(feature = "postgres")]
pub(crate) mod postgres;
pub(crate) mod sqlite;

/// The 64-bit index key of a subject's rows, the same on every backend.
///
/// Rows are found through this one-way digest of the pseudonym rather than
/// through an index on the pseudonym itself: interior pages of a B-tree
/// index keep copies of keys deleted from its leaves, and those copies must
/// not be the pseudonym.
pub(crate) fn subject_key(subject: &Pseudonym) -> i64 {
    let digest = Sha256::new_with_prefix(b"hush/row-key/v1\0").chain_update(subject.as_bytes()).finalize();
    i64::from_le_bytes(digest[..8].try_into().expect("a SHA-256 digest has 32 bytes"))
}

/// Totals of one dataset and purpose in the budget ledger.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct RunTotals {
    /// Σρ of the private runs, reserved or committed.
    pub spent_rho: f64,
    /// Private runs.
    pub private_runs: u64,
    /// Non-private runs.
    pub non_private_runs: u64,
}

/// One store: a connection to an SQLite file or a PostgreSQL server.
///
/// Reads take `&self`; a backend whose driver needs `&mut` to read keeps its
/// connection in a `RefCell` (a `Ledger` is used by one thread at a time).
pub(crate) trait Store: Send {
    /// Where the store is, for messages: a file path, or a URL without its password.
    fn location(&self) -> String;

    /// The SQLite file, for the SQLite backend.
    fn sqlite_path(&self) -> Option<&Path> {
        None
    }

    /// The URL and settings of a PostgreSQL store, to open more connections like this one.
    fn postgres_settings(&self) -> Option<(String, ConnectOptions)> {
        None
    }

    /// Another connection to the same store, with the same settings.
    fn reopen(&self) -> Result<Box<dyn Store>>;

    /// Whether the connection is known to be unusable.
    fn is_broken(&self) -> bool {
        false
    }

    /// The schema version the store is at.
    fn schema_version(&self) -> Result<i64>;

    /// Starts a write transaction. A `Tx` is serialized with every other
    /// `Tx` on the store, across processes and replicas (SQLite: `BEGIN
    /// IMMEDIATE`; PostgreSQL: the writers' advisory lock), so what it reads
    /// stays true until it commits.
    fn batch(&mut self) -> Result<Box<dyn Tx + '_>>;

    /// Starts the write transaction of a budget reservation of `dataset`
    /// and `purpose`, serialized with every other reservation of that
    /// budget. By default an ordinary [`Store::batch`].
    fn budget_batch(&mut self, _dataset: &str, _purpose: BudgetPurpose) -> Result<Box<dyn Tx + '_>> {
        self.batch()
    }

    /// The subject's consent records, of one purpose or of all, in the order they were recorded.
    fn consent_records(&self, subject: &Pseudonym, purpose: Option<Purpose>) -> Result<Vec<ConsentRecord>>;

    /// Every stored event of a subject, oldest first (ties by arrival).
    fn events_of(&self, subject: &Pseudonym) -> Result<Vec<Event>>;

    /// The subject's `limit` most recent events, newest first (ties by arrival).
    fn recent_events(&self, subject: &Pseudonym, limit: usize) -> Result<Vec<Event>>;

    /// `Some(subject_was_known)` of the subject's suppression entry, if they are suppressed.
    fn suppression(&self, subject: &Pseudonym) -> Result<Option<bool>>;

    /// Deletes the subject's suppression entry; whether there was one.
    fn delete_suppression(&mut self, subject: &Pseudonym) -> Result<bool>;

    /// What a personalized request needs: see [`crate::Ledger::gated_read`].
    /// This composition of the primitives is the policy; a backend may
    /// override it only to read the same rows in fewer round trips.
    fn gated_read(
        &self,
        key: Option<(&PresentedKey, &str)>,
        subject: &Pseudonym,
        purpose: Purpose,
        as_of: Timestamp,
        limit: usize,
    ) -> Result<GatedRead> {
        if let Some((presented, scope)) = key {
            if let Err(why) = crate::keys::verify(self.api_key(&presented.key_id)?, presented, scope) {
                return Ok(GatedRead::KeyRefused(why));
            }
        }
        let status = ConsentStatus::from_records(self.consent_records(subject, Some(purpose))?, purpose, as_of);
        if !status.is_granted() {
            return Ok(GatedRead::NotGranted(status));
        }
        Ok(GatedRead::Granted { recent: self.recent_events(subject, limit)?, status })
    }

    /// Calls `visit` for every stored event in ingestion order, streaming,
    /// until it says to stop.
    fn for_each_event(&self, visit: &mut dyn FnMut(SubjectEvent) -> ControlFlow<()>) -> Result<()>;

    /// Calls `visit` for every decision on `purpose`, in ledger order, streaming, until it says to stop.
    fn for_each_consent_decision(
        &self,
        purpose: Purpose,
        visit: &mut dyn FnMut(Pseudonym, Decision) -> ControlFlow<()>,
    ) -> Result<()>;

    /// Stores a new API key record and its secret's digest.
    fn insert_api_key(&mut self, key: &ApiKeyRecord, secret_sha256: &[u8; 32]) -> Result<()>;

    /// The key record and secret digest of `key_id`, revoked or not.
    fn api_key(&self, key_id: &str) -> Result<Option<(ApiKeyRecord, [u8; 32])>>;

    /// Every API key record, oldest first.
    fn api_keys(&self) -> Result<Vec<ApiKeyRecord>>;

    /// Revokes a key; whether an active key was revoked.
    fn revoke_api_key(&mut self, key_id: &str, now: Timestamp) -> Result<bool>;

    /// The whole suppression list.
    fn suppression_tags(&self) -> Result<HashSet<SuppressionTag>>;

    /// Counts of what the store holds.
    fn stats(&self) -> Result<LedgerStats>;

    /// Upserts already validated catalogue items by id in one transaction.
    fn upsert_items(&mut self, items: &[CatalogueItem], now: Timestamp) -> Result<ItemUpsertReport>;

    /// The whole catalogue.
    fn catalogue_items(&self) -> Result<Vec<CatalogueItem>>;

    /// Sets (or replaces) an already checked cap.
    fn set_budget_cap(&mut self, cap: &BudgetCap) -> Result<()>;

    /// The cap of a dataset and purpose, if one is set.
    fn budget_cap(&self, dataset: &str, purpose: BudgetPurpose) -> Result<Option<BudgetCap>>;

    /// Every (dataset, purpose) with a cap or a run, sorted.
    fn budget_keys(&self) -> Result<Vec<(String, BudgetPurpose)>>;

    /// The totals of a dataset and purpose.
    fn budget_totals(&self, dataset: &str, purpose: BudgetPurpose) -> Result<RunTotals>;

    /// Marks a run committed to `model_id`; whether a run had that key.
    fn commit_budget(&mut self, run_key: &str, model_id: &str) -> Result<bool>;

    /// Deletes a reserved (not committed) run; whether one was deleted.
    fn cancel_budget(&mut self, run_key: &str) -> Result<bool>;

    /// Every recorded run of a dataset (or of all datasets), oldest first.
    fn budget_runs(&self, dataset: Option<&str>) -> Result<Vec<BudgetRun>>;

    /// Removes what an erasure leaves outside the tables once it committed
    /// (SQLite: the write-ahead log's old copies of the rows); whether it
    /// did. Nothing to do elsewhere.
    fn after_erasure(&mut self) -> Result<bool> {
        Ok(false)
    }

    /// Remembers, from an error a call returned, whether the connection is
    /// gone, so that a pool or a server replaces it.
    fn note_error(&self, _error: &crate::Error) {}
}

/// The primitives of one write transaction. Dropped without
/// [`Tx::commit`], it rolls everything back.
pub(crate) trait Tx {
    /// Reads at once what deciding about `events` will ask, so a backend
    /// whose reads are round trips answers the questions after it from memory.
    fn prefetch(&mut self, _events: &[SubjectEvent]) -> Result<()> {
        Ok(())
    }

    /// `Some(subject_was_known)` of the subject's suppression entry, if they are suppressed.
    fn suppression(&mut self, subject: &Pseudonym) -> Result<Option<bool>>;

    /// Deletes the subject's suppression entry.
    fn delete_suppression(&mut self, subject: &Pseudonym) -> Result<()>;

    /// Adds (or keeps, or-ing `subject_was_known`) the subject's suppression entry.
    fn suppress(&mut self, subject: &Pseudonym, erased_at: Timestamp, subject_was_known: bool) -> Result<()>;

    /// Every consent record of the subject, any purpose, any order.
    fn consent_records(&mut self, subject: &Pseudonym) -> Result<Vec<ConsentRecord>>;

    /// Whether this very decision (same purpose, decision, effective time,
    /// source, notice and proof) is held.
    fn holds_consent_record(&mut self, subject: &Pseudonym, change: &ConsentChange) -> Result<bool>;

    /// Appends a consent record; its sequence number.
    fn insert_consent(&mut self, subject: &Pseudonym, change: &ConsentChange, recorded_at: Timestamp) -> Result<i64>;

    /// The held event of the subject with this source event id, if any
    /// (this transaction's inserts included).
    fn event_with_id(&mut self, subject: &Pseudonym, event_id: &str) -> Result<Option<Event>>;

    /// Whether an event of the subject without an id and with this content
    /// is held (this transaction's inserts included).
    fn holds_event_without_id(&mut self, subject: &Pseudonym, event: &Event) -> Result<bool>;

    /// Stores an event.
    fn insert_event(&mut self, event: &SubjectEvent) -> Result<()>;

    /// Deletes every consent record and event of the subject; how many of each.
    fn delete_subject(&mut self, subject: &Pseudonym) -> Result<(u64, u64)>;

    /// Appends an entry to the erasure log (counts only, no identity).
    fn log_erasure(&mut self, erased_at: Timestamp, consent_records: u64, events: u64) -> Result<()>;

    /// The run recorded under `run_key`, if any.
    fn budget_run(&mut self, run_key: &str) -> Result<Option<BudgetRun>>;

    /// The totals of a dataset and purpose.
    fn budget_totals(&mut self, dataset: &str, purpose: BudgetPurpose) -> Result<RunTotals>;

    /// The cap of a dataset and purpose, if one is set.
    fn budget_cap(&mut self, dataset: &str, purpose: BudgetPurpose) -> Result<Option<BudgetCap>>;

    /// Records a reserved run.
    fn insert_budget_run(&mut self, request: &BudgetRequest, now: Timestamp) -> Result<()>;

    /// Adds to the count of ingested batches and events.
    fn count_received(&mut self, batches: u64, events: u64) -> Result<()>;

    /// Makes every write of the transaction durable at once.
    fn commit(self: Box<Self>) -> Result<()>;
}
