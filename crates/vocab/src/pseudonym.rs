//! Keyed pseudonyms: the only form in which hush holds a subject's identity.
//!
//! A pseudonym is HMAC-SHA256(key, external id). Without the key it cannot be
//! reversed or recomputed from a guessed id, which is what makes it a
//! pseudonym in the GDPR Art. 4(5) sense rather than a plain hash. The key is
//! generated on first use and kept in a file readable only by its owner, or
//! supplied through [`KEY_ENV_VAR`].

use std::fmt;
use std::io::Write;
use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// Environment variable that supplies the key as 64 hex characters; it wins over the key file.
pub const KEY_ENV_VAR: &str = "HUSH_PSEUDONYM_KEY";

/// The secret key behind every pseudonym. Its `Debug` form never shows the bytes.
#[derive(Clone)]
pub struct PseudonymKey {
    bytes: [u8; 32],
    /// The HMAC state after absorbing the key, cloned per pseudonym: this
    /// halves the hashing work of each call, which runs once per input subject.
    keyed: Hmac<Sha256>,
}

impl fmt::Debug for PseudonymKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PseudonymKey(<redacted>)")
    }
}

impl PseudonymKey {
    /// A fresh random key from the operating system's generator.
    ///
    /// # Errors
    /// [`Error::Key`] if the OS has no randomness to give.
    pub fn generate() -> Result<Self> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)
            .map_err(|e| Error::Key { location: "operating system RNG".into(), message: e.to_string() })?;
        Ok(Self::from_bytes(bytes))
    }

    /// A 32-byte secret derived from this key for one purpose (e.g. the
    /// store's model-signing seed): HMAC-SHA-256 under the key, domain-separated
    /// from pseudonyms, so one key file is the store's one secret.
    pub fn derive(&self, purpose: &str) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.bytes).expect("HMAC accepts keys of any length");
        mac.update(b"hush derived key v1\n");
        mac.update(purpose.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// A key from raw bytes (tests and embedding).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        let keyed = <Hmac<Sha256> as Mac>::new_from_slice(&bytes).expect("HMAC accepts keys of any length");
        PseudonymKey { bytes, keyed }
    }

    /// Parses 64 hex characters.
    ///
    /// # Errors
    /// [`Error::Key`] naming `location` if the text is not 64 hex characters.
    pub fn from_hex(text: &str, location: &str) -> Result<Self> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut bytes).map_err(|_| Error::Key {
            location: location.to_string(),
            message: "expected exactly 64 hexadecimal characters (32 bytes)".into(),
        })?;
        Ok(Self::from_bytes(bytes))
    }

    /// The key from [`KEY_ENV_VAR`] if set, otherwise from `path`, creating
    /// that file (mode 0600) with a fresh key when it does not exist.
    ///
    /// # Errors
    /// [`Error::Key`] if the variable or file holds no valid key, the file is
    /// readable by others than its owner, or it cannot be created.
    pub fn from_env_or_file(path: &Path) -> Result<Self> {
        match std::env::var(KEY_ENV_VAR) {
            Ok(text) => Self::from_hex(&text, KEY_ENV_VAR),
            Err(_) => Self::load_or_create(path),
        }
    }

    /// Loads the key file, or creates it with a fresh key and mode 0600.
    ///
    /// # Errors
    /// See [`PseudonymKey::from_env_or_file`].
    pub fn load_or_create(path: &Path) -> Result<Self> {
        let location = path.display().to_string();
        let key_error = |message: String| Error::Key { location: location.clone(), message };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                check_owner_only(path).map_err(key_error)?;
                Self::from_hex(&text, &location)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Self::generate()?;
                write_new_key_file(path, &key).map_err(|e| key_error(e.to_string()))?;
                tracing::info!(path = %location, "created a new pseudonymization key");
                Ok(key)
            }
            Err(e) => Err(key_error(e.to_string())),
        }
    }

    /// The pseudonym of an external subject identifier.
    pub fn pseudonymize(&self, external_id: &str) -> Pseudonym {
        let mut mac = self.keyed.clone();
        mac.update(external_id.as_bytes());
        Pseudonym(mac.finalize().into_bytes().into())
    }
}

