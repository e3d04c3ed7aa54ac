//! The one error type of this crate, and the per-row error of the file readers.

use std::fmt;

/// Result alias used throughout `hush-vocab`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A problem with one row of an input file: where it is and what was expected.
///
/// The message never contains a subject identifier, only its position.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RowError {
    /// The file the row came from (or a label such as `<stdin>`).
    pub path: String,
    /// 1-based line number of the row.
    pub line: u64,
    /// The field that failed, when one field is to blame.
    pub field: Option<String>,
    /// What was wrong and what form was expected.
    pub message: String,
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{}:{}: field `{}`: {}", self.path, self.line, field, self.message),
            None => write!(f, "{}:{}: {}", self.path, self.line, self.message),
        }
    }
}

impl std::error::Error for RowError {}

/// A value that is not a valid word of the vocabulary: a purpose, a source,
/// an event kind, a time, an id or a key that does not parse or breaks a
/// documented rule.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A purpose name that hush does not know.
    #[error("unknown purpose `{0}`: expected one of personalization, training")]
    UnknownPurpose(String),
    /// A consent source that hush does not know.
    #[error("unknown consent source `{0}`: expected one of api, cli, import")]
    UnknownSource(String),
    /// An event kind that is not a valid name.
    #[error(
        "invalid event kind `{0}`: expected view, cart, purchase, rating, or a lowercase name of \
         letters, digits and '_' (1 to 32 characters)"
    )]
    InvalidEventKind(String),
    /// A timestamp in neither accepted form.
    #[error("invalid timestamp `{0}`: expected RFC 3339 (e.g. 2026-01-31T12:00:00Z) or integer unix seconds")]
    InvalidTimestamp(String),
    /// A field value that breaks a documented rule (length, characters, range).
    #[error("invalid {field}: {message}")]
    InvalidField {
        /// The field's name.
        field: &'static str,
        /// What was wrong and what is allowed.
        message: String,
    },
    /// The pseudonymization key could not be read, parsed or created.
    #[error("pseudonymization key {location}: {message}")]
    Key {
        /// Where the key was looked for (a file path or the environment variable).
        location: String,
        /// What was wrong.
        message: String,
    },
}
