//! Per-subject randomness that depends on that subject alone.
//!
//! # Privacy
//! Every random choice made about one subject (which interactions the
//! contribution bound keeps, which go to a holdout, which a trainer samples)
//! is drawn from a generator keyed by that subject's own key: HMAC-SHA-256 of
//! their pseudonym under a per-run [`SubjectSecret`]. Nothing is keyed by a
//! position, a slot or an index, so adding or removing one subject (or any
//! number of subjects excluded by consent) changes no other subject's
//! choices. Release runs draw the secret from the operating system and never
//! write it down; a seeded secret is reproducible by whoever knows the seed
//! and marks everything made with it as not releasable.

use hmac::{Hmac, Mac};
use rand::{SeedableRng, TryRngCore};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use hush_consent::Pseudonym;

/// The per-run secret that subject keys are derived from.
#[derive(Clone)]
pub struct SubjectSecret {
    bytes: [u8; 32],
    seeded: bool,
}

impl std::fmt::Debug for SubjectSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret itself never reaches a log.
        f.debug_struct("SubjectSecret").field("seeded", &self.seeded).finish_non_exhaustive()
    }
}

impl PartialEq for SubjectSecret {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes && self.seeded == other.seeded
    }
}

impl SubjectSecret {
    /// A fresh secret from the operating system: what release runs use.
    pub fn from_os() -> Self {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.try_fill_bytes(&mut bytes).expect("the operating system's random number generator failed");
        SubjectSecret { bytes, seeded: false }
    }

    /// A reproducible secret for research and tests: whoever knows the seed
    /// can recompute every subject's choices, so nothing made with it is released.
    pub fn seeded(seed: u64) -> Self {
        SubjectSecret { bytes: hush_privacy::seed::key_from_seed(seed, "subject secret"), seeded: true }
    }

    /// Whether the secret comes from a seed.
    pub fn is_seeded(&self) -> bool {
        self.seeded
    }

    /// 32 bytes derived from the secret for another purpose (e.g. the
    /// pseudonym key of a seeded research run).
    pub fn derive_bytes(&self, purpose: &[u8]) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.bytes).expect("HMAC accepts keys of any length");
        mac.update(b"hush derived v1\n");
        mac.update(purpose);
        mac.finalize().into_bytes().into()
    }

    /// The key of one subject: HMAC-SHA-256 of their pseudonym under this secret.
    pub fn key(&self, subject: &Pseudonym) -> SubjectKey {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.bytes).expect("HMAC accepts keys of any length");
        mac.update(b"hush subject key v1");
        mac.update(subject.as_bytes());
        let out = mac.finalize().into_bytes();
        SubjectKey(u128::from_le_bytes(out[..16].try_into().expect("16 bytes")))
    }
}

/// One subject's key: all per-subject randomness is drawn from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SubjectKey(pub u128);

impl SubjectKey {
    /// A generator for one purpose (e.g. `b"extract-bound"`) and one public
    /// parameter of it (e.g. a split seed): distinct purposes give
    /// independent streams.
    pub fn rng(&self, purpose: &[u8], parameter: u64) -> ChaCha8Rng {
        let mut hasher = Sha256::new();
        hasher.update(b"hush subject rng v1");
        hasher.update((purpose.len() as u64).to_le_bytes());
        hasher.update(purpose);
        hasher.update(parameter.to_le_bytes());
        hasher.update(self.0.to_le_bytes());
        ChaCha8Rng::from_seed(hasher.finalize().into())
    }

    /// A key for subjects assembled in code (tests, benchmarks): derived
    /// from `index` and marked by the feature set as not releasable.
    pub fn assembled(index: u64) -> SubjectKey {
        let digest = Sha256::digest([b"hush assembled subject v1".as_slice(), &index.to_le_bytes()].concat());
        SubjectKey(u128::from_le_bytes(digest[..16].try_into().expect("16 bytes")))
    }
}

#[cfg(test)]
mod tests {
    use rand::Rng;

    use super::*;

    #[test]
    fn keys_depend_on_the_subject_and_the_secret_only() {
        let a = Pseudonym::from_hex(&"ab".repeat(32)).unwrap();
        let b = Pseudonym::from_hex(&"cd".repeat(32)).unwrap();
        let secret = SubjectSecret::seeded(1);
        assert_eq!(secret.key(&a), SubjectSecret::seeded(1).key(&a));
        assert_ne!(secret.key(&a), secret.key(&b));
        assert_ne!(secret.key(&a), SubjectSecret::seeded(2).key(&a));
        assert_ne!(SubjectSecret::from_os().key(&a), SubjectSecret::from_os().key(&a));
        let key = secret.key(&a);
        let draw = |purpose: &[u8], p| key.rng(purpose, p).random::<u64>();
        assert_eq!(draw(b"x", 1), draw(b"x", 1));
        assert_ne!(draw(b"x", 1), draw(b"y", 1));
        assert_ne!(draw(b"x", 1), draw(b"x", 2));
        assert!(format!("{secret:?}").contains("seeded: true") && !format!("{secret:?}").contains("bytes"));
    }
}
