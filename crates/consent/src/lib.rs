//! The consent ledger and event store of hush.
//!
//! Everything hush knows about a person lives here, keyed only by a
//! [`Pseudonym`]: an HMAC-SHA256 of their external identifier under a secret
//! [`PseudonymKey`]. The raw identifier is turned into a pseudonym at the edge
//! (an input row, a CLI argument) and is never stored or logged.
//!
//! - [`Ledger`] is the consent ledger and event store: the append-only
//!   consent history, the event store, erasure with suppression, and export.
//!   Its rules (the ingest gate, suppression, the erasure sequence, budget
//!   reservation) are written once, above a crate-private storage seam with
//!   two backends: an embedded SQLite file (the default) and PostgreSQL for
//!   several replicas (the `postgres` cargo feature, on by default).
//! - [`import`] feeds consent and event files, read by `hush-formats`, into
//!   the ledger: one transaction per file, per-row errors.
//! - [`pool`] keeps several connections to one store for a server,
//!   [`PgReader`] sends a server's per-request read to PostgreSQL without
//!   blocking, and [`connect`] reads a PostgreSQL URL's TLS settings.
//! - [`catalogue`] is the storefront's item catalogue, the public item
//!   universe, stored beside the ledger.
//! - [`budget`] is the privacy budget ledger: lifetime caps per dataset and
//!   every DP training run that spent from them.
//!
//! The words the ledger is written in — [`Purpose`], [`ConsentRecord`],
//! [`Event`], [`Timestamp`], [`Pseudonym`], the consent [`rule`] — live in
//! `hush-vocab`, which crates that need only them depend on without building
//! this crate's SQLite and PostgreSQL stores. They are re-exported here under
//! their old paths (`hush_consent::Timestamp`, `hush_consent::rule`, ...).

pub mod budget;
pub mod catalogue;
pub mod connect;
mod error;
pub mod import;
pub mod keys;
pub mod ledger;
pub mod pool;
mod store;

pub use hush_vocab::{event, files, item, pseudonym, record, rule, subject, time};

pub use budget::{BudgetCap, BudgetPurpose, BudgetRequest, BudgetRun, BudgetSpend, RunGuarantee, RunState};
pub use catalogue::{CatalogueItem, ItemUpsertReport};
pub use connect::{ConnectOptions, SslMode};
pub use error::{Error, Result, StoreError};
pub use hush_vocab::{
    ConsentChange, ConsentRecord, ConsentSource, Decision, Event, EventKind, ItemId, Pseudonym, PseudonymKey, Purpose,
    RowError, SubjectEvent, SubjectId, SuppressionTag, Timestamp, KEY_ENV_VAR, MAX_CLOCK_SKEW_MS,
};
pub use ledger::{
    ConsentState, ConsentStatus, ErasureReceipt, GatedRead, IngestOutcome, IngestReport, Ledger, LedgerStats, StoreUrl,
    SubjectExport, WriteBatch,
};
pub use pool::{LedgerPool, PoolState, PooledLedger};
#[cfg(feature = "postgres")]
pub use store::postgres::reader::{PgReader, PgReaderState, PgReaderTarget};
