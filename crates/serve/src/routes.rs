//! The HTTP routes.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use hush_consent::{
    ConsentChange, ConsentSource, Event, EventKind, GatedRead, ItemId, Purpose, SubjectEvent, SubjectId, Timestamp,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tracing::Instrument;

use crate::auth::{Admin, Authorized, Ingest, Presented, Privacy, Recommend};
use crate::score::ItemFilter;
use crate::{ApiError, AppState, ServedModel};

/// Largest request body accepted, in bytes: a batch of a few thousand events.
const MAX_BODY_BYTES: usize = 1 << 20;

/// The API router over `state`.
pub fn app(state: Arc<AppState>) -> Router {
    let mut router = Router::new();
    let mut documented = Vec::new();
    // Each route is registered and documented by the same line, so the
    // OpenAPI document cannot drift from what the server answers.
    macro_rules! routes {
        ($($method:ident $path:literal => $handler:expr, $scope:expr, $summary:literal;)*) => {$(
            router = router.route($path, axum::routing::$method($handler));
            documented.push(crate::openapi::RouteDoc {
                method: stringify!($method),
                path: $path,
                scope: $scope,
                summary: $summary,
            });
        )*};
    }
    routes! {
        get "/healthz" => || async { Json(json!({ "status": "ok" })) }, None, "Liveness";
        get "/readyz" => readyz, None, "Readiness: model loaded and store reachable";
        get "/metrics" => metrics, None, "Prometheus metrics";
        get "/openapi.json" => openapi, None, "This document";
        get "/v1/model" => model_card, Some("recommend"), "The served model's card: JSON, or Markdown or HTML by Accept (text/markdown, text/html) or ?format=md|html|json";
        get "/v1/recommendations/popular" => popular, Some("recommend"), "Non-personalized fallback from the model's DP popularity";
        get "/v1/items/{id}/similar" => similar_items, Some("recommend"), "Items like this one by the released item factors (no subject involved, so no consent needed)";
        get "/v1/subjects/{id}/recommendations" => recommendations, Some("recommend"), "Consent-gated personalized recommendations with explanations";
        put "/v1/subjects/{id}/consent" => put_consent, Some("privacy"), "Record a consent grant or withdrawal";
        get "/v1/subjects/{id}/consent" => get_consent, Some("privacy"), "Consent status and history";
        get "/v1/subjects/{id}/export" => export, Some("privacy"), "Everything held about the subject";
        delete "/v1/subjects/{id}" => erase, Some("privacy"), "Erase the subject, with a receipt";
        post "/v1/events" => ingest, Some("ingest"), "Ingest a batch of events";
        post "/v1/admin/model/reload" => reload, Some("admin"), "Reload the model file and swap it in";
    }
    let document = Arc::new(crate::openapi::document(&documented));
    router
        .fallback(|| async { ApiError::NoRoute })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(axum::middleware::map_response_with_state(state.clone(), no_store_for_subjects))
        .layer(axum::Extension(document))
        .layer(
            tower::ServiceBuilder::new()
                .layer(axum::error_handling::HandleErrorLayer::new(overload_or_timeout))
                .timeout(std::time::Duration::from_millis(state.config.request_timeout_ms))
                .concurrency_limit(state.config.max_concurrent_requests),
        )
        // Outside the timeout, so a request answered 503 `timeout` is counted and logged too.
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::metrics::track))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// A query string, with its rejections (a duplicated key, a malformed
/// encoding) answered in the JSON shape of every error.
struct JsonQuery<T>(T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> axum::extract::FromRequestParts<S> for JsonQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| JsonQuery(q))
            .map_err(|rejection| ApiError::bad("invalid_query", rejection.body_text()))
    }
}

/// The `{id}` of a subject route, parsed into a [`SubjectId`]: a path that is
/// not UTF-8, or an id with control characters or over 256 bytes, is a JSON 400.
struct SubjectPath(SubjectId);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for SubjectPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, ApiError> {
        let ItemPath(raw) = ItemPath::from_request_parts(parts, state).await?;
        SubjectId::parse(&raw).map(SubjectPath).map_err(|e| ApiError::bad("invalid_subject_id", e.to_string()))
    }
}

