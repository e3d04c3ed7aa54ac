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
//! - [`formats`] parses the file formats hush imports (consent records and
//!   storefront events), with per-row errors that name file, line and field.
//! - [`rule`] is the consent rule: the latest recorded decision wins.
//! - [`pool`] keeps several connections to one store for a server,
//!   [`PgReader`] sends a server's per-request read to PostgreSQL without
//!   blocking, and [`connect`] reads a PostgreSQL URL's TLS settings.
//! - [`catalogue`] is the storefront's item catalogue, the public item
//!   universe, imported from CSV or JSONL and stored beside the ledger.
//! - [`budget`] is the privacy budget ledger: lifetime caps per dataset and
//!   every DP training run that spent from them.
//! - [`Purpose`], [`ConsentRecord`], [`Event`] and [`Timestamp`] are the shared
//!   vocabulary the other hush crates build on.

pub mod budget;
pub mod catalogue;
pub mod connect;
mod error;
pub mod event;
pub mod files;
pub mod formats;
pub mod import;
pub mod keys;
pub mod ledger;
mod parquet_table;
pub mod pool;
pub mod pseudonym;
pub mod record;
pub mod rule;
mod store;
pub mod subject;
pub mod time;

pub use budget::{BudgetCap, BudgetPurpose, BudgetRequest, BudgetRun, BudgetSpend, RunGuarantee, RunState};
pub use catalogue::{CatalogueFormat, CatalogueItem, ItemUpsertReport};
pub use connect::{ConnectOptions, SslMode};
pub use error::{Error, Result, RowError, StoreError};
pub use event::{Event, EventKind, SubjectEvent};
pub use ledger::{
    ConsentState, ConsentStatus, ErasureReceipt, GatedRead, IngestOutcome, IngestReport, Ledger, LedgerStats, StoreUrl,
    SubjectExport, WriteBatch,
};
pub use pool::{LedgerPool, PoolState, PooledLedger};
pub use pseudonym::{Pseudonym, PseudonymKey, SuppressionTag, KEY_ENV_VAR};
pub use record::{ConsentChange, ConsentRecord, ConsentSource, Purpose};
pub use rule::{Decision, MAX_CLOCK_SKEW_MS};
#[cfg(feature = "postgres")]
pub use store::postgres::reader::{PgReader, PgReaderState, PgReaderTarget};
pub use subject::SubjectId;
pub use time::Timestamp;
