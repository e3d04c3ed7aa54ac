//! The per-request read of a server on PostgreSQL, asynchronous: the gated
//! read of [`crate::Ledger::gated_read`] sent from the request's own task on
//! `tokio-postgres` connections, pipelined.
//!
//! Why not the blocking pool the other reads use: a blocking read costs a
//! hand-off to a blocking thread and back on top of the round trip, and each
//! connection carries one query at a time. Here the request's task sends the
//! query and awaits the answer; several requests share a connection, their
//! queries pipelined (the server runs them back to back without waiting for
//! the client between them). `benches/store_load.sh 8` on two cores shared
//! with wrk and PostgreSQL: 4,432–5,794 recommendations a second through
//! the blocking pool, 7,200–9,921 through this reader.
//!
//! Linearizability is unchanged: every query is one statement, so one
//! snapshot, taken when the server starts it, after the request started; a
//! withdrawal acknowledged by any replica before that is seen.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::tls::PgTarget;
use super::{gated_read_from_rows, GatedReadParams, GATED_READ_SQL, GENERIC_PLANS_SQL};
use crate::connect::ConnectOptions;
use crate::keys::PresentedKey;
use crate::ledger::GatedRead;
use crate::{Error, Ledger, Pseudonym, Purpose, Result, Timestamp};

/// Connections to a PostgreSQL store for the gated read, each carrying any
/// number of pipelined queries.
pub struct PgReader {
    slots: Vec<Slot>,
    target: PgTarget,
    location: String,
    next: AtomicUsize,
    /// Connections opened so far, reopenings included.
    opened: std::sync::atomic::AtomicU64,
}

/// One connection's place: the connection while it is open, how many
/// queries are on it now, and when reopening it last failed.
///
/// Reopening is single-flight, behind `reopening`: the requests that find
/// the connection closed wait for one of them to reopen it, and after a
/// failed attempt none tries again for [`REOPEN_BACKOFF`]. Without this,
/// every request that met a closed connection opened one of its own: a
/// PostgreSQL restart under load opened 125 backends in a burst, past the
/// server's `max_connections`, refusing other replicas' connections too.
#[derive(Default)]
struct Slot {
    open: Mutex<Option<Arc<Connection>>>,
    reopening: tokio::sync::Mutex<Option<Instant>>,
    in_flight: AtomicUsize,
}

/// How long a slot waits after a failed reopening before trying again;
/// reads meanwhile fail at once.
const REOPEN_BACKOFF: Duration = Duration::from_secs(1);

/// How long opening a connection may take when the URL sets no
/// `connect_timeout`: a store that does not answer fails the read, not the
/// request's whole timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// An open connection with the gated read prepared on it.
struct Connection {
    client: tokio_postgres::Client,
    gated_read: tokio_postgres::Statement,
}

/// How many connections a [`PgReader`] has open and how many queries are on
/// them now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PgReaderState {
    /// The connections it keeps.
    pub size: u32,
    /// Connections open now.
    pub open: u32,
    /// Queries sent and not yet answered.
    pub in_flight: u32,
}

/// A slot's query count, decremented however the query ends.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Where a [`PgReader`] connects: the PostgreSQL store of a ledger, with
/// its settings (TLS included).
pub struct PgReaderTarget {
    url: String,
    options: ConnectOptions,
}

impl std::fmt::Debug for PgReaderTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgReaderTarget").field("location", &crate::ledger::redact(&self.url)).finish()
    }
}

impl PgReaderTarget {
    /// The store `ledger` is connected to, if it is PostgreSQL (`None` on
    /// SQLite, which reads in-process).
    pub fn of(ledger: &Ledger) -> Option<Self> {
        ledger.postgres_settings().map(|(url, options)| PgReaderTarget { url, options })
    }
}

impl PgReader {
    /// `size` connections to `target`, all opened now (the first requests
    /// should not pay for connecting, and a store that refuses them should
    /// show at start).
    ///
    /// Must be called within a tokio runtime: each connection is driven by
    /// a task of it. (A thread of the reader's own driving them measured
    /// worse: 6,609 req/s at p99 119 ms against 8,982 at 41 ms, one more
    /// runnable thread on the two cores, and a hand-off per reply.)
    ///
    /// # Errors
    /// [`Error::InvalidField`] for a size of zero; [`Error::Connect`] or
    /// [`Error::Store`] when a connection cannot be opened or prepared.
    pub async fn connect(target: PgReaderTarget, size: u32) -> Result<Self> {
        let PgReaderTarget { url, options } = target;
        let url = url.as_str();
        if size == 0 {
            return Err(Error::InvalidField {
                field: "store_reader_connections",
                message: "must be at least 1".into(),
            });
        }
        let mut target = PgTarget::parse(url, options)?;
        if target.config.get_connect_timeout().is_none() {
            target.config.connect_timeout(CONNECT_TIMEOUT);
        }
        let reader = PgReader {
            slots: (0..size).map(|_| Slot::default()).collect(),
            target,
            location: crate::ledger::redact(url),
            next: AtomicUsize::new(0),
            opened: std::sync::atomic::AtomicU64::new(0),
        };
        for slot in &reader.slots {
            let connection = reader.open().await?;
            *slot.open.lock().unwrap_or_else(|e| e.into_inner()) = Some(connection);
        }
        Ok(reader)
    }