/// The `{id}` of a route as text (an item id, or a subject id before it is
/// checked): a path that is not UTF-8 is a JSON 400.
struct ItemPath(String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ItemPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, ApiError> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| ApiError::bad("invalid_path", rejection.body_text()))?;
        Ok(ItemPath(raw))
    }
}

/// Responses about one subject (recommendations, consent, export, erasure
/// receipts) carry personal data: no cache may keep them.
async fn no_store_for_subjects(
    State(_): State<Arc<AppState>>,
    path: Option<axum::extract::MatchedPath>,
    mut response: Response,
) -> Response {
    if path.is_some_and(|p| p.as_str().starts_with("/v1/subjects/") || p.as_str() == "/v1/events") {
        response
            .headers_mut()
            .insert(axum::http::header::CACHE_CONTROL, axum::http::HeaderValue::from_static("no-store"));
    }
    response
}

/// What a request that timed out (or failed in the middleware) gets: the same JSON shape as every error.
async fn overload_or_timeout(error: tower::BoxError) -> ApiError {
    if error.is::<tower::timeout::error::Elapsed>() {
        ApiError::Timeout
    } else {
        tracing::error!(%error, "middleware failure");
        ApiError::Internal
    }
}

async fn openapi(axum::Extension(document): axum::Extension<Arc<Value>>) -> Json<Value> {
    Json((*document).clone())
}

async fn metrics(State(state): State<Arc<AppState>>) -> String {
    state.metrics.record_pool(state.store_pool());
    if let Some(reader) = state.store_reader() {
        state.metrics.record_reader(reader);
    }
    state.metrics.render(&state.model().model.meta.model_id)
}

type ApiResult = Result<Json<Value>, ApiError>;

fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(v)| v).map_err(|rejection| match rejection {
        // Only an over-long body is 413; a body that cannot be read (a
        // malformed chunked encoding) is the client's syntax error.
        JsonRejection::BytesRejection(r) if r.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::PayloadTooLarge { limit: MAX_BODY_BYTES }
        }
        JsonRejection::BytesRejection(r) => ApiError::bad("unreadable_body", r.body_text()),
        other => ApiError::bad("invalid_json", other.body_text()),
    })
}

async fn reload(_: Authorized<Admin>, State(state): State<Arc<AppState>>) -> ApiResult {
    // Loading and checking the file happens off the async workers.
    let loader = state.clone();
    let result = tokio::task::spawn_blocking(move || loader.reload_model()).await.map_err(|_| ApiError::Internal)?;
    match result {
        Ok(model_id) => Ok(Json(json!({ "model_id": model_id, "swapped": true }))),
        Err(e) => {
            tracing::warn!(error = %e, "model reload refused");
            Err(ApiError::ModelRefused { message: e.to_string() })
        }
    }
}

async fn readyz(State(state): State<Arc<AppState>>) -> ApiResult {
    let model = state.model();
    // One read of the schema version: proves the store answers, costs no scan.
    let schema_version = state.read(|ledger| ledger.schema_version()).await??;
    // On PostgreSQL, recommendations read on connections of their own.
    state.pg_reader().await?;
    Ok(Json(json!({ "status": "ready", "model_id": model.model.meta.model_id, "schema_version": schema_version })))
}

#[derive(Deserialize)]
struct CardQuery {
    format: Option<String>,
}

async fn model_card(
    _: Authorized<Recommend>,
    State(state): State<Arc<AppState>>,
    JsonQuery(query): JsonQuery<CardQuery>,
    headers: HeaderMap,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let served = state.model();
    let accept = headers.get(axum::http::header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    let format = match query.format.as_deref() {
        Some(f @ ("md" | "html" | "json")) => f,
        Some(other) => {
            return Err(ApiError::bad("invalid_format", format!("format `{other}` is not one of md, html, json")))
        }
        None if accept.contains("text/markdown") => "md",
        None if accept.contains("text/html") => "html",
        None => "json",
    };
    let text = |content_type: &'static str, body: &str| {
        ([(axum::http::header::CONTENT_TYPE, content_type)], body.to_string()).into_response()
    };
    match format {
        "md" => return Ok(text("text/markdown; charset=utf-8", &served.card_markdown)),
        "html" => return Ok(text("text/html; charset=utf-8", &served.card_html)),
        _ => {}
    }
    Ok(Json(served.card_json.clone()).into_response())
}

