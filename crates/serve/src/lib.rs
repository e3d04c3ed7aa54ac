//! The consent-gated serving API of hush.
//!
//! [`app`] builds the axum [`Router`](axum::Router) over an [`AppState`]: the served model
//! (swappable), the consent ledger and event store, and the pseudonymization
//! key. Every subject id arriving in a path or body is pseudonymized at once;
//! logs and spans carry only a short pseudonym prefix.
//!
//! Consent is linearizable with recommendations: consent writes and the
//! consent check of a recommendation go through the same ledger lock, so once
//! a withdrawal or erasure has been acknowledged, every request that starts
//! afterwards sees it and is refused before anything is scored.

mod auth;
mod error;
pub mod metrics;
mod openapi;
mod routes;
pub mod score;

use std::sync::{Arc, Mutex, RwLock};

pub use error::{ApiError, ServeError};
use hush_consent::{IngestReport, Ledger, LedgerPool, PseudonymKey, SubjectEvent, Timestamp};
use hush_mf::Model;
pub use routes::app;

/// Serves `state` on `listener` until `shutdown` resolves, then finishes the
/// requests in flight (graceful shutdown).
///
/// HTTP/1.1 only, with two protections against clients that hold connections
/// without using them (slowloris, silent sockets, idle keep-alive):
/// - a connection that has not sent a complete request head within
///   [`ServeConfig::header_read_timeout_ms`] of opening, or of the previous
///   response, is closed;
/// - at most [`ServeConfig::max_connections`] connections are open at once;
///   one more is accepted and closed at once (counted in
///   `hush_connections_refused_total`), so the file descriptors of the process
///   are never exhausted.
///
/// # Errors
/// [`ServeError::Io`] if the listener fails for good.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    use hyper_util::rt::{TokioIo, TokioTimer};

    // The first requests should not pay for connecting, but the server
    // answers (/healthz) meanwhile; a failure is logged and tried again by
    // the next read.
    let opening = state.clone();
    tokio::spawn(async move {
        if let Err(e) = opening.pg_reader().await {
            tracing::warn!(error = ?e, "could not open the store's read connections yet");
        }
    });
    let connections = Arc::new(tokio::sync::Semaphore::new(state.config.max_connections));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(std::time::Duration::from_millis(state.config.header_read_timeout_ms));
    let router = app(state.clone());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Per-connection failures (a reset before accept) and running
                // out of descriptors are passing conditions: back off, go on.
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            state.metrics.connections_refused.inc();
            drop(stream);
            continue;
        };
        // A client that stops reading (its receive window full) would hold
        // the connection for as long as it likes: a write that makes no
        // progress for `write_timeout_ms` closes it.
        let mut stream = tokio_io_timeout::TimeoutStream::new(stream);
        stream.set_write_timeout(Some(std::time::Duration::from_millis(state.config.write_timeout_ms)));
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let connection = graceful.watch(http.serve_connection(TokioIo::new(Box::pin(stream)), service));
        let metrics = state.clone();
        tokio::spawn(async move {
            metrics.metrics.open_connections.inc();
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection closed with an error");
            }
            metrics.metrics.open_connections.dec();
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Serving settings (the `[serve]` table of a config file; every field optional).
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServeConfig {
    /// At most this many of a subject's most recent events are read per
    /// request: they are folded in, and their items are not recommended
    /// again. Bounds the work of a request however long the history.
    pub max_history: usize,
    /// Largest `k` a client may ask for.
    pub max_k: usize,
    /// Requests handled at once; more wait in line (backpressure, not failure).
    pub max_concurrent_requests: usize,
    /// A request still running after this is answered 503 `timeout`.
    pub request_timeout_ms: u64,
    /// A connection that has not sent a complete request head this long after
    /// it opened, or after its previous response (an idle keep-alive), is closed.
    pub header_read_timeout_ms: u64,
    /// A response write that makes no progress this long (a client that
    /// stopped reading) closes the connection.
    pub write_timeout_ms: u64,
    /// Connections open at once; more are accepted and closed at once.
    pub max_connections: usize,
    /// Read connections to the store, pooled (`/metrics` shows how many are
    /// in use): requests that read wait for a free one on a blocking thread,
    /// never on an async worker. The CLI's `--store-pool-size` wins.
    pub store_pool_size: u32,
    /// On PostgreSQL, the connections of the per-request read (the key,
    /// consent and events of a recommendation): each carries any number of
    /// pipelined queries, so a few keep the store busy. Defaults to the
    /// cores of this machine, at most 4.
    pub store_reader_connections: u32,
    /// Require API keys with scopes (off only for local experiments).
    pub require_api_keys: bool,
    /// Fold-in weight of event kinds that an implicit model was *not* trained
    /// on: the kinds it was trained on are weighed exactly as in training
    /// (the model carries that weighting), and a weight here for one of them
    /// is ignored with a warning at load. Negative weights are negative
    /// feedback (e.g. `dislike`, `return`): they subtract from the item's
    /// weight, an item whose total is not positive is left out of the
    /// fold-in, and items the subject interacted with are never recommended.
    pub kind_weights: std::collections::BTreeMap<String, f32>,
    /// Address to listen on (the CLI's `--bind` wins).
    pub bind: Option<String>,
    /// Model file (the CLI's `--model` wins).
    pub model: Option<std::path::PathBuf>,
}

impl Default for ServeConfig {
    /// 200 recent events cover a storefront session history; 100 items fill any page.
    fn default() -> Self {
        // 512 in flight keeps two cores busy without unbounded queues; 10 s is
        // far above any healthy request (fold-in and scoring take milliseconds).
        ServeConfig {
            max_history: 200,
            max_k: 100,
            require_api_keys: true,
            max_concurrent_requests: 512,
            request_timeout_ms: 10_000,
            // A storefront's backend sends a request head in one packet; 10 s
            // is generous for it and short for a client trickling bytes.
            header_read_timeout_ms: 10_000,
            // As long as a client may take to send a request head.
            write_timeout_ms: 10_000,
            // Twice the requests in flight: room for idle keep-alive
            // connections of a busy client pool, far below a process's
            // descriptor limit.
            max_connections: 1024,
            // Enough to keep two cores busy when every request is one short
            // round trip to the store (measured with benches/store_load.sh:
            // more only adds server processes competing for the same cores);
            // each is a server process on PostgreSQL, far below its default
            // max_connections of 100 even with several replicas.
            store_pool_size: 8,
            // Pipelined, one connection keeps one server process busy; more
            // only add processes competing for the cores. Two replicas on two
            // cores (benches/store_load.sh's pair, 6 s runs): 8 connections
            // each gave 1.01x one replica's throughput, 2 each gave 1.14x,
            // and one replica alone 6,183 against 7,699 req/s.
            // At most 4: each replica's connections count against the
            // server's max_connections (100 by default).
            store_reader_connections: std::thread::available_parallelism().map_or(1, |n| n.get().min(4) as u32),
            // Two negative kinds, as strong as a purchase is positive.
            kind_weights: [("dislike", -5.0), ("return", -5.0)].into_iter().map(|(k, w)| (k.to_string(), w)).collect(),
            bind: None,
            model: None,
        }
    }
}

/// A loaded model with its item index.
pub struct ServedModel {
    /// The model.
    pub model: Model,
    /// Catalogue id → item index.
    pub index: foldhash::HashMap<String, usize>,
    /// The model card as Markdown, rendered once at load.
    pub card_markdown: String,
    /// The model card as a self-contained HTML page.
    pub card_html: String,
    /// The model card as JSON (`GET /v1/model`).
    pub card_json: serde_json::Value,
    /// Title of each item (by model index) in the store's catalogue.
    pub titles: Vec<Option<String>>,
    /// Category of each item (by model index), as an index into `category_names`.
    pub category_of: Vec<Option<u32>>,
    /// The distinct category names of the model's items.
    pub category_names: Vec<String>,
    /// Category name → index into `category_names`.
    pub category_ids: foldhash::HashMap<String, u32>,
}

/// Admits a model for serving on this store: it must be a release (see
/// [`ServedModel::new`]), carry this store's valid seal, and have a
/// committed release entry in the store's budget ledger.
///
/// # Errors
/// [`ServeError::NotReleasable`] or [`ServeError::NotThisStoresRelease`].
pub fn admit(model: Model, key: &PseudonymKey, ledger: &Ledger) -> Result<ServedModel, ServeError> {
    let served = ServedModel::new(model)?.with_catalogue(&ledger.catalogue_items()?);
    let model = &served.model;
    let refuse = |reason: String| ServeError::NotThisStoresRelease { model_id: model.meta.model_id.clone(), reason };
    model.verify_seal(&key.derive(hush_mf::SIGNING_PURPOSE)).map_err(|e| refuse(e.to_string()))?;
    let runs = ledger.budget_runs(None)?;
    let released = runs.iter().any(|r| {
        r.purpose == hush_consent::BudgetPurpose::Release
            && r.state == hush_consent::RunState::Committed
            && r.model_id.as_deref() == Some(model.meta.model_id.as_str())
    });
    if !released {
        return Err(refuse("the store's budget ledger has no committed release of it".into()));
    }
    Ok(served)
}

impl ServedModel {
    /// Wraps a model for serving.
    ///
    /// # Errors
    /// [`ServeError::NotReleasable`] for a model whose guarantee does not
    /// hold or was never claimed (see [`Model::not_releasable_because`]):
    /// it must never serve real subjects.
    pub fn new(model: Model) -> Result<Self, ServeError> {
        let reasons = model.not_releasable_because();
        if !reasons.is_empty() {
            return Err(ServeError::NotReleasable {
                model_id: model.meta.model_id.clone(),
                reasons: reasons.join("; "),
            });
        }
        let index = model.items.iter().enumerate().map(|(i, id)| (id.clone(), i)).collect();
        let card_markdown = hush_report::card::markdown(&model);
        let card_html = hush_report::card::html(&model);
        let card_json = hush_report::card::json(&model);
        let n = model.n_items();
        Ok(ServedModel {
            model,
            index,
            card_markdown,
            card_html,
            card_json,
            titles: vec![None; n],
            category_of: vec![None; n],
            category_names: Vec::new(),
            category_ids: foldhash::HashMap::default(),
        })
    }

    /// Takes the titles and categories of the model's items from the store's
    /// catalogue (items the catalogue lacks keep none; catalogue items the
    /// model lacks are ignored: only the model's items are ever listed).
    #[must_use]
    pub fn with_catalogue(mut self, items: &[hush_consent::CatalogueItem]) -> Self {
        for item in items {
            let Some(&i) = self.index.get(&item.id) else { continue };
            self.titles[i].clone_from(&item.title);
            self.category_of[i] = item.category.as_ref().map(|name| {
                let next = self.category_names.len() as u32;
                *self.category_ids.entry(name.clone()).or_insert_with(|| {
                    self.category_names.push(name.clone());
                    next
                })
            });
        }
        self
    }

    /// The catalogue title of item `i`, if it has one.
    pub fn title(&self, i: usize) -> Option<&str> {
        self.titles.get(i).and_then(|t| t.as_deref())
    }

    /// The catalogue category of item `i`, if it has one.
    pub fn category(&self, i: usize) -> Option<&str> {
        self.category_of.get(i).copied().flatten().map(|c| self.category_names[c as usize].as_str())
    }
}

/// Says which serving weights a model overrides: kinds it was trained on
/// are folded in with the model's own weighting.
fn warn_of_ignored_weights(model: &Model, config: &ServeConfig) {
    let trained = &model.meta.data.weighting.kind_weights;
    let ignored: Vec<&str> =
        config.kind_weights.keys().filter(|k| trained.contains_key(*k)).map(String::as_str).collect();
    if !ignored.is_empty() && model.meta.feedback == hush_features::Feedback::Implicit {
        tracing::warn!(
            kinds = %ignored.join(","),
            "serve kind_weights for kinds the model was trained on are ignored: events fold in as training weighed them"
        );
    }
}

/// The most events one ingest group commits: a bound on how long one
/// transaction holds the writer (the batches beyond it form the next group).
const MAX_GROUP_EVENTS: usize = 20_000;

/// A batch waiting in [`AppState`]'s ingest queue, and where its answer goes.
struct QueuedIngest {
    events: Vec<SubjectEvent>,
    now: Timestamp,
    reply: tokio::sync::oneshot::Sender<Result<IngestReport, hush_consent::Error>>,
}

/// Everything the handlers need; shared as `Arc<AppState>`.
pub struct AppState {
    model: RwLock<Arc<ServedModel>>,
    model_path: Option<std::path::PathBuf>,
    /// The one connection that writes (consent, events, erasure).
    ledger: Mutex<Ledger>,
    /// Read connections: they read concurrently with each other and with
    /// the writer (SQLite's WAL, PostgreSQL's MVCC), and each statement reads
    /// the latest committed state, so a write acknowledged on `ledger` (or by
    /// another replica) is seen by every later read.
    readers: LedgerPool,
    /// One permit per read connection, handed out first come first served:
    /// a request waits here, on no thread, until a connection is free, so
    /// the blocking pool never holds more readers than there are connections
    /// and a burst is answered in arrival order (the pool's own wait wakes
    /// threads in no particular order, which showed as a long latency tail).
    read_permits: Arc<tokio::sync::Semaphore>,
    /// On PostgreSQL, the per-request gated read goes here instead of the
    /// blocking pool: awaited on the request's task, pipelined on
    /// `store_reader_connections` connections (see [`hush_consent::PgReader`]). Opened
    /// when serving starts (or by the first read); `None` inside on SQLite.
    pg_reader: tokio::sync::OnceCell<Option<hush_consent::PgReader>>,
    /// Validated event batches waiting for the writer; the writer commits
    /// all that are waiting in one transaction (see [`AppState::ingest`]).
    ingest_queue: Mutex<Vec<QueuedIngest>>,
    key: PseudonymKey,
    config: ServeConfig,
    metrics: metrics::Metrics,
}

impl AppState {
    /// State over a model, a ledger and the key that pseudonymizes subject ids.
    ///
    /// # Errors
    /// As [`ServedModel::new`].
    pub fn new(model: Model, ledger: Ledger, key: PseudonymKey, config: ServeConfig) -> Result<Self, ServeError> {
        let readers = LedgerPool::new(&ledger, config.store_pool_size)?;
        if config.store_reader_connections == 0 {
            let message = "must be at least 1".to_string();
            return Err(hush_consent::Error::InvalidField { field: "store_reader_connections", message }.into());
        }
        let read_permits = Arc::new(tokio::sync::Semaphore::new(readers.size() as usize));
        let served = admit(model, &key, &ledger)?;
        warn_of_ignored_weights(&served.model, &config);
        Ok(AppState {
            model: RwLock::new(Arc::new(served)),
            model_path: None,
            ledger: Mutex::new(ledger),
            readers,
            read_permits,
            pg_reader: tokio::sync::OnceCell::new(),
            ingest_queue: Mutex::new(Vec::new()),
            key,
            config,
            metrics: metrics::Metrics::new(),
        })
    }

    /// Remembers the model file, so it can be reloaded (admin endpoint, SIGHUP).
    #[must_use]
    pub fn with_model_path(mut self, path: std::path::PathBuf) -> Self {
        self.model_path = Some(path);
        self
    }

    /// Reloads the model file and swaps it in; a bad file is refused and the
    /// current model keeps serving.
    ///
    /// # Errors
    /// [`ServeError::NoModelPath`], or why the file was refused.
    pub fn reload_model(&self) -> Result<String, ServeError> {
        let path = self.model_path.as_ref().ok_or(ServeError::NoModelPath)?;
        let id = self.swap_model(Model::load(path)?)?;
        tracing::info!(model_id = %id, "model swapped in");
        Ok(id)
    }

    /// The model being served now.
    pub fn model(&self) -> Arc<ServedModel> {
        self.model.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Swaps in a new model atomically: requests in flight finish on the old one.
    ///
    /// # Errors
    /// As [`ServedModel::new`]; the old model keeps serving then.
    pub fn swap_model(&self, model: Model) -> Result<String, ServeError> {
        // Model swaps are rare (admin endpoint, SIGHUP): a blocking read of the ledger is fine here.
        let reader = self.readers.get()?;
        let served = Arc::new(admit(model, &self.key, &reader)?);
        warn_of_ignored_weights(&served.model, &self.config);
        let id = served.model.meta.model_id.clone();
        *self.model.write().unwrap_or_else(|e| e.into_inner()) = served;
        self.metrics.model_swaps.inc();
        Ok(id)
    }

    /// Runs `f` on a pooled read connection, on tokio's blocking pool: a
    /// store call may wait for a free connection, for the disk or for the
    /// network, and must not hold an async worker meanwhile.
    pub(crate) async fn read<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Ledger) -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let permit = self.read_permits.clone().acquire_owned().await.map_err(|_| ApiError::Internal)?;
        let (state, span) = (self.clone(), tracing::Span::current());
        // The permit goes with the read: a request dropped meanwhile (its
        // client gone) still holds it until the connection is back.
        let read = move || {
            let _permit = permit;
            span.in_scope(|| state.readers.get().map(|ledger| f(&ledger)))
        };
        Ok(tokio::task::spawn_blocking(read).await.map_err(|_| ApiError::Internal)??)
    }

    /// How many read connections there are and how many are in use.
    pub fn store_pool(&self) -> hush_consent::PoolState {
        self.readers.state()
    }

    /// The asynchronous reader of a PostgreSQL store (`None` on SQLite),
    /// opened on first use; a failed opening is tried again by the next call.
    pub(crate) async fn pg_reader(&self) -> Result<Option<&hush_consent::PgReader>, ApiError> {
        let reader = self
            .pg_reader
            .get_or_try_init(|| async {
                let target = hush_consent::PgReaderTarget::of(&self.ledger());
                match target {
                    Some(target) => {
                        hush_consent::PgReader::connect(target, self.config.store_reader_connections).await.map(Some)
                    }
                    None => Ok(None),
                }
            })
            .await?;
        Ok(reader.as_ref())
    }

    /// [`hush_consent::Ledger::gated_read`] on whichever path the store has:
    /// the asynchronous reader on PostgreSQL, a pooled connection on a
    /// blocking thread on SQLite.
    pub(crate) async fn gated_read(
        self: &Arc<Self>,
        key: Option<(hush_consent::keys::PresentedKey, &'static str)>,
        subject: hush_consent::Pseudonym,
        purpose: hush_consent::Purpose,
        as_of: Timestamp,
        limit: usize,
    ) -> Result<hush_consent::GatedRead, ApiError> {
        fn key_ref<'a>(
            key: &'a Option<(hush_consent::keys::PresentedKey, &'static str)>,
        ) -> Option<(&'a hush_consent::keys::PresentedKey, &'static str)> {
            key.as_ref().map(|(presented, scope)| (presented, *scope))
        }
        Ok(match self.pg_reader().await? {
            Some(reader) => reader.gated_read(key_ref(&key), &subject, purpose, as_of, limit).await?,
            None => {
                self.read(move |ledger| ledger.gated_read(key_ref(&key), &subject, purpose, as_of, limit)).await??
            }
        })
    }

    /// The asynchronous reader's connections and queries in flight, once
    /// it is open.
    pub fn store_reader(&self) -> Option<hush_consent::PgReaderState> {
        self.pg_reader.get().and_then(|r| r.as_ref()).map(hush_consent::PgReader::state)
    }

    /// Runs `f` on the writing connection, on tokio's blocking pool (a
    /// durable commit waits for an fsync).
    pub(crate) async fn write<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut Ledger) -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let (state, span) = (self.clone(), tracing::Span::current());
        tokio::task::spawn_blocking(move || span.in_scope(|| f(&mut state.writer())))
            .await
            .map_err(|_| ApiError::Internal)
    }

    /// Stores a validated batch of events (received at `now`) and answers
    /// with its report once it is durable.
    ///
    /// Group commit: the batch joins a queue, and whoever next holds the
    /// writing connection commits every batch waiting then in one
    /// transaction ([`Ledger::ingest_event_batches`]: each batch decided as
    /// if alone, after the ones before it). Under load a store then pays its
    /// lock, reads, round trips and flush once per group instead of once per
    /// request; alone, a batch is its own group. Consent writes take the
    /// same connection, so a withdrawal acknowledged before a batch arrived
    /// is seen by the group that stores it.
    pub(crate) async fn ingest(
        self: &Arc<Self>,
        events: Vec<SubjectEvent>,
        now: Timestamp,
    ) -> Result<IngestReport, ApiError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.queue().push(QueuedIngest { events, now, reply });
        let (state, span) = (self.clone(), tracing::Span::current());
        // Not awaited: the answer comes through `reply`, possibly from a
        // group another request's task committed; this task then finds the
        // queue empty and must not hold the request up meanwhile.
        tokio::task::spawn_blocking(move || span.in_scope(|| state.commit_queued_ingest()));
        answer.await.map_err(|_| ApiError::Internal)?.map_err(ApiError::from)
    }

    /// Commits the batches waiting in the ingest queue (up to
    /// [`MAX_GROUP_EVENTS`] events), if any are left, and answers each.
    fn commit_queued_ingest(&self) {
        if self.queue().is_empty() {
            return; // Committed by an earlier group.
        }
        let mut ledger = self.writer();
        // Taken while holding the writer, so the group holds every batch
        // that queued up while the previous one was being written.
        let group: Vec<QueuedIngest> = {
            let mut queue = self.queue();
            let (mut take, mut events) = (0, 0);
            while take < queue.len() && (take == 0 || events + queue[take].events.len() <= MAX_GROUP_EVENTS) {
                events += queue[take].events.len();
                take += 1;
            }
            queue.drain(..take).collect()
        };
        if group.is_empty() {
            return;
        }
        // Each batch is decided at its own arrival time, as if alone.
        let batches: Vec<(&[SubjectEvent], Timestamp)> = group.iter().map(|q| (&q.events[..], q.now)).collect();
        match ledger.ingest_event_batches(&batches) {
            Ok(reports) => {
                self.metrics.ingest_commits.inc();
                for (queued, report) in group.into_iter().zip(reports) {
                    let _ = queued.reply.send(Ok(report));
                }
            }
            Err(error) if group.len() == 1 => {
                let _ = group.into_iter().next().map(|q| q.reply.send(Err(error)));
            }
            Err(error) => {
                // Nothing of the group was stored. One batch's failure must
                // not fail the others: each is tried again alone.
                tracing::warn!(%error, batches = group.len(), "ingest group failed; committing its batches one by one");
                for queued in group {
                    let result = ledger.ingest_events(&queued.events, queued.now);
                    if result.is_ok() {
                        self.metrics.ingest_commits.inc();
                    }
                    let _ = queued.reply.send(result);
                }
            }
        }
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Vec<QueuedIngest>> {
        self.ingest_queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The writing connection.
    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        // A panic while holding the lock cannot leave SQLite half-written: every
        // write is a transaction. Keep serving.
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The writing connection, reopened first if the server closed it (a
    /// restarted PostgreSQL, a killed backend): without this, every write
    /// failed until the server itself was restarted. The write that met the
    /// closed connection has already failed; writes are not retried, since
    /// the store may have committed one whose answer was lost. If it cannot
    /// be reopened, the closed one is kept and the write fails with the
    /// store's error.
    fn writer(&self) -> std::sync::MutexGuard<'_, Ledger> {
        let mut ledger = self.ledger();
        if ledger.is_broken() {
            match ledger.reopen() {
                Ok(fresh) => {
                    *ledger = fresh;
                    tracing::info!("reopened the store's writing connection");
                }
                Err(error) => tracing::warn!(%error, "could not reopen the store's writing connection"),
            }
        }
        ledger
    }
}
