//! Keys from seeds, for reproducible research runs and tests.
//!
//! A run may be seeded in several places (the noise, the per-subject
//! sampling secret, each cell of a sweep), often with the same number. Every
//! 32-byte key made from a seed comes from [`key_from_seed`], which mixes in
//! a domain label, so two uses of one seed never share key material: the
//! noise of a run seeded with 7 is unrelated to the sampling of an
//! extraction seeded with 7, as it would be with keys from the operating
//! system.

use sha2::{Digest, Sha256};

/// The version of the seed-to-key derivation: what a seeded result must
/// also be keyed by to be reproduced (a sweep's cells are), since another
/// derivation turns the same seed into other noise.
pub const DERIVATION: &str = "hush seed v1";

/// A 32-byte key derived from `seed` for the use named by `domain`:
/// SHA-256 of a version tag, the domain, and the seed. Distinct domains (or
/// seeds) give unrelated keys; the same pair always gives the same key.
///
/// Whoever knows the seed can recompute the key, so nothing keyed this way
/// is private: callers mark what they make with it as seeded.
pub fn key_from_seed(seed: u64, domain: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(DERIVATION.as_bytes());
    hasher.update(b"\n");
    // The length first, so ("ab", seed) and ("a", "b" + seed bytes) cannot collide.
    hasher.update((domain.len() as u64).to_le_bytes());
    hasher.update(domain.as_bytes());
    hasher.update(seed.to_le_bytes());
    hasher.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_domain_and_seed_gets_its_own_key() {
        let noise = key_from_seed(7, "noise");
        assert_eq!(noise, key_from_seed(7, "noise"));
        assert_ne!(noise, key_from_seed(7, "subject secret"));
        assert_ne!(noise, key_from_seed(8, "noise"));
        // Not a plain encoding of the seed.
        assert_ne!(&noise[..8], &7u64.to_le_bytes());
    }

    #[test]
    fn the_domain_length_separates_domains_that_share_a_prefix() {
        assert_ne!(key_from_seed(0, "a"), key_from_seed(0, "a\0"));
        assert_ne!(key_from_seed(1, ""), key_from_seed(1, "\u{1}"));
    }
}