#[derive(Deserialize)]
struct ListQuery {
    k: Option<String>,
    exclude: Option<String>,
    category: Option<String>,
    exclude_categories: Option<String>,
}

impl ListQuery {
    /// The item filter the query asks for: `exclude` ids and the
    /// `category`/`exclude_categories` lists (a 400 `invalid_category` for an
    /// empty or invalid name; a name no item has simply matches nothing).
    fn filter(&self) -> Result<ItemFilter, ApiError> {
        ItemFilter::parse(self.exclude.as_deref(), self.category.as_deref(), self.exclude_categories.as_deref())
            .map_err(|(_, message)| ApiError::bad("invalid_category", message))
    }
}

fn parse_k(raw: Option<&str>, max: usize) -> Result<usize, ApiError> {
    match raw {
        None => Ok(10),
        Some(text) => match text.parse::<usize>() {
            Ok(k) if (1..=max).contains(&k) => Ok(k),
            _ => Err(ApiError::bad("invalid_k", format!("k must be an integer from 1 to {max}, found `{text}`"))),
        },
    }
}

/// A per-item exclusion mask with the items listed in `raw` (comma-separated ids) set.
fn excluded(served: &ServedModel, raw: Option<&str>) -> Vec<bool> {
    ItemFilter {
        exclude_items: raw.unwrap_or_default().split(',').map(|s| s.trim().to_string()).collect(),
        ..ItemFilter::default()
    }
    .mask(served)
}

async fn popular(
    _: Authorized<Recommend>,
    State(state): State<Arc<AppState>>,
    JsonQuery(q): JsonQuery<ListQuery>,
) -> ApiResult {
    let k = parse_k(q.k.as_deref(), state.config.max_k)?;
    let filter = q.filter()?;
    let served = state.model();
    let skip = filter.mask(&served);
    let items: Vec<Value> = served
        .model
        .popular(k, |i| skip[i])
        .into_iter()
        .map(
            |(i, _)| json!({ "item": served.model.items[i], "title": served.title(i), "category": served.category(i) }),
        )
        .collect();
    Ok(Json(json!({ "items": items, "personalized": false, "model_id": served.model.meta.model_id })))
}

/// Items like `{id}`, by the cosine of the released item factors. Only the
/// model is read: no subject, no consent, no store.
async fn similar_items(
    _: Authorized<Recommend>,
    State(state): State<Arc<AppState>>,
    ItemPath(id): ItemPath,
    JsonQuery(q): JsonQuery<ListQuery>,
) -> ApiResult {
    let k = parse_k(q.k.as_deref(), state.config.max_k)?;
    let served = state.model();
    let item = *served.index.get(&id).ok_or(ApiError::UnknownItem)?;
    let skip = excluded(&served, q.exclude.as_deref());
    let items: Vec<Value> = served
        .model
        .similar(item, k, |i| skip[i])
        .into_iter()
        .map(|(i, similarity)| {
            json!({
                "item": served.model.items[i],
                "title": served.title(i),
                "category": served.category(i),
                "similarity": similarity,
            })
        })
        .collect();
    let basis = if served.model.has_factors(item) { "item_factors" } else { "none" };
    Ok(Json(json!({ "item": id, "items": items, "basis": basis, "model_id": served.model.meta.model_id })))
}

