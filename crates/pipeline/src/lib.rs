//! The offline flows of hush, shared by the `hush` command line and the
//! Python package: reading a config, reaching a store and its key,
//! consent-filtered extraction from files or in-memory rows, the budget claim
//! every training run makes, DP and non-private training, evaluation, sweeps,
//! and offline recommendations from a model file.
//!
//! Nothing here prints: each flow returns what it made (models, reports,
//! metrics as JSON values), and the callers decide how to show it.

pub mod budget;
pub mod config;
pub mod extract;
pub mod learn;
pub mod store;
pub mod sweep;
pub mod tables;

/// Everything that can go wrong in an offline flow.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The ledger: its store, its API keys, an import into it.
    #[error(transparent)]
    Consent(#[from] hush_consent::Error),
    /// An input file or in-memory rows that cannot be read: I/O, a header or
    /// column that does not fit, or (in strict mode) a malformed row.
    #[error(transparent)]
    Formats(#[from] hush_formats::Error),
    /// The pseudonymization key, or a value that is not a word of the
    /// shared vocabulary (a time, a purpose, an event kind).
    #[error(transparent)]
    Vocabulary(#[from] hush_vocab::Error),
    /// Extraction settings or feature set files.
    #[error(transparent)]
    Features(#[from] hush_features::Error),
    /// Training settings, training, or a model file.
    #[error(transparent)]
    Mf(#[from] hush_mf::Error),
    /// A privacy budget that is not a budget.
    #[error(transparent)]
    Privacy(#[from] hush_privacy::Error),
    /// Model cards or sweep reports.
    #[error(transparent)]
    Report(#[from] hush_report::Error),
    /// A request the flow cannot run: names the setting and what is allowed.
    #[error("{0}")]
    Invalid(String),
    /// The store's privacy budget refuses the run (with the numbers).
    #[error("{0}")]
    Budget(String),
    /// The store or its key is missing.
    #[error("{0}")]
    Store(String),
    /// A file that could not be read or written: which, then the system's reason.
    #[error("{context}")]
    Io {
        /// What was being done, with the path.
        context: String,
        /// The system's reason.
        #[source]
        source: std::io::Error,
    },
    /// Text that is not what it should be (a report, a JSON value).
    #[error("{context}")]
    Format {
        /// What was being read or written.
        context: String,
        /// The parser's reason.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// What kind of failure an [`Error`] is, for callers that map errors to
/// their own classes (the Python package's exception hierarchy).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad input: a malformed row, a setting out of range, a config file.
    Input,
    /// The privacy budget refuses the run.
    Budget,
    /// The store or its key is missing or unusable.
    Store,
    /// A model file that cannot be read, or a model that does not fit the data.
    Model,
    /// A file that could not be read or written.
    Io,
}

impl Error {
    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Budget(_) => ErrorKind::Budget,
            Error::Store(_) => ErrorKind::Store,
            Error::Io { .. } => ErrorKind::Io,
            Error::Vocabulary(e) => vocabulary_kind(e),
            Error::Consent(e) | Error::Features(hush_features::Error::Consent(e)) => consent_kind(e),
            Error::Formats(e) | Error::Features(hush_features::Error::Formats(e)) => formats_kind(e),
            Error::Features(hush_features::Error::Io { .. }) => ErrorKind::Io,
            Error::Mf(hush_mf::Error::InvalidParam { .. } | hush_mf::Error::Privacy(_)) => ErrorKind::Input,
            Error::Mf(hush_mf::Error::Features(hush_features::Error::Consent(e))) => consent_kind(e),
            Error::Mf(hush_mf::Error::Features(hush_features::Error::Formats(e))) => formats_kind(e),
            Error::Mf(hush_mf::Error::Features(hush_features::Error::Io { .. })) => ErrorKind::Io,
            Error::Mf(_) => ErrorKind::Model,
            _ => ErrorKind::Input,
        }
    }

    /// The error and its causes on one line, each cause once: the message
    /// the `hush` command prints after `error: `.
    pub fn message(&self) -> String {
        message_of(self)
    }
}

fn consent_kind(e: &hush_consent::Error) -> ErrorKind {
    use hush_consent::Error as E;
    match e {
        E::Vocabulary(e) => vocabulary_kind(e),
        E::BudgetExceeded { .. } => ErrorKind::Budget,
        E::Io { .. } => ErrorKind::Io,
        E::Key { .. }
        | E::Store { .. }
        | E::Connect { .. }
        | E::CleartextRefused { .. }
        | E::PoolExhausted { .. }
        | E::Corrupt { .. }
        | E::SchemaTooNew { .. } => ErrorKind::Store,
        _ => ErrorKind::Input,
    }
}

fn formats_kind(e: &hush_formats::Error) -> ErrorKind {
    match e {
        hush_formats::Error::Io { .. } => ErrorKind::Io,
        hush_formats::Error::Vocabulary(e) => vocabulary_kind(e),
        hush_formats::Error::Row(_) | hush_formats::Error::InvalidField { .. } => ErrorKind::Input,
    }
}

fn vocabulary_kind(e: &hush_vocab::Error) -> ErrorKind {
    match e {
        hush_vocab::Error::Key { .. } => ErrorKind::Store,
        _ => ErrorKind::Input,
    }
}

/// The causes of `error` joined with `: `; a cause whose text already ends
/// the line is not repeated (library errors name their cause in their own
/// message, as in `reading x.csv: No such file`).
pub fn message_of(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = String::new();
    let mut cause = Some(error);
    while let Some(current) = cause {
        let text = current.to_string();
        if !line.ends_with(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
        cause = current.source();
    }
    line
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An I/O error with what was being done.
pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io_error() -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::NotFound, "No such file")
    }

    fn key_error() -> hush_vocab::Error {
        hush_vocab::Error::Key { location: "hush.key".into(), message: "bad".into() }
    }

    #[test]
    fn wrapped_vocabulary_and_reader_errors_keep_their_kind() {
        let unreadable = || hush_formats::Error::Io { path: "e.csv".into(), source: io_error() };
        let row = || {
            hush_formats::Error::Row(hush_vocab::RowError {
                path: "e.csv".into(),
                line: 2,
                field: None,
                message: "bad".into(),
            })
        };
        let bad_time = || hush_vocab::Error::InvalidTimestamp("yesterday".into());
        let cases = [
            (Error::Vocabulary(key_error()), ErrorKind::Store),
            (Error::Consent(key_error().into()), ErrorKind::Store),
            (Error::Vocabulary(bad_time()), ErrorKind::Input),
            (Error::Consent(bad_time().into()), ErrorKind::Input),
            (Error::Consent(unreadable().into()), ErrorKind::Io),
            (Error::Consent(row().into()), ErrorKind::Input),
            (Error::Formats(unreadable()), ErrorKind::Io),
            (Error::Formats(row()), ErrorKind::Input),
            (Error::Features(unreadable().into()), ErrorKind::Io),
            (Error::Features(row().into()), ErrorKind::Input),
            (Error::Mf(hush_mf::Error::Features(unreadable().into())), ErrorKind::Io),
        ];
        for (error, kind) in cases {
            assert_eq!(error.kind(), kind, "{error:?}");
        }
        assert_eq!(Error::Formats(unreadable()).message(), "reading e.csv: No such file");
    }
}
