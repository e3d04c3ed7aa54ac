//! The one error type of this crate.

use std::path::PathBuf;

/// Result alias used throughout `hush-features`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while extracting, saving or loading features.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A problem in the ledger.
    #[error(transparent)]
    Consent(#[from] hush_consent::Error),
    /// An input file that cannot be read: I/O, a header that does not fit
    /// its format, or (in strict mode) the first malformed row.
    #[error(transparent)]
    Formats(#[from] hush_formats::Error),
    /// A setting outside its allowed range.
    #[error("invalid setting `{field}`: {message}")]
    InvalidParam {
        /// The setting's name as in the config file and CLI.
        field: &'static str,
        /// What is allowed.
        message: String,
    },
    /// A config file that cannot be read or parsed.
    #[error("config {path}: {message}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// What was wrong, with line and column where known.
        message: String,
    },
    /// Too many malformed rows in the inputs.
    #[error(
        "{bad} of {total} input rows are malformed, more than the allowed fraction {allowed}; \
         no feature set was written. First error: {first}"
    )]
    TooManyMalformed {
        /// Malformed rows.
        bad: u64,
        /// Rows read.
        total: u64,
        /// The allowed fraction.
        allowed: f64,
        /// The first malformed row.
        first: Box<hush_vocab::RowError>,
    },
    /// More input than the compact in-memory layout can index.
    #[error("more than {max} input events; split the input into snapshots")]
    TooManyEvents {
        /// The limit.
        max: u64,
    },
    /// A versioned binary file that cannot be used.
    #[error(transparent)]
    Envelope(#[from] crate::envelope::EnvelopeError),
    /// Encoding or decoding the payload of a binary file failed.
    #[error("{path}: {message}")]
    Codec {
        /// The file.
        path: PathBuf,
        /// The codec's message.
        message: String,
    },
    /// Writing an output file failed.
    #[error("writing {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}