async fn recommendations(
    key: Presented<Recommend>,
    State(state): State<Arc<AppState>>,
    path: Result<SubjectPath, ApiError>,
    query: Result<JsonQuery<ListQuery>, ApiError>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let parsed = path.and_then(|SubjectPath(id)| {
        let JsonQuery(q) = query?;
        Ok((parse_k(q.k.as_deref(), state.config.max_k)?, id, q.filter()?))
    });
    // Global Privacy Control: an objection to personalization for this request.
    // Every instance counts, on separate lines or joined by a proxy with
    // commas: `Sec-GPC: 0` followed by `Sec-GPC: 1`, or `Sec-GPC: 0, 1`, is an objection.
    let objects = headers
        .get_all("sec-gpc")
        .iter()
        .any(|v| v.to_str().is_ok_and(|v| v.split(',').any(|part| part.trim() == "1")));
    let (k, id, filter) = match parsed {
        Ok(parsed) if !objects => parsed,
        refused => {
            // Refused without reading the subject; the key is still checked
            // first, as on every route, so a bad key is a 401 whatever else is wrong.
            key.check(&state).await?;
            refused?;
            state.metrics.consent_refusals.inc();
            return Err(ApiError::ConsentRequired { purpose: "personalization", reason: "sec_gpc" });
        }
    };
    let subject = id.pseudonymize(&state.key);
    let span = tracing::info_span!("recommendations", subject = %subject.short());
    recommend(state, key, subject, k, filter).instrument(span).await
}

/// The body of [`recommendations`], inside the request's span.
async fn recommend(
    state: Arc<AppState>,
    key: Presented<Recommend>,
    subject: hush_consent::Pseudonym,
    k: usize,
    filter: ItemFilter,
) -> Result<Response, ApiError> {
    let now = Timestamp::now();
    let max_history = state.config.max_history;
    let key = key.for_read();
    // The key check, the consent status and the recent events in one read
    // (one statement on PostgreSQL): nothing of the subject comes back unless
    // the key is good, and no event unless personalization is granted.
    let read = state.gated_read(key, subject, Purpose::Personalization, now, max_history).await?;
    let events = match read {
        GatedRead::KeyRefused(why) => return Err(crate::auth::refusal::<Recommend>(why)),
        GatedRead::NotGranted(status) => {
            state.metrics.consent_refusals.inc();
            let reason = match status.state {
                hush_consent::ConsentState::Withdrawn => "withdrawn",
                _ => "not_granted",
            };
            return Err(ApiError::ConsentRequired { purpose: "personalization", reason });
        }
        GatedRead::Granted { recent, .. } => recent,
    };
    // Consent is granted: only now is any filtering or scoring work done.
    let served = state.model();
    let scored = crate::score::recommend(&served, &state.config.kind_weights, &events, k, filter.mask(&served));
    tracing::info!(k, personalized = scored.personalized, "scored");
    let body = RecommendationList {
        items: scored.items,
        personalized: scored.personalized,
        model_id: &served.model.meta.model_id,
    };
    Ok(Json(body).into_response())
}

/// A response of `GET /v1/subjects/{id}/recommendations`.
#[derive(Serialize)]
struct RecommendationList<'a> {
    items: Vec<crate::score::Recommended<'a>>,
    personalized: bool,
    model_id: &'a str,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsentBody {
    purpose: String,
    granted: bool,
    #[serde(default)]
    notice_version: Option<String>,
    #[serde(default)]
    proof_ref: Option<String>,
    #[serde(default)]
    effective_at: Option<String>,
    #[serde(default)]
    source: Option<String>,
}

