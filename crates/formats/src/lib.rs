//! Readers of the files hush imports: storefront events (MovieLens CSV,
//! `u.data` and `::` files, any CSV through a column mapping, JSONL,
//! Parquet), consent records (CSV, JSONL, Parquet) and catalogues (CSV,
//! JSONL).
//!
//! Every event and consent reader yields one result per row. A row that
//! cannot be read is a [`RowError`] naming file, line and field, and reading
//! continues with the next row; problems that make the whole file unreadable
//! (I/O, a header that belongs to another format) are fatal [`Error`]s.
//! Raw subject ids come out as the file has them: the caller pseudonymizes
//! them before anything is stored.
//!
//! It is its own crate because reading files is a job of its own: the
//! ledger's importer (`hush-consent`), the extractor (`hush-features`), the
//! offline flows and the binary all read through it, and it needs none of
//! the ledger's stores (SQLite, PostgreSQL) to do so.

pub mod catalogue;
mod error;
mod parquet_table;
mod readers;

pub use error::{Error, Result};
pub use hush_vocab::RowError;
pub use readers::{
    ConsentFormat, ConsentReader, CsvMapping, EventFormat, EventReader, FieldContext, RawConsent, RawEvent,
    RawEventRef, RawFields,
};
