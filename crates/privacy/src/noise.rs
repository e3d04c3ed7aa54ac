//! The Gaussian noise sampler used in training.
//!
//! Randomness comes from ChaCha8: a cryptographically secure stream cipher
//! whose best known attacks reach 7 rounds at impractical cost, and which
//! Aumasson ("Too Much Crypto", 2019) judges sufficient. It is half again as
//! fast as ChaCha12 (`rand`'s conservative `StdRng`), and with tens of
//! millions of draws per DP iteration the generator is a visible share of
//! training time (`benches/noise.rs`, `benches/als_speed.py`). It is
//! keyed from the operating system unless a seed is given for a test or a
//! reproducible research run (a seeded run is marked as such in the model
//! card: anyone who knows the seed can subtract the noise). Normal deviates
//! come from `rand_distr`'s ziggurat sampler in `f64`.
//!
//! # Floating-point caveats
//! A floating-point Gaussian is not exactly Gaussian: its support is a
//! finite set of doubles and its tails are truncated near 8σ by the
//! ziggurat. Mironov (2012) showed that the low-order bits of naive
//! floating-point noise can leak the input of a released value. Here the
//! noisy statistics are never released as such: each is summed into a
//! matrix, symmetrized, regularized and passed through a linear solve, and
//! only the `f32` item factors rounded from that solve are written out,
//! which destroys the bit patterns the attack relies on. The residual
//! risk is accepted and stated; an exact discrete Gaussian (OpenDP's
//! `sample_discrete_gaussian`) would remove it but is more than 500 times
//! slower (see `benches/noise.rs`), which at tens of millions of
//! draws per iteration would dominate training.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

/// A source of Gaussian noise with independent streams for parallel work.
#[derive(Clone, Debug)]
pub struct NoiseSource {
    rng: ChaCha8Rng,
    seeded: bool,
}

impl NoiseSource {
    /// A source keyed from the operating system's randomness: what training uses.
    pub fn from_os_entropy() -> Self {
        NoiseSource { rng: ChaCha8Rng::from_os_rng(), seeded: false }
    }

    /// A reproducible source, for tests and research runs only.
    pub fn seeded(seed: u64) -> Self {
        NoiseSource { rng: ChaCha8Rng::seed_from_u64(seed), seeded: true }
    }

    /// Whether the noise is reproducible from a seed (and so not private against whoever knows it).
    pub fn is_seeded(&self) -> bool {
        self.seeded
    }

    /// An independent stream number `index`: the same key, another ChaCha
    /// stream. Parallel work draws from `stream(item)` so results do not
    /// depend on thread scheduling.
    pub fn stream(&self, index: u64) -> NoiseSource {
        let mut rng = self.rng.clone();
        rng.set_stream(index);
        rng.set_word_pos(0);
        NoiseSource { rng, seeded: self.seeded }
    }

    /// One draw from N(0, std²).
    #[inline]
    pub fn gaussian(&mut self, std: f64) -> f64 {
        std * self.rng.sample::<f64, _>(StandardNormal)
    }

    /// Adds independent N(0, std²) noise to every value.
    #[inline]
    pub fn add_gaussian(&mut self, values: &mut [f64], std: f64) {
        for v in values {
            *v += std * self.rng.sample::<f64, _>(StandardNormal);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empirical_moments_match_within_statistical_bounds() {
        let n = 400_000;
        let std = 2.5;
        let mut source = NoiseSource::seeded(11);
        let draws: Vec<f64> = (0..n).map(|_| source.gaussian(std)).collect();
        let mean = draws.iter().sum::<f64>() / n as f64;
        let var = draws.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n as f64 - 1.0);
        // Standard errors: mean σ/√n, variance σ²·√(2/(n−1)); allow 5 of each.
        assert!(mean.abs() < 5.0 * std / (n as f64).sqrt(), "mean {mean}");
        assert!((var - std * std).abs() < 5.0 * std * std * (2.0 / (n as f64 - 1.0)).sqrt(), "variance {var}");
        let within_one = draws.iter().filter(|x| x.abs() <= std).count() as f64 / n as f64;
        assert!((within_one - 0.682_689).abs() < 0.004, "share within one sigma {within_one}");
    }

    #[test]
    fn streams_are_reproducible_and_independent() {
        let base = NoiseSource::seeded(5);
        let a: Vec<f64> = (0..4)
            .map({
                let mut s = base.stream(1);
                move |_| s.gaussian(1.0)
            })
            .collect();
        let again: Vec<f64> = (0..4)
            .map({
                let mut s = base.stream(1);
                move |_| s.gaussian(1.0)
            })
            .collect();
        let other: Vec<f64> = (0..4)
            .map({
                let mut s = base.stream(2);
                move |_| s.gaussian(1.0)
            })
            .collect();
        assert_eq!(a, again);
        assert_ne!(a, other);
        assert!(base.is_seeded() && !NoiseSource::from_os_entropy().is_seeded());
    }
}