async fn put_consent(
    _: Authorized<Privacy>,
    State(state): State<Arc<AppState>>,
    SubjectPath(id): SubjectPath,
    body: Result<Json<ConsentBody>, JsonRejection>,
) -> ApiResult {
    let body = json_body(body)?;
    let subject = id.pseudonymize(&state.key);
    let span = tracing::info_span!("put_consent", subject = %subject.short());
    let now = Timestamp::now();
    let change = ConsentChange {
        purpose: body.purpose.parse()?,
        granted: body.granted,
        effective_at: match &body.effective_at {
            Some(t) => Timestamp::parse(t)?,
            None => now,
        },
        // The channel is a fact hush knows, not a claim a client makes: the
        // append-only ledger must not say `cli` or `import` for an API call.
        source: match body.source.as_deref() {
            None | Some("api") => ConsentSource::Api,
            Some(_) => {
                return Err(ApiError::bad(
                    "invalid_field",
                    "invalid source: records made through the API always have source `api`; omit the field",
                ))
            }
        },
        notice_version: hush_consent::record::notice_for(body.granted, body.notice_version)?,
        proof_ref: body.proof_ref,
    };
    // The write commits (synchronously, durably) before this handler returns:
    // the acknowledgement is sent only after every later request will see it.
    let (known, record) = state
        .write(move |ledger| -> hush_consent::Result<_> {
            let known = ledger.is_known(&subject)?;
            Ok((known, ledger.record_consent(&subject, &change, now)?))
        })
        .instrument(span)
        .await??;
    let mut body = json!({ "recorded": record, "subject_was_known": known });
    if !known && !record.granted {
        body["warning"] =
            json!("hush had never seen this subject id; if it is a variant spelling, the real subject is unchanged");
    }
    Ok(Json(body))
}

async fn get_consent(
    _: Authorized<Privacy>,
    State(state): State<Arc<AppState>>,
    SubjectPath(id): SubjectPath,
) -> ApiResult {
    let subject = id.pseudonymize(&state.key);
    let now = Timestamp::now();
    let (status, history) = state
        .read(move |ledger| -> hush_consent::Result<_> {
            let status =
                Purpose::ALL.iter().map(|&p| ledger.status(&subject, p, now)).collect::<Result<Vec<_>, _>>()?;
            Ok((status, ledger.history(&subject)?))
        })
        .await??;
    Ok(Json(json!({ "status": status, "history": history })))
}

async fn export(_: Authorized<Privacy>, State(state): State<Arc<AppState>>, SubjectPath(id): SubjectPath) -> ApiResult {
    let subject = id.pseudonymize(&state.key);
    let export = state.read(move |ledger| ledger.export(&subject, Timestamp::now())).await??;
    Ok(Json(serde_json::to_value(export).map_err(|_| ApiError::Internal)?))
}

