//! The one error type of this crate.

use std::path::PathBuf;

/// Result alias of `hush-mf`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong in training, evaluation and model files.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting outside its allowed range.
    #[error("invalid setting `{field}`: {message}")]
    InvalidParam {
        /// The setting's name.
        field: &'static str,
        /// What is allowed.
        message: String,
    },
    /// Privacy accounting failed.
    #[error(transparent)]
    Privacy(#[from] hush_privacy::Error),
    /// A feature set or envelope problem.
    #[error(transparent)]
    Features(#[from] hush_features::Error),
    /// A model file that cannot be used.
    #[error(transparent)]
    Envelope(#[from] hush_features::envelope::EnvelopeError),
    /// A model file whose payload does not decode or is inconsistent.
    #[error("{path}: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Training data that cannot be trained on.
    #[error("training data: {0}")]
    Data(String),
}
