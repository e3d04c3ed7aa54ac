//! The one error type of this crate.

use std::fmt;
use std::path::PathBuf;

use hush_vocab::RowError;

/// Result alias used throughout `hush-consent`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the consent ledger and its importers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A value that is not a valid word of the shared vocabulary (a purpose,
    /// a source, an event kind, a time, an id, the pseudonymization key):
    /// the same messages as ever, raised by `hush-vocab`.
    #[error(transparent)]
    Vocabulary(#[from] hush_vocab::Error),
    /// A field value that breaks a documented rule (length, characters, range).
    #[error("invalid {field}: {message}")]
    InvalidField {
        /// The field's name.
        field: &'static str,
        /// What was wrong and what is allowed.
        message: String,
    },
    /// A key could not be created: an API key ([`crate::keys`]) when the
    /// operating system has no randomness to give. The pseudonymization
    /// key's problems arrive as [`Error::Vocabulary`].
    #[error("pseudonymization key {location}: {message}")]
    Key {
        /// Where the key was looked for (a file path or the environment variable).
        location: String,
        /// What was wrong.
        message: String,
    },
    /// The store (the SQLite file or the PostgreSQL server) failed. The
    /// driver's error is kept as the [`StoreError`] source, not exposed: the
    /// backends are this crate's business.
    #[error("{location}: {source}")]
    Store {
        /// Which store: `database <file>` or `store <URL without its password>`.
        location: String,
        /// What the driver said.
        #[source]
        source: StoreError,
    },
    /// A PostgreSQL store could not be reached, or refused the credentials.
    #[error("cannot connect to the store {location}: {message}")]
    Connect {
        /// The store URL, without its password.
        location: String,
        /// What went wrong.
        message: String,
    },
    /// `sslmode=disable` to a PostgreSQL host that is not a loopback address.
    #[error(
        "refusing to reach the store {location} without TLS: sslmode=disable would send consent records, \
         events and API key digests across the network in clear; use sslmode=verify-full with \
         sslrootcert=/path/to/ca.pem, or set allow_cleartext (hush's --store-allow-cleartext, \
         HUSH_STORE_ALLOW_CLEARTEXT=true) if this network is trusted"
    )]
    CleartextRefused {
        /// The store URL, without its password.
        location: String,
    },
    /// No pooled connection to the store became free in time.
    #[error("store {location}: no connection became free within {waited_ms} ms ({message})")]
    PoolExhausted {
        /// The store, without its password.
        location: String,
        /// How long the request waited.
        waited_ms: u64,
        /// What the pool said (the last connection error, if any).
        message: String,
    },
    /// The store holds a value this build cannot read.
    #[error("store {location}: {message}")]
    Corrupt {
        /// The store.
        location: String,
        /// What could not be read.
        message: String,
    },
    /// The database was written by a newer hush.
    #[error(
        "database {path} has schema version {found}, newer than this hush understands (at most {supported}); \
         upgrade hush instead of opening it with an older one"
    )]
    SchemaTooNew {
        /// The database file.
        path: PathBuf,
        /// The schema version found on disk.
        found: i64,
        /// The newest version this build can read.
        supported: i64,
    },
    /// The subject was erased and is suppressed: nothing more is recorded for them.
    #[error("subject was erased and is suppressed; a fresh opt-in must lift the suppression explicitly")]
    Suppressed,
    /// Nothing is held about the subject.
    #[error("no data is held about this subject")]
    UnknownSubject,
    /// Reading an input file failed.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A malformed row in strict mode, where the first bad row stops the import.
    #[error("{0}")]
    Row(RowError),
    /// A DP training run would spend more than the dataset's lifetime cap.
    #[error(
        "this run would exceed the lifetime {purpose} budget of dataset `{dataset}`: the cap is \
         epsilon {cap_epsilon} at delta {cap_delta:e} (rho {cap_rho:.6}); {spent_rho:.6} of it is spent, \
         {remaining:.6} remains, and this run needs rho {requested_rho:.6}. Train with a smaller epsilon, \
         or raise the cap deliberately with `hush budget set-cap`",
        remaining = (cap_rho - spent_rho).max(0.0)
    )]
    BudgetExceeded {
        /// The dataset.
        dataset: String,
        /// `release` or `evaluation`.
        purpose: &'static str,
        /// ρ already spent (reserved or committed).
        spent_rho: f64,
        /// ρ the run needs.
        requested_rho: f64,
        /// The cap in ρ.
        cap_rho: f64,
        /// The cap's ε as stated.
        cap_epsilon: f64,
        /// The cap's δ.
        cap_delta: f64,
    },
    /// Too many malformed rows: the import was rolled back.
    #[error(
        "{path}: {bad} of {total} rows are malformed, more than the allowed fraction {allowed}; \
         nothing was imported. First error: {first}"
    )]
    TooManyMalformed {
        /// The input file.
        path: String,
        /// Malformed rows.
        bad: u64,
        /// Rows read.
        total: u64,
        /// The allowed fraction of malformed rows.
        allowed: f64,
        /// The first malformed row.
        first: Box<RowError>,
    },
}

