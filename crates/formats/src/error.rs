//! The one error type of this crate: what makes a whole file unreadable.
//! A single bad row is a [`RowError`], reported and skipped by the reader.

use std::path::PathBuf;

use hush_vocab::RowError;

/// Result alias used throughout `hush-formats`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can stop a file from being read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the file failed.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A header that does not fit the format, a file that is not Parquet,
    /// or a malformed catalogue row (a catalogue is read all or nothing).
    #[error("{0}")]
    Row(RowError),
    /// A setting that breaks a documented rule (a format name, a column
    /// mapping), or a catalogue without items.
    #[error("invalid {field}: {message}")]
    InvalidField {
        /// The field's name.
        field: &'static str,
        /// What was wrong and what is allowed.
        message: String,
    },
    /// A value that is not a word of the shared vocabulary (the default
    /// event kind of a column mapping).
    #[error(transparent)]
    Vocabulary(#[from] hush_vocab::Error),
}