#[cfg(unix)]
fn check_owner_only(path: &Path) -> std::result::Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).map_err(|e| e.to_string())?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(format!("file mode is {:o}; it must be readable by its owner only (chmod 600)", mode & 0o777));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_owner_only(_path: &Path) -> std::result::Result<(), String> {
    Ok(())
}

fn write_new_key_file(path: &Path, key: &PseudonymKey) -> std::io::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(hex::encode(key.bytes).as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

/// A subject's pseudonymous identity: 32 bytes of HMAC output.
///
/// `Display` gives the 64-character hex form; [`Pseudonym::short`] gives a
/// 12-character prefix for log lines.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pseudonym([u8; 32]);

impl Pseudonym {
    /// The raw bytes, as stored in the database.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Rebuilds a pseudonym from stored bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Pseudonym(bytes)
    }

    /// Parses the 64-character hex form.
    ///
    /// # Errors
    /// [`Error::InvalidField`] if the text is not 64 hex characters.
    pub fn from_hex(text: &str) -> Result<Self> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes).map_err(|_| Error::InvalidField {
            field: "pseudonym",
            message: "expected 64 hexadecimal characters".into(),
        })?;
        Ok(Pseudonym(bytes))
    }

    /// The full hex form.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// A 12-hex-character prefix: enough to correlate log lines, too short to be a join key.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..6])
    }

    /// The tag kept on the suppression list after erasure.
    ///
    /// It is a one-way hash of the pseudonym under a fixed domain label, so the
    /// list can answer "was this subject erased?" while the erased subject's
    /// pseudonym itself no longer appears anywhere in the store.
    pub fn suppression_tag(&self) -> SuppressionTag {
        let mut hasher = Sha256::new();
        hasher.update(b"hush/suppression/v1\0");
        hasher.update(self.0);
        SuppressionTag(hasher.finalize().into())
    }
}

impl fmt::Display for Pseudonym {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Pseudonym {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pseudonym({})", self.short())
    }
}

impl serde::Serialize for Pseudonym {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

/// What the suppression list holds for an erased subject (see [`Pseudonym::suppression_tag`]).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct SuppressionTag(pub [u8; 32]);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudonym_is_keyed_and_stable() {
        let a = PseudonymKey::from_bytes([1; 32]);
        let b = PseudonymKey::from_bytes([2; 32]);
        assert_eq!(a.pseudonymize("alice"), a.pseudonymize("alice"));
        assert_ne!(a.pseudonymize("alice"), a.pseudonymize("bob"));
        assert_ne!(a.pseudonymize("alice"), b.pseudonymize("alice"));
        let p = a.pseudonymize("alice");
        assert_eq!(Pseudonym::from_hex(&p.to_hex()).unwrap(), p);
        assert!(!format!("{:?}", a).contains("0101"));
    }

    #[test]
    fn key_file_is_created_owner_only_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested").join("hush.key");
        let first = PseudonymKey::load_or_create(&path).unwrap();
        let again = PseudonymKey::load_or_create(&path).unwrap();
        assert_eq!(first.pseudonymize("x"), again.pseudonymize("x"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            let err = PseudonymKey::load_or_create(&path).unwrap_err().to_string();
            assert!(err.contains("must be readable by its owner only"), "{err}");
        }
    }

    #[test]
    fn bad_key_text_is_refused() {
        let err = PseudonymKey::from_hex("abc", "HUSH_PSEUDONYM_KEY").unwrap_err().to_string();
        assert_eq!(
            err,
            "pseudonymization key HUSH_PSEUDONYM_KEY: expected exactly 64 hexadecimal characters (32 bytes)"
        );
    }
}
