//! A versioned, checksummed container for the binary files hush reloads
//! (feature sets in `hush-features`, models in `hush-mf`).
//!
//! Layout: 8 magic bytes naming the kind of file, a little-endian `u32`
//! format version, a `u64` payload length, the SHA-256 of the payload, then
//! the payload. Files are written to a temporary sibling and renamed into
//! place, so a crash or a failed write never leaves a half-written file where
//! a good one was.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

const HEADER_LEN: usize = 8 + 4 + 8 + 32;

/// Why a binary file was refused.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file does not start with the expected magic bytes.
    #[error("{path}: not a {kind} file (its first bytes are not the {kind} magic)")]
    WrongMagic {
        /// The file.
        path: PathBuf,
        /// What kind of file was expected.
        kind: &'static str,
    },
    /// The file is shorter than its header says.
    #[error("{path}: truncated {kind} file: expected {expected} bytes, found {found}")]
    Truncated {
        /// The file.
        path: PathBuf,
        /// What kind of file was expected.
        kind: &'static str,
        /// Bytes the header promises.
        expected: u64,
        /// Bytes present.
        found: u64,
    },
    /// The format version is not one this build reads.
    #[error("{path}: {kind} format version {found} is not supported (this hush reads version {supported}); re-create the file with this version")]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// What kind of file.
        kind: &'static str,
        /// Version on disk.
        found: u32,
        /// Version this build reads.
        supported: u32,
    },
    /// The payload does not match its checksum.
    #[error("{path}: {kind} file is corrupted (checksum mismatch)")]
    ChecksumMismatch {
        /// The file.
        path: PathBuf,
        /// What kind of file.
        kind: &'static str,
    },
}

/// Identifies one kind of enveloped file.
#[derive(Clone, Copy, Debug)]
pub struct Kind {
    /// Human name used in messages, e.g. "feature set".
    pub name: &'static str,
    /// The 8 magic bytes at the start of the file.
    pub magic: [u8; 8],
    /// The current format version.
    pub version: u32,
}

/// Wraps `payload` in the envelope and writes it atomically to `path`.
///
/// # Errors
/// [`EnvelopeError::Io`] if the file cannot be written; any existing file at
/// `path` is left untouched then.
pub fn write(path: &Path, kind: Kind, payload: &[u8]) -> Result<(), EnvelopeError> {
    // Feature sets and models are derived from personal data: owner-only, like the store.
    crate::files::write_atomically(path, crate::files::Access::OwnerOnly, |file| {
        file.write_all(&kind.magic)?;
        file.write_all(&kind.version.to_le_bytes())?;
        file.write_all(&(payload.len() as u64).to_le_bytes())?;
        file.write_all(&Sha256::digest(payload))?;
        file.write_all(payload)
    })
    .map_err(|source| EnvelopeError::Io { path: path.to_path_buf(), source })
}

/// Reads `path`, checks magic, version, length and checksum, and returns the payload.
///
/// # Errors
/// The [`EnvelopeError`] variant that names what is wrong with the file.
pub fn read(path: &Path, kind: Kind) -> Result<Vec<u8>, EnvelopeError> {
    let bytes = std::fs::read(path).map_err(|source| EnvelopeError::Io { path: path.to_path_buf(), source })?;
    open(path, kind, bytes)
}

/// Checks an envelope already in memory and returns its payload.
///
/// # Errors
/// As [`read`].
pub fn open(path: &Path, kind: Kind, mut bytes: Vec<u8>) -> Result<Vec<u8>, EnvelopeError> {
    let path_buf = || path.to_path_buf();
    if bytes.len() < 8 || bytes[..8] != kind.magic {
        return Err(EnvelopeError::WrongMagic { path: path_buf(), kind: kind.name });
    }
    if bytes.len() < HEADER_LEN {
        return Err(EnvelopeError::Truncated {
            path: path_buf(),
            kind: kind.name,
            expected: HEADER_LEN as u64,
            found: bytes.len() as u64,
        });
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version != kind.version {
        return Err(EnvelopeError::UnsupportedVersion {
            path: path_buf(),
            kind: kind.name,
            found: version,
            supported: kind.version,
        });
    }
    let length = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes"));
    let expected = HEADER_LEN as u64 + length;
    if bytes.len() as u64 != expected {
        return Err(EnvelopeError::Truncated {
            path: path_buf(),
            kind: kind.name,
            expected,
            found: bytes.len() as u64,
        });
    }
    if Sha256::digest(&bytes[HEADER_LEN..])[..] != bytes[20..HEADER_LEN] {
        return Err(EnvelopeError::ChecksumMismatch { path: path_buf(), kind: kind.name });
    }
    bytes.drain(..HEADER_LEN);
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIND: Kind = Kind { name: "test", magic: *b"HUSHTEST", version: 3 };

    #[test]
    fn round_trip_and_every_corruption_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.bin");
        write(&path, KIND, b"payload bytes").unwrap();
        assert_eq!(read(&path, KIND).unwrap(), b"payload bytes");
        let good = std::fs::read(&path).unwrap();

        let mut flipped = good.clone();
        *flipped.last_mut().unwrap() ^= 1;
        let err = open(&path, KIND, flipped).unwrap_err();
        assert!(matches!(err, EnvelopeError::ChecksumMismatch { .. }), "{err}");

        let err = open(&path, KIND, good[..good.len() - 3].to_vec()).unwrap_err();
        assert!(err.to_string().contains("truncated test file"), "{err}");

        let mut other_version = good.clone();
        other_version[8] = 9;
        let err = open(&path, KIND, other_version).unwrap_err();
        assert!(err.to_string().contains("format version 9 is not supported"), "{err}");

        let err = open(&path, KIND, b"something else entirely".to_vec()).unwrap_err();
        assert!(matches!(err, EnvelopeError::WrongMagic { .. }), "{err}");
    }
}
