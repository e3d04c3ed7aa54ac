//! The words every hush crate shares.
//!
//! Points in time ([`Timestamp`]), storefront events ([`Event`],
//! [`EventKind`]), subject and item ids ([`SubjectId`], [`ItemId`]), keyed
//! pseudonyms ([`Pseudonym`], [`PseudonymKey`]), consent purposes and
//! records ([`Purpose`], [`ConsentRecord`]) with the consent [`rule`] that
//! decides between them, catalogue items ([`CatalogueItem`]), the per-row
//! error of the file readers ([`RowError`]), and the two ways hush writes
//! files: owner-only and atomically ([`files`]), and in a checksummed
//! [`envelope`].
//!
//! It is its own crate so that a crate which only speaks these words (the
//! synthetic data generator) does not build the consent ledger's SQLite,
//! PostgreSQL and tokio to do so. The file readers (`hush-formats`) and the
//! ledger (`hush-consent`) build on it; the ledger re-exports it under its
//! old paths (`hush_consent::Timestamp`, `hush_consent::rule`, ...).
//!
//! - [`time`]: [`Timestamp`], unix milliseconds, UTC.
//! - [`event`]: what a subject did with an item, and when.
//! - [`subject`] and [`item`]: external ids, checked once at the edge.
//! - [`pseudonym`]: the only form in which hush holds a subject's identity.
//! - [`record`] and [`rule`]: consent decisions and which one is in force.
//! - [`catalogue`]: the storefront's items.
//! - [`files`] and [`envelope`]: writing files safely.

pub mod catalogue;
pub mod envelope;
mod error;
pub mod event;
pub mod files;
pub mod item;
pub mod pseudonym;
pub mod record;
pub mod rule;
pub mod subject;
pub mod time;

pub use catalogue::CatalogueItem;
pub use error::{Error, Result, RowError};
pub use event::{Event, EventKind, SubjectEvent};
pub use item::ItemId;
pub use pseudonym::{Pseudonym, PseudonymKey, SuppressionTag, KEY_ENV_VAR};
pub use record::{ConsentChange, ConsentRecord, ConsentSource, Purpose};
pub use rule::{ConsentState, Decision, MAX_CLOCK_SKEW_MS};
pub use subject::SubjectId;
pub use time::Timestamp;
