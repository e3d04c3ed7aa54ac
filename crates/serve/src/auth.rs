//! API-key authorization: each route names the scope it needs.

use std::marker::PhantomData;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use hush_consent::keys::{self, KeyCheck, PresentedKey};

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

/// The key a request presented for a route of scope `S`, read from its
/// headers but not yet checked against the store: a route that reads the
/// store anyway checks it in the same read (see
/// [`hush_consent::Ledger::gated_read`]). A missing or malformed key is
/// refused here, before anything is read.
pub(crate) struct Presented<S> {
    /// `None` when the server does not require keys.
    key: Option<PresentedKey>,
    scope: PhantomData<S>,
}

impl<S: Scope> Presented<S> {
    /// The key and the scope it must carry, for a combined read; `None` when keys are not required.
    pub(crate) fn for_read(&self) -> Option<(PresentedKey, &'static str)> {
        self.key.clone().map(|key| (key, S::NAME))
    }

    /// Checks the key against the store on its own (one read).
    pub(crate) async fn check(self, state: &Arc<AppState>) -> Result<(), ApiError> {
        let Some(presented) = self.key else {
            return Ok(());
        };
        let stored = state.read(move |ledger| ledger.api_key(&presented.key_id).map(|s| (s, presented))).await??;
        let (stored, presented) = stored;
        keys::verify(stored, &presented, S::NAME).map(|_| ()).map_err(refusal::<S>)
    }
}

/// What a refused key is answered.
pub(crate) fn refusal<S: Scope>(why: KeyCheck) -> ApiError {
    match why {
        KeyCheck::Invalid => ApiError::Unauthorized { code: "invalid_api_key" },
        KeyCheck::MissingScope => ApiError::InsufficientScope { scope: S::NAME },
    }
}

impl<S: Scope + Send + Sync> FromRequestParts<Arc<AppState>> for Presented<S> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, ApiError> {
        if !state.config.require_api_keys {
            return Ok(Presented { key: None, scope: PhantomData });
        }
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
        // Auth schemes are case-insensitive (RFC 9110 §11.1): `bearer` is `Bearer`.
        fn bearer(value: &str) -> Option<&str> {
            value.split_once(' ').filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer")).map(|(_, t)| t.trim())
        }
        let presented = header("authorization")
            .and_then(bearer)
            .or_else(|| header("x-api-key"))
            .ok_or(ApiError::Unauthorized { code: "missing_api_key" })?;
        match PresentedKey::parse(presented) {
            Some(key) => Ok(Presented { key: Some(key), scope: PhantomData }),
            None => Err(ApiError::Unauthorized { code: "invalid_api_key" }),
        }
    }
}

/// Proof that the request carried a valid key with scope `S`: an extractor
/// that runs before the handler body, so nothing is read or scored otherwise.
pub(crate) struct Authorized<S>(PhantomData<S>);

impl<S: Scope + Send + Sync> FromRequestParts<Arc<AppState>> for Authorized<S> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, ApiError> {
        Presented::<S>::from_request_parts(parts, state).await?.check(state).await?;
        Ok(Authorized(PhantomData))
    }
}
