//! Request metrics (Prometheus text at `GET /metrics`) and the per-request span.
//!
//! Requests are labelled by route *template* (`/v1/subjects/{id}/consent`),
//! never by the concrete path: a path holds a raw subject id, which must not
//! reach a metric label or a log line.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    /// Recommendation requests refused for lack of consent.
    pub consent_refusals: IntCounter,
    /// Model swaps since start.
    pub model_swaps: IntCounter,
    /// Connections accepted and closed at once because `max_connections` were open.
    pub connections_refused: IntCounter,
    /// Connections open now.
    pub open_connections: IntGauge,
    events: IntCounter,
    /// Transactions that stored ingested batches: fewer than the batches
    /// when several waiting batches were committed together.
    pub ingest_commits: IntCounter,
    pool: IntGaugeVec,
    reader: IntGaugeVec,
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("hush_http_requests_total", "HTTP requests by route template, method and status"),
            &["route", "method", "status"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new("hush_http_request_duration_seconds", "HTTP request latency by route template")
                .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0]),
            &["route"],
        )
        .expect("valid metric");
        let consent_refusals =
            IntCounter::new("hush_consent_refusals_total", "Recommendation requests refused for lack of consent")
                .expect("valid metric");
        let model_swaps =
            IntCounter::new("hush_model_swaps_total", "Models swapped in since start").expect("valid metric");
        let connections_refused = IntCounter::new(
            "hush_connections_refused_total",
            "Connections closed on accept because max_connections were open",
        )
        .expect("valid metric");
        let open_connections =
            IntGauge::new("hush_open_connections", "HTTP connections open now").expect("valid metric");
        let events =
            IntCounter::new("hush_events_received_total", "Events received by POST /v1/events").expect("valid metric");
        let ingest_commits = IntCounter::new(
            "hush_ingest_commits_total",
            "Store transactions that committed ingested event batches (several waiting batches commit together)",
        )
        .expect("valid metric");
        let pool = IntGaugeVec::new(
            Opts::new(
                "hush_store_pool_connections",
                "Read connections to the store: the pool's size, and how many are open, in use and idle",
            ),
            &["state"],
        )
        .expect("valid metric");
        let reader = IntGaugeVec::new(
            Opts::new(
                "hush_store_reader_connections",
                "PostgreSQL connections of the per-request read (pipelined): their number, how many are open, \
                 and the queries in flight on them",
            ),
            &["state"],
        )
        .expect("valid metric");
        for c in [
            Box::new(events.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(pool.clone()),
            Box::new(reader.clone()),
            Box::new(ingest_commits.clone()),
            Box::new(requests.clone()),
            Box::new(latency.clone()),
            Box::new(consent_refusals.clone()),
            Box::new(model_swaps.clone()),
            Box::new(connections_refused.clone()),
            Box::new(open_connections.clone()),
        ] {
            registry.register(c).expect("unique metric names");
        }
        Metrics {
            registry,
            requests,
            latency,
            consent_refusals,
            model_swaps,
            connections_refused,
            open_connections,
            events,
            ingest_commits,
            pool,
            reader,
        }
    }

    /// Records the state of the store's connection pool (at each scrape).
    pub fn record_pool(&self, state: hush_consent::PoolState) {
        for (label, n) in [("size", state.size), ("open", state.open), ("in_use", state.in_use()), ("idle", state.idle)]
        {
            self.pool.with_label_values(&[label]).set(i64::from(n));
        }
    }

    /// Records the asynchronous reader's state (PostgreSQL stores only).
    pub fn record_reader(&self, state: hush_consent::PgReaderState) {
        for (label, n) in [("size", state.size), ("open", state.open), ("in_flight", state.in_flight)] {
            self.reader.with_label_values(&[label]).set(i64::from(n));
        }
    }

    /// Counts one ingested batch. Only the number received: `/metrics` needs
    /// no key, and per-outcome counts (stored, no consent, erased) would let
    /// anyone who can post a one-event batch read a subject's state off them.
    /// The outcomes go to the operator's log instead.
    pub fn record_ingestion(&self, report: &hush_consent::IngestReport) {
        self.events.inc_by(report.received);
        tracing::info!(
            received = report.received,
            stored = report.stored,
            no_consent = report.dropped_no_consent,
            suppressed = report.dropped_suppressed,
            duplicates = report.duplicates,
            conflicts = report.conflicts,
            "events ingested"
        );
    }

    /// The Prometheus text exposition, with the served model's id.
    pub fn render(&self, model_id: &str) -> String {
        let mut families = self.registry.gather();
        let info = IntGauge::with_opts(
            Opts::new("hush_model_info", "The served model (value 1), labelled with its id")
                .const_label("model_id", model_id),
        )
        .expect("valid metric");
        info.set(1);
        // The model id changes with swaps, so its info gauge is built per scrape.
        families.extend(prometheus::core::Collector::collect(&info));
        let mut out = Vec::new();
        TextEncoder::new().encode(&families, &mut out).expect("text encoding cannot fail");
        String::from_utf8(out).expect("Prometheus text is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Middleware: one span per request (method and route template only) and the
/// request metrics.
pub(crate) async fn track(
    State(state): State<std::sync::Arc<crate::AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_string();
    // A client chooses the method: an unknown one is `other`, so no client
    // can grow the label set (and `/metrics`) without bound.
    const KNOWN: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];
    let method: &'static str = KNOWN.into_iter().find(|m| *m == request.method().as_str()).unwrap_or("other");
    let span = tracing::info_span!("request", %method, %route);
    let started = Instant::now();
    let response = tracing::Instrument::instrument(next.run(request), span.clone()).await;
    let status = response.status().as_u16().to_string();
    state.metrics.requests.with_label_values(&[&route, method, &status]).inc();
    state.metrics.latency.with_label_values(&[&route]).observe(started.elapsed().as_secs_f64());
    span.in_scope(|| tracing::debug!(%status, micros = started.elapsed().as_micros() as u64, "request done"));
    response.into_response()
}
