//! The one error type of this crate.

/// Result alias of `hush-audit`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong in an audit.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting or argument outside its allowed range.
    #[error("invalid audit setting `{field}`: {message}")]
    InvalidParam {
        /// The setting's name.
        field: &'static str,
        /// What is allowed.
        message: String,
    },
    /// A canary item id that the feature set already holds.
    #[error("canary item id `{0}` is already an item of the feature set; canary items must be new")]
    ItemCollision(String),
    /// A membership score that is not a number.
    #[error("the membership score of canary {canary} is not a number")]
    NotANumber {
        /// The canary's position.
        canary: usize,
    },
    /// Arrays that must match in length do not.
    #[error("{what}: expected {expected} entries, got {got}")]
    LengthMismatch {
        /// Which array.
        what: &'static str,
        /// The length needed.
        expected: usize,
        /// The length given.
        got: usize,
    },
}

/// An [`Error::InvalidParam`] for `field`.
pub(crate) fn invalid<T>(field: &'static str, message: impl Into<String>) -> Result<T> {
    Err(Error::InvalidParam { field, message: message.into() })
}
