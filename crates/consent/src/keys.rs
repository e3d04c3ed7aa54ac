//! API keys of the serving API: created here, stored hashed in the ledger.
//!
//! A key reads `hush_<key id>_<secret>`: the key id (12 hex characters) finds
//! the record, the secret (32 random bytes, hex) is checked against its
//! SHA-256 in constant time. The secret is shown once, at creation.

use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::{Error, Ledger, Result, Timestamp};

/// The scopes a key can carry.
pub const SCOPES: [&str; 4] = ["recommend", "ingest", "privacy", "admin"];

/// A stored key, without its secret.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ApiKeyRecord {
    /// Public identifier of the key.
    pub key_id: String,
    /// Who or what the key is for.
    pub name: String,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// Creation time.
    pub created_at: Timestamp,
    /// Revocation time, if revoked.
    pub revoked_at: Option<Timestamp>,
}

impl ApiKeyRecord {
    /// Whether the key grants `scope` (`admin` grants every scope).
    pub fn allows(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope || s == "admin")
    }
}

/// Why a presented key is not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyCheck {
    /// Not of the form `hush_<id>_<secret>`, unknown, wrong secret, or revoked.
    Invalid,
    /// Valid, but without the needed scope.
    MissingScope,
}

fn parse_scopes(scopes: &[String]) -> Result<Vec<String>> {
    if scopes.is_empty() {
        return Err(Error::InvalidField {
            field: "scopes",
            message: format!("give at least one of {}", SCOPES.join(", ")),
        });
    }
    for s in scopes {
        if !SCOPES.contains(&s.as_str()) {
            return Err(Error::InvalidField {
                field: "scopes",
                message: format!("unknown scope `{s}`; expected one of {}", SCOPES.join(", ")),
            });
        }
    }
    Ok(scopes.to_vec())
}

/// Creates a key with `scopes`; returns the full key (shown once) and its record.
///
/// # Errors
/// [`Error::InvalidField`] for unknown scopes or an empty name, [`Error::Key`]
/// if the OS has no randomness, [`Error::Store`] if SQLite fails.
pub fn create(ledger: &mut Ledger, name: &str, scopes: &[String], now: Timestamp) -> Result<(String, ApiKeyRecord)> {
    if name.is_empty() || name.len() > 100 {
        return Err(Error::InvalidField { field: "name", message: "expected 1 to 100 characters".into() });
    }
    let scopes = parse_scopes(scopes)?;
    let mut random = [0u8; 38];
    getrandom::fill(&mut random)
        .map_err(|e| Error::Key { location: "operating system RNG".into(), message: e.to_string() })?;
    let key_id = hex::encode(&random[..6]);
    let secret = hex::encode(&random[6..]);
    let record =
        ApiKeyRecord { key_id: key_id.clone(), name: name.to_string(), scopes, created_at: now, revoked_at: None };
    ledger.insert_api_key(&record, &Sha256::digest(secret.as_bytes()).into())?;
    Ok((format!("hush_{key_id}_{secret}"), record))
}

/// A key as a client presented it: the id that finds its record and the
/// SHA-256 of its secret (the secret itself is not kept).
#[derive(Clone, PartialEq, Eq)]
pub struct PresentedKey {
    /// The key id part of `hush_<key id>_<secret>`.
    pub key_id: String,
    /// SHA-256 of the secret part.
    pub secret_sha256: [u8; 32],
}

impl std::fmt::Debug for PresentedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PresentedKey").field("key_id", &self.key_id).finish_non_exhaustive()
    }
}

impl PresentedKey {
    /// Reads `hush_<key id>_<secret>`; `None` for anything else (an invalid key).
    pub fn parse(presented: &str) -> Option<Self> {
        let (key_id, secret) = presented.strip_prefix("hush_").and_then(|rest| rest.split_once('_'))?;
        Some(PresentedKey { key_id: key_id.to_string(), secret_sha256: Sha256::digest(secret.as_bytes()).into() })
    }
}

/// Decides a presented key against its stored record and digest (`None`:
/// no key has that id) for `scope`: the digests must match (compared in
/// constant time), the key must not be revoked and must carry the scope.
pub fn verify(
    stored: Option<(ApiKeyRecord, [u8; 32])>,
    presented: &PresentedKey,
    scope: &str,
) -> std::result::Result<ApiKeyRecord, KeyCheck> {
    let Some((record, digest)) = stored else {
        return Err(KeyCheck::Invalid);
    };
    if !bool::from(presented.secret_sha256.ct_eq(&digest)) || record.revoked_at.is_some() {
        return Err(KeyCheck::Invalid);
    }
    if !record.allows(scope) {
        return Err(KeyCheck::MissingScope);
    }
    Ok(record)
}

/// Checks a presented key for `scope`; returns its record when accepted.
///
/// # Errors
/// [`Error::Store`] if SQLite fails.
pub fn check(ledger: &Ledger, presented: &str, scope: &str) -> Result<std::result::Result<ApiKeyRecord, KeyCheck>> {
    let Some(presented) = PresentedKey::parse(presented) else {
        return Ok(Err(KeyCheck::Invalid));
    };
    Ok(verify(ledger.api_key(&presented.key_id)?, &presented, scope))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked_scoped_and_revocable() {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = Ledger::open(dir.path().join("k.db")).unwrap();
        let now = Timestamp::from_unix_seconds(1);
        let (key, record) = create(&mut ledger, "storefront", &["recommend".into()], now).unwrap();
        assert!(key.starts_with(&format!("hush_{}_", record.key_id)));
        assert_eq!(check(&ledger, &key, "recommend").unwrap().unwrap().name, "storefront");
        assert_eq!(check(&ledger, &key, "privacy").unwrap(), Err(KeyCheck::MissingScope));
        let mut wrong = key.clone();
        wrong.pop();
        wrong.push('x');
        assert_eq!(check(&ledger, &wrong, "recommend").unwrap(), Err(KeyCheck::Invalid));
        assert_eq!(check(&ledger, "not a key", "recommend").unwrap(), Err(KeyCheck::Invalid));
        assert!(ledger.revoke_api_key(&record.key_id, now).unwrap());
        assert_eq!(check(&ledger, &key, "recommend").unwrap(), Err(KeyCheck::Invalid));
        let err = create(&mut ledger, "x", &["everything".into()], now).unwrap_err().to_string();
        assert_eq!(
            err,
            "invalid scopes: unknown scope `everything`; expected one of recommend, ingest, privacy, admin"
        );
        // Only the digest is stored: the secret's bytes are nowhere in the file.
        let secret = key.rsplit('_').next().unwrap();
        let bytes = std::fs::read(dir.path().join("k.db")).unwrap();
        let wal = std::fs::read(dir.path().join("k.db-wal")).unwrap_or_default();
        for file in [bytes, wal] {
            assert!(!file.windows(secret.len()).any(|w| w == secret.as_bytes()));
        }
    }
}
