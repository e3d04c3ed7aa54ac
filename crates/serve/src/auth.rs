//! API-key authorization: each route names the scope it needs.

use std::marker::PhantomData;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use hush_consent::keys::{self, KeyCheck};

use crate::{ApiError, AppState};

/// A scope a route requires.
pub(crate) trait Scope {
    /// The scope's name, as stored with keys.
    const NAME: &'static str;
}

macro_rules! scope {
    ($name:ident, $text:literal) => {
        pub(crate) struct $name;
        impl Scope for $name {
            const NAME: &'static str = $text;
        }
    };
}

scope!(Recommend, "recommend");
scope!(Ingest, "ingest");
scope!(Privacy, "privacy");
scope!(Admin, "admin");

/// Proof that the request carried a valid key with scope `S`: an extractor
/// that runs before the handler body, so nothing is read or scored otherwise.
pub(crate) struct Authorized<S>(PhantomData<S>);

impl<S: Scope + Send + Sync> FromRequestParts<Arc<AppState>> for Authorized<S> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, ApiError> {
        if !state.config.require_api_keys {
            return Ok(Authorized(PhantomData));
        }
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
        // Auth schemes are case-insensitive (RFC 9110 §11.1): `bearer` is `Bearer`.
        fn bearer(value: &str) -> Option<&str> {
            value.split_once(' ').filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer")).map(|(_, t)| t.trim())
        }
        let presented = header("authorization")
            .and_then(bearer)
            .or_else(|| header("x-api-key"))
            .ok_or(ApiError::Unauthorized { code: "missing_api_key" })?
            .to_string();
        match state.read(move |ledger| keys::check(ledger, &presented, S::NAME)).await?? {
            Ok(_) => Ok(Authorized(PhantomData)),
            Err(KeyCheck::Invalid) => Err(ApiError::Unauthorized { code: "invalid_api_key" }),
            Err(KeyCheck::MissingScope) => Err(ApiError::InsufficientScope { scope: S::NAME }),
        }
    }
}
