//! Errors: what the API answers, and what can stop the server from starting.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// Why the server cannot start or swap a model.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The model is not a release: non-private, seeded, research, evaluation,
    /// or with an item list from private rows.
    #[error("model {model_id} must not be served: {reasons}")]
    NotReleasable {
        /// The refused model.
        model_id: String,
        /// Why, in words.
        reasons: String,
    },
    /// The model is not this store's release: unsigned, another store's,
    /// altered, or without a committed release entry in the budget ledger.
    #[error("model {model_id} must not be served: {reason}")]
    NotThisStoresRelease {
        /// The refused model.
        model_id: String,
        /// Why.
        reason: String,
    },
    /// The model file could not be loaded.
    #[error(transparent)]
    Model(#[from] hush_mf::Error),
    /// A reload was asked for but the server was not started from a model file.
    #[error("this server was not started from a model file, so there is nothing to reload")]
    NoModelPath,
    /// The ledger could not be opened.
    #[error(transparent)]
    Ledger(#[from] hush_consent::Error),
    /// The listener could not be bound or the server failed.
    #[error("server: {0}")]
    Io(#[from] std::io::Error),
}

/// An API error: a status, a stable machine-readable `error` code and a
/// message a developer can act on. 5xx bodies never carry internals.
#[derive(Debug)]
pub enum ApiError {
    /// The subject has not granted (or has withdrawn, or objected via GPC to) a purpose.
    ConsentRequired {
        /// The purpose needed.
        purpose: &'static str,
        /// Why the request is refused.
        reason: &'static str,
    },
    /// No valid API key was presented (missing, malformed, unknown, wrong secret or revoked).
    Unauthorized {
        /// `missing_api_key` or `invalid_api_key`.
        code: &'static str,
    },
    /// The key is valid but lacks the scope this route needs.
    InsufficientScope {
        /// The scope needed.
        scope: &'static str,
    },
    /// Nothing is held about the subject.
    NotFound,
    /// An erasure named an id hush has never seen: nothing was done.
    UnknownSubject,
    /// The served model's catalogue has no item with this id.
    UnknownItem,
    /// No route has this path.
    NoRoute,
    /// The route exists but not with this method.
    MethodNotAllowed,
    /// The request is malformed.
    BadRequest {
        /// Stable code, e.g. `invalid_k`.
        code: &'static str,
        /// What was wrong and what is expected.
        message: String,
    },
    /// The body is larger than the server accepts.
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The request took longer than the server allows.
    Timeout,
    /// A new model was refused; the old one keeps serving.
    ModelRefused {
        /// Why.
        message: String,
    },
    /// Something failed on our side; details go to the log, not the client.
    Internal,
}

impl ApiError {
    /// The HTTP status of this error.
    pub fn status_code(&self) -> StatusCode {
        match self {
            ApiError::ConsentRequired { .. } => StatusCode::FORBIDDEN,
            ApiError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ApiError::InsufficientScope { .. } => StatusCode::FORBIDDEN,
            ApiError::NotFound | ApiError::NoRoute | ApiError::UnknownSubject | ApiError::UnknownItem => {
                StatusCode::NOT_FOUND
            }
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::ModelRefused { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Timeout => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub(crate) fn bad(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::BadRequest { code, message: message.into() }
    }
}

impl From<hush_vocab::Error> for ApiError {
    fn from(e: hush_vocab::Error) -> Self {
        match e {
            hush_vocab::Error::UnknownPurpose(_)
            | hush_vocab::Error::UnknownSource(_)
            | hush_vocab::Error::InvalidEventKind(_)
            | hush_vocab::Error::InvalidTimestamp(_)
            | hush_vocab::Error::InvalidField { .. } => ApiError::bad("invalid_field", e.to_string()),
            hush_vocab::Error::Key { .. } => {
                tracing::error!(error = %e, "ledger failure");
                ApiError::Internal
            }
        }
    }
}

impl From<hush_consent::Error> for ApiError {
    fn from(e: hush_consent::Error) -> Self {
        match e {
            hush_consent::Error::Vocabulary(e) => e.into(),
            hush_consent::Error::UnknownSubject => ApiError::NotFound,
            hush_consent::Error::InvalidField { .. } => ApiError::bad("invalid_field", e.to_string()),
            hush_consent::Error::Suppressed => ApiError::bad(
                "subject_erased",
                "this subject was erased; a fresh opt-in must lift the suppression first",
            ),
            other => {
                tracing::error!(error = %other, "ledger failure");
                ApiError::Internal
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let body = match &self {
            ApiError::ConsentRequired { purpose, reason } => json!({
                "error": "consent_required",
                "purpose": purpose,
                "reason": reason,
                "message": format!("the subject has not granted {purpose} consent ({reason}); nothing was scored. Use GET /v1/recommendations/popular for a non-personalized list"),
            }),
            ApiError::Unauthorized { code } => json!({
                "error": code,
                "message": "send a valid API key as `Authorization: Bearer hush_...` or `X-API-Key: hush_...` (hush keys create)",
            }),
            ApiError::InsufficientScope { scope } => json!({
                "error": "insufficient_scope",
                "scope": scope,
                "message": format!("this API key lacks the `{scope}` scope this route needs"),
            }),
            ApiError::NotFound => json!({ "error": "not_found", "message": "no data is held about this subject" }),
            ApiError::UnknownSubject => json!({
                "error": "unknown_subject",
                "message": "hush has never seen this subject id: nothing was held, so nothing was erased (a variant spelling would leave the real subject untouched; check the id). Later imports of this id are suppressed; an explicit opt-in still works",
            }),
            ApiError::UnknownItem => json!({
                "error": "unknown_item",
                "message": "the served model's catalogue has no item with this id",
            }),
            ApiError::NoRoute => {
                json!({ "error": "no_route", "message": "no route has this path; GET /openapi.json lists them" })
            }
            ApiError::MethodNotAllowed => json!({
                "error": "method_not_allowed",
                "message": "this route does not answer this method; GET /openapi.json lists the methods",
            }),
            ApiError::BadRequest { code, message } => json!({ "error": code, "message": message }),
            ApiError::PayloadTooLarge { limit } => {
                json!({ "error": "body_too_large", "message": format!("the body must be at most {limit} bytes") })
            }
            ApiError::Timeout => json!({ "error": "timeout", "message": "the request took too long; retry later" }),
            ApiError::ModelRefused { message } => json!({
                "error": "model_refused",
                "message": format!("{message}; the previous model keeps serving"),
            }),
            ApiError::Internal => json!({ "error": "internal", "message": "internal error; it has been logged" }),
        };
        (status, Json(body)).into_response()
    }
}