/// A file reader's error becomes the variant of this crate's own that says
/// the same (the messages are the same too): the importers read through
/// `hush-formats`, and a caller matching [`Error::Io`] or [`Error::Row`]
/// sees a bad input file as it did when the readers lived here.
impl From<hush_formats::Error> for Error {
    fn from(e: hush_formats::Error) -> Self {
        match e {
            hush_formats::Error::Io { path, source } => Error::Io { path, source },
            hush_formats::Error::Row(row) => Error::Row(row),
            hush_formats::Error::InvalidField { field, message } => Error::InvalidField { field, message },
            hush_formats::Error::Vocabulary(e) => Error::Vocabulary(e),
        }
    }
}

impl Error {
    /// Wraps a SQLite error with the database path.
    pub(crate) fn db(path: &std::path::Path) -> impl FnOnce(rusqlite::Error) -> Error + '_ {
        move |source| Error::Store {
            location: format!("database {}", path.display()),
            source: StoreError(Driver::Sqlite(source)),
        }
    }

    /// Wraps a PostgreSQL error with the store's location (its URL without the password).
    #[cfg(feature = "postgres")]
    pub(crate) fn pg(location: &str) -> impl FnOnce(postgres::Error) -> Error + '_ {
        move |source| Error::Store {
            location: format!("store {location}"),
            source: StoreError(Driver::Postgres(source)),
        }
    }

    /// The PostgreSQL driver's error under this one, if it is one.
    #[cfg(feature = "postgres")]
    pub(crate) fn postgres_source(&self) -> Option<&postgres::Error> {
        match self {
            Error::Store { source: StoreError(Driver::Postgres(e)), .. } => Some(e),
            _ => None,
        }
    }
}

/// A store driver's error: its message and its causes, without its type.
pub struct StoreError(Driver);

enum Driver {
    Sqlite(rusqlite::Error),
    #[cfg(feature = "postgres")]
    Postgres(postgres::Error),
}

impl StoreError {
    fn inner(&self) -> &(dyn std::error::Error + 'static) {
        match &self.0 {
            Driver::Sqlite(e) => e,
            #[cfg(feature = "postgres")]
            Driver::Postgres(e) => e,
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.inner(), f)
    }
}

impl fmt::Debug for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.inner(), f)
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner().source()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_error_names_the_store_and_says_what_the_driver_said_without_its_type() {
        let driver = rusqlite::Connection::open_in_memory().unwrap().execute("SELECT * FROM missing", []).unwrap_err();
        let said = driver.to_string();
        let error = Error::db(std::path::Path::new("/srv/hush.db"))(driver);
        assert_eq!(error.to_string(), format!("database /srv/hush.db: {said}"));
        let source = std::error::Error::source(&error).expect("the driver's error is the source");
        assert_eq!(source.to_string(), said);
        assert!(source.downcast_ref::<StoreError>().is_some());
        assert!(source.downcast_ref::<rusqlite::Error>().is_none(), "the driver's type stays inside the crate");
        #[cfg(feature = "postgres")]
        assert!(error.postgres_source().is_none());
    }
}
