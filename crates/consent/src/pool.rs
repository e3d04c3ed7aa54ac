//! A pool of connections to one store, for a server that reads on several
//! threads at once.
//!
//! The pool is r2d2's: the ledger's API is blocking (rusqlite, and the
//! synchronous `postgres` client), so a pool of blocking connections that a
//! caller checks out on a blocking thread fits it without rewriting every
//! store call as async (which `deadpool-postgres` or `bb8` would need). The
//! pooled values are whole [`Ledger`]s, not bare clients, so each connection
//! keeps its prepared statements from one request to the next.
//!
//! A checkout never runs a query: a PostgreSQL connection the server has
//! closed is noticed by the client and replaced by the pool, without the
//! round trip a test-on-checkout would add to every request.

use std::time::Duration;

use crate::{ConnectOptions, Error, Ledger, Result};

/// How long a caller waits for a free connection before giving up: longer
/// than any healthy request takes, short enough that a stuck store shows as
/// errors rather than as requests that never end.
const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens ledgers of one store for the pool.
#[derive(Debug)]
enum Manager {
    Sqlite(std::path::PathBuf),
    Postgres(String, ConnectOptions),
}

impl r2d2::ManageConnection for Manager {
    type Connection = Ledger;
    type Error = Error;

    fn connect(&self) -> Result<Ledger> {
        match self {
            Manager::Sqlite(path) => Ledger::open(path),
            Manager::Postgres(url, options) => Ledger::connect_with(url, *options),
        }
    }

    fn is_valid(&self, ledger: &mut Ledger) -> Result<()> {
        ledger.schema_version().map(|_| ())
    }

    fn has_broken(&self, ledger: &mut Ledger) -> bool {
        ledger.is_broken()
    }
}

/// Connection errors of the pool's background threads go to the log (they
/// carry the store's location without its password).
#[derive(Debug)]
struct LogErrors;

impl r2d2::HandleError<Error> for LogErrors {
    fn handle_error(&self, error: Error) {
        tracing::warn!(%error, "store pool could not open a connection");
    }
}

/// Connections to one store, opened ahead and reused.
pub struct LedgerPool {
    pool: r2d2::Pool<Manager>,
    location: String,
}

impl std::fmt::Debug for LedgerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerPool").field("location", &self.location).field("size", &self.size()).finish()
    }
}

/// A connection lent by a [`LedgerPool`]; it goes back to the pool when dropped.
pub struct PooledLedger(r2d2::PooledConnection<Manager>);

impl std::ops::Deref for PooledLedger {
    type Target = Ledger;
    fn deref(&self) -> &Ledger {
        &self.0
    }
}

impl std::ops::DerefMut for PooledLedger {
    fn deref_mut(&mut self) -> &mut Ledger {
        &mut self.0
    }
}

/// How many connections a pool holds and how many are lent out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolState {
    /// The most connections the pool opens.
    pub size: u32,
    /// Connections open now.
    pub open: u32,
    /// Open connections not lent out.
    pub idle: u32,
}

impl PoolState {
    /// Connections lent out now.
    pub fn in_use(&self) -> u32 {
        self.open.saturating_sub(self.idle)
    }
}

impl LedgerPool {
    /// A pool of `size` connections to the store `ledger` is connected to,
    /// with its settings. The connections open in the background; `ledger`
    /// itself has shown that the store is reachable.
    ///
    /// # Errors
    /// [`Error::InvalidField`] for a size of zero.
    pub fn new(ledger: &Ledger, size: u32) -> Result<Self> {
        if size == 0 {
            return Err(Error::InvalidField { field: "store_pool_size", message: "must be at least 1".into() });
        }
        let manager = match (ledger.sqlite_path(), ledger.postgres_settings()) {
            (Some(path), _) => Manager::Sqlite(path.to_path_buf()),
            (None, Some((url, options))) => Manager::Postgres(url, options),
            (None, None) => unreachable!("a ledger is on SQLite or on PostgreSQL"),
        };
        let pool = r2d2::Pool::builder()
            .max_size(size)
            // Open them all ahead: the first requests should not pay for connecting.
            .min_idle(Some(size))
            .test_on_check_out(false)
            .connection_timeout(CHECKOUT_TIMEOUT)
            .error_handler(Box::new(LogErrors))
            .build_unchecked(manager);
        Ok(LedgerPool { pool, location: ledger.location() })
    }

    /// A connection, waiting for a free one (call it on a thread that may
    /// block, never on an async worker).
    ///
    /// # Errors
    /// [`Error::PoolExhausted`] when none became free in time (or none can
    /// be opened: the reason is logged, and named when the pool knows it).
    pub fn get(&self) -> Result<PooledLedger> {
        self.pool.get().map(PooledLedger).map_err(|e| Error::PoolExhausted {
            location: self.location.clone(),
            waited_ms: CHECKOUT_TIMEOUT.as_millis() as u64,
            message: e.to_string(),
        })
    }

    /// The most connections the pool opens.
    pub fn size(&self) -> u32 {
        self.pool.max_size()
    }

    /// How many connections are open and lent out now.
    pub fn state(&self) -> PoolState {
        let state = self.pool.state();
        PoolState { size: self.pool.max_size(), open: state.connections, idle: state.idle_connections }
    }
}