async fn erase(_: Authorized<Privacy>, State(state): State<Arc<AppState>>, SubjectPath(id): SubjectPath) -> ApiResult {
    let subject = id.pseudonymize(&state.key);
    let span = tracing::info_span!("erase", subject = %subject.short());
    let receipt = state.write(move |ledger| ledger.erase(&subject, Timestamp::now())).instrument(span).await??;
    if !receipt.subject_was_known {
        return Err(ApiError::UnknownSubject);
    }
    let served = state.model();
    let guarantee = match served.model.meta.privacy.epsilon() {
        Some(eps) => format!(
            "the served model {} was trained with user-level ({eps:.3}, {:e})-DP: whatever it still reflects of this subject is bounded by that guarantee",
            served.model.meta.model_id,
            match &served.model.meta.privacy {
                hush_mf::PrivacyGuarantee::Dp { delta, .. } => *delta,
                hush_mf::PrivacyGuarantee::NonPrivate => 0.0,
            }
        ),
        None => format!("the served model {} is a non-private model and may reflect this subject until it is retrained", served.model.meta.model_id),
    };
    Ok(Json(json!({
        "receipt": receipt,
        "model": guarantee,
        "next_retrain": "the subject is suppressed: every extraction from now on excludes them, so the next retrained model holds nothing of them",
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsBody {
    events: Vec<EventBody>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventBody {
    #[serde(default)]
    event_id: Option<String>,
    subject_id: String,
    item_id: String,
    kind: String,
    #[serde(default)]
    value: Option<f32>,
    #[serde(default)]
    timestamp: Option<TimestampField>,
}

/// An event time as the README documents it: RFC 3339 text or integer unix seconds.
#[derive(Deserialize)]
#[serde(untagged)]
enum TimestampField {
    Seconds(i64),
    Text(String),
}

/// How many events of `batch` repeat an earlier one of the same batch: the
/// same subject and event id, or without ids the same subject, item, kind,
/// value and time (the store's rule for duplicates).
fn duplicates_in_request(batch: &[SubjectEvent]) -> u64 {
    let mut seen = std::collections::HashSet::new();
    batch
        .iter()
        .filter(|e| {
            let key = match &e.event_id {
                Some(id) => (e.subject, Some(id.clone()), String::new(), String::new(), 0, 0),
                None => {
                    let value = if e.event.value == 0.0 { 0.0f32 } else { e.event.value };
                    (
                        e.subject,
                        None,
                        e.event.item.clone(),
                        e.event.kind.as_str().to_string(),
                        value.to_bits(),
                        e.event.at.as_unix_millis(),
                    )
                }
            };
            !seen.insert(key)
        })
        .count() as u64
}

/// The latest event time accepted: the end of year 9999, the last one RFC 3339 can write.
const LATEST_EVENT_MS: i64 = 253_402_300_799_999;

async fn ingest(
    _: Authorized<Ingest>,
    State(state): State<Arc<AppState>>,
    body: Result<Json<EventsBody>, JsonRejection>,
) -> ApiResult {
    let body = json_body(body)?;
    let now = Timestamp::now();
    // Validate the whole batch first: a bad event stores nothing.
    let mut batch = Vec::with_capacity(body.events.len());
    // Repeats within the request, found from the body alone: (subject, event
    // id) to the position that first used it.
    let mut ids: std::collections::HashMap<(String, String), usize> = std::collections::HashMap::new();
    for (position, e) in body.events.into_iter().enumerate() {
        let bad = |m: String| ApiError::bad("invalid_event", format!("events[{position}]: {m}"));
        if let Some(id) = &e.event_id {
            hush_consent::event::validate_event_id(id).map_err(|x| bad(x.to_string()))?;
        }
        let kind: EventKind = e.kind.parse().map_err(|x: hush_vocab::Error| bad(x.to_string()))?;
        let item = ItemId::try_from(e.item_id).map_err(|x| bad(x.to_string()))?;
        let subject_id = SubjectId::parse(&e.subject_id).map_err(|x| bad(x.to_string()))?;
        let at = match &e.timestamp {
            Some(TimestampField::Seconds(s)) => Timestamp::from_unix_seconds(*s),
            Some(TimestampField::Text(t)) => Timestamp::parse(t).map_err(|x| bad(x.to_string()))?,
            None => now,
        };
        if !(0..=LATEST_EVENT_MS).contains(&at.as_unix_millis()) {
            return Err(bad("timestamp must lie between 1970-01-01T00:00:00Z and 9999-12-31T23:59:59Z".into()));
        }
        let value = match (e.value, &kind) {
            (Some(v), _) if v.is_finite() => v,
            (Some(_), _) => return Err(bad("value must be a finite number".into())),
            (None, EventKind::Rating) => return Err(bad("a rating event needs a value".into())),
            (None, _) => 1.0,
        };
        let event = SubjectEvent {
            subject: subject_id.pseudonymize(&state.key),
            event: Event { item: item.into_string(), kind, value, at },
            event_id: e.event_id,
        };
        if let Some(id) = &event.event_id {
            if let Some(&first) = ids.get(&(e.subject_id.clone(), id.clone())) {
                let earlier: &SubjectEvent = &batch[first];
                if earlier.event != event.event {
                    return Err(bad(format!(
                        "event_id repeats events[{first}] of the same subject with other content"
                    )));
                }
            } else {
                ids.insert((e.subject_id, id.clone()), position);
            }
        }
        batch.push(event);
    }
    let in_request = duplicates_in_request(&batch);
    let report = state.ingest(batch, now).await?;
    // The answer must not depend on who consented or was erased: per-event or
    // per-reason counts would let an ingest-only key probe any subject with a
    // one-event batch. So `duplicates` counts only repeats within this
    // request (known from the body alone); repeats of events stored earlier
    // are dropped just the same, and counted in the operator's log, because
    // the store holds events only of subjects who consented.
    state.metrics.record_ingestion(&report);
    Ok(Json(json!({ "received": report.received, "duplicates": in_request })))
}