    /// Opens one connection: generic plans, as the blocking connections
    /// (`GENERIC_PLANS_SQL` says why), and the gated read prepared.
    async fn open(&self) -> Result<Arc<Connection>> {
        let location = &self.location;
        let (client, connection) = self
            .target
            .config
            .connect(self.target.tls.clone())
            .await
            .map_err(|e| Error::Connect { location: location.clone(), message: super::connect_message(&e) })?;
        let log_location = location.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(location = %log_location, error = %e, "store read connection closed");
            }
        });
        if let Err(e) = client.batch_execute(GENERIC_PLANS_SQL).await {
            let error = super::connect_message(&e);
            tracing::warn!(location = %location, %error, "could not set plan_cache_mode");
        }
        let gated_read = client.prepare(GATED_READ_SQL).await.map_err(Error::pg(location))?;
        self.opened.fetch_add(1, Ordering::Relaxed);
        Ok(Arc::new(Connection { client, gated_read }))
    }

    /// See [`Ledger::gated_read`]: the same statement and the same answer,
    /// awaited on the caller's task.
    ///
    /// A read whose connection the server closed under it is sent once more
    /// on the reopened connection (a read may be repeated; it still starts
    /// after the request did).
    ///
    /// # Errors
    /// [`Error::Store`] if the store fails; [`Error::Connect`] if a
    /// closed connection cannot be reopened.
    pub async fn gated_read(
        &self,
        key: Option<(&PresentedKey, &str)>,
        subject: &Pseudonym,
        purpose: Purpose,
        as_of: Timestamp,
        limit: usize,
    ) -> Result<GatedRead> {
        let slot = self.least_busy();
        slot.in_flight.fetch_add(1, Ordering::Relaxed);
        let _in_flight = InFlight(&slot.in_flight);
        let params = GatedReadParams::new(key, subject, purpose, limit);
        let connection = self.connection(slot).await?;
        let rows = match connection.client.query(&connection.gated_read, &params.as_params()).await {
            Err(_) if connection.client.is_closed() => {
                let connection = self.connection(slot).await?;
                connection.client.query(&connection.gated_read, &params.as_params()).await
            }
            answer => answer,
        }
        .map_err(Error::pg(&self.location))?;
        gated_read_from_rows(&rows, key, purpose, as_of, &self.location)
    }

    /// The slot with the fewest queries on it, looking from a rotating start
    /// so that equally busy slots take turns.
    fn least_busy(&self) -> &Slot {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = self.slots.len();
        (0..n)
            .map(|i| &self.slots[(start + i) % n])
            .min_by_key(|slot| slot.in_flight.load(Ordering::Relaxed))
            .unwrap_or(&self.slots[0])
    }

    /// The slot's connection, reopened if the server closed it (by one
    /// request at a time, at most once per [`REOPEN_BACKOFF`] after a
    /// failure: see [`Slot`]).
    async fn connection(&self, slot: &Slot) -> Result<Arc<Connection>> {
        let open = || slot.open.lock().unwrap_or_else(|e| e.into_inner()).clone().filter(|c| !c.client.is_closed());
        if let Some(connection) = open() {
            return Ok(connection);
        }
        let mut last_failure = slot.reopening.lock().await;
        // Reopened by the request this one waited for.
        if let Some(connection) = open() {
            return Ok(connection);
        }
        if last_failure.is_some_and(|at| at.elapsed() < REOPEN_BACKOFF) {
            let message = "could not reconnect less than a second ago; not retrying yet".to_string();
            return Err(Error::Connect { location: self.location.clone(), message });
        }
        match self.open().await {
            Ok(connection) => {
                *last_failure = None;
                *slot.open.lock().unwrap_or_else(|e| e.into_inner()) = Some(connection.clone());
                Ok(connection)
            }
            Err(e) => {
                *last_failure = Some(Instant::now());
                Err(e)
            }
        }
    }

    /// How many connections it has opened since it was made, reopenings
    /// included: a closed connection costs one reopening, not one per read.
    pub fn connections_opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    /// How many connections are open and how many queries are on them.
    pub fn state(&self) -> PgReaderState {
        let mut state = PgReaderState { size: self.slots.len() as u32, open: 0, in_flight: 0 };
        for slot in &self.slots {
            let open = slot.open.lock().unwrap_or_else(|e| e.into_inner());
            state.open += u32::from(open.as_ref().is_some_and(|c| !c.client.is_closed()));
            state.in_flight += slot.in_flight.load(Ordering::Relaxed) as u32;
        }
        state
    }
}
