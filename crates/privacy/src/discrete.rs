//! The exact discrete Gaussian sampler of Canonne, Kamath and Steinke
//! (NeurIPS 2020, Algorithms 1–3), in rational arithmetic, drawing its
//! randomness from a caller's generator so that seeded runs reproduce.
//!
//! OpenDP ships the same algorithm (`sample_discrete_gaussian`), but it draws
//! from the thread's generator and cannot be seeded; this port follows it
//! step for step over a given `RngCore`.
//!
//! # Privacy
//! Every step is exact: uniform integers by rejection, Bernoulli(p) for
//! rational p by comparing a uniform integer with p's numerator, and
//! Bernoulli(exp(−γ)) by von Neumann's series. The only input that is not
//! an integer is σ, taken as the exact rational value of its `f64` bits.

use dashu::base::{Abs, BitTest, UnsignedAbs};
use dashu::integer::{IBig, UBig};
use dashu::rational::RBig;
use rand::RngCore;

/// A uniform integer in `[0, upper)`, by rejection on whole bytes.
fn uniform_below(rng: &mut dyn RngCore, upper: &UBig) -> UBig {
    let bytes = upper.bit_len().div_ceil(8).max(1);
    let max = UBig::from_be_bytes(&vec![u8::MAX; bytes]);
    // `sample % upper` is unbiased below this threshold: it folds evenly.
    let threshold = &max - &max % upper;
    let mut buffer = vec![0u8; bytes];
    loop {
        rng.fill_bytes(&mut buffer);
        let sample = UBig::from_be_bytes(&buffer);
        if sample < threshold {
            return sample % upper;
        }
    }
}

/// Bernoulli(p) for a rational p in [0, 1].
fn bernoulli(rng: &mut dyn RngCore, p: &RBig) -> bool {
    let (numerator, denominator) = (p.numerator(), p.denominator());
    let numerator = numerator.clone().unsigned_abs();
    numerator > uniform_below(rng, denominator)
}

/// Bernoulli(exp(−γ)) for a rational γ in [0, 1] (CKS Algorithm 1).
fn bernoulli_exp_unit(rng: &mut dyn RngCore, gamma: &RBig) -> bool {
    let mut k = UBig::ONE;
    loop {
        if bernoulli(rng, &(gamma.clone() / RBig::from(k.clone()))) {
            k += UBig::ONE;
        } else {
            return k % 2u8 == 1;
        }
    }
}

/// Bernoulli(exp(−γ)) for any rational γ ≥ 0.
fn bernoulli_exp(rng: &mut dyn RngCore, mut gamma: RBig) -> bool {
    while gamma > RBig::ONE {
        if !bernoulli_exp_unit(rng, &RBig::ONE) {
            return false;
        }
        gamma -= RBig::ONE;
    }
    bernoulli_exp_unit(rng, &gamma)
}

/// Geometric(1 − exp(−1/t)) for a positive integer t (CKS Algorithm 2's inner loop).
fn geometric(rng: &mut dyn RngCore, t: &UBig) -> UBig {
    // U uniform in [0, t), accepted with probability exp(−U/t) ...
    let u = loop {
        let u = uniform_below(rng, t);
        if bernoulli_exp(rng, RBig::from_parts(IBig::from(u.clone()), t.clone())) {
            break u;
        }
    };
    // ... then V ~ Geometric(1 − exp(−1)), and X = U + t·V.
    let mut v = UBig::ZERO;
    while bernoulli_exp(rng, RBig::ONE) {
        v += UBig::ONE;
    }
    u + t * v
}

/// The discrete Laplace with scale t: P(x) ∝ exp(−|x|/t) (CKS Algorithm 2).
fn discrete_laplace(rng: &mut dyn RngCore, t: &UBig) -> IBig {
    loop {
        let negative = rng.next_u32() & 1 == 1;
        let magnitude = IBig::from(geometric(rng, t));
        if negative && magnitude == IBig::ZERO {
            continue;
        }
        return if negative { -magnitude } else { magnitude };
    }
}

/// One draw from N_Z(0, σ²): P(x) ∝ exp(−x²/(2σ²)) over the integers (CKS Algorithm 3).
/// A σ that is not positive and finite gives 0 (no noise), as a zero scale does in OpenDP.
pub(crate) fn sample_discrete_gaussian(rng: &mut dyn RngCore, sigma: f64) -> i64 {
    let Ok(sigma) = RBig::try_from(sigma) else { return 0 };
    if sigma <= RBig::ZERO {
        return 0;
    }
    let t = UBig::try_from(sigma.floor() + IBig::ONE).expect("floor(σ) + 1 is positive");
    let sigma_squared = sigma.sqr();
    let t_rational = RBig::from(t.clone());
    loop {
        let y = discrete_laplace(rng, &t);
        let gap = RBig::from(y.clone().abs()) - sigma_squared.clone() / t_rational.clone();
        let gamma = gap.sqr() / (sigma_squared.clone() * RBig::from(2u8));
        if bernoulli_exp(rng, gamma) {
            // |y| beyond 2^63 would need σ near 10^18: no release comes close.
            let saturated = if y < IBig::ZERO { i64::MIN } else { i64::MAX };
            return i64::try_from(&y).unwrap_or(saturated);
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;

    /// The discrete Gaussian's probabilities, normalized over a wide window.
    fn pmf(sigma: f64, x: i64) -> f64 {
        let weight = |y: i64| (-(y as f64).powi(2) / (2.0 * sigma * sigma)).exp();
        let window = (40.0 * sigma) as i64 + 10;
        let total: f64 = (-window..=window).map(weight).sum();
        weight(x) / total
    }

    #[test]
    fn draws_follow_the_discrete_gaussian() {
        for (seed, sigma) in [(1u64, 0.7f64), (2, 3.0), (3, 12.5)] {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let n = 40_000;
            let mut counts = std::collections::BTreeMap::<i64, usize>::new();
            for _ in 0..n {
                *counts.entry(sample_discrete_gaussian(&mut rng, sigma)).or_default() += 1;
            }
            // Chi-square over the values holding at least 5 expected draws, the rest pooled.
            let bound = (4.0 * sigma).ceil() as i64 + 1;
            let (mut chi, mut cells, mut pooled_observed, mut pooled_expected) = (0.0, 0, 0.0, 0.0);
            for x in -bound..=bound {
                let expected = pmf(sigma, x) * n as f64;
                let observed = *counts.get(&x).unwrap_or(&0) as f64;
                if expected >= 5.0 {
                    chi += (observed - expected).powi(2) / expected;
                    cells += 1;
                } else {
                    pooled_observed += observed;
                    pooled_expected += expected;
                }
            }
            pooled_observed += counts.iter().filter(|(x, _)| x.abs() > bound).map(|(_, c)| *c as f64).sum::<f64>();
            pooled_expected += (1.0 - (-bound..=bound).map(|x| pmf(sigma, x)).sum::<f64>()) * n as f64;
            if pooled_expected >= 1.0 {
                chi += (pooled_observed - pooled_expected).powi(2) / pooled_expected;
                cells += 1;
            }
            // A generous quantile: mean `cells`, sd sqrt(2·cells).
            let limit = cells as f64 + 6.0 * (2.0 * cells as f64).sqrt();
            assert!(chi < limit, "σ = {sigma}: chi-square {chi:.1} over {cells} cells");
            let mean = counts.iter().map(|(x, c)| *x as f64 * *c as f64).sum::<f64>() / n as f64;
            assert!(mean.abs() < 6.0 * sigma / (n as f64).sqrt(), "σ = {sigma}: mean {mean}");
        }
    }

    #[test]
    fn zero_or_invalid_scale_adds_nothing_and_seeds_reproduce() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        assert_eq!(sample_discrete_gaussian(&mut rng, 0.0), 0);
        assert_eq!(sample_discrete_gaussian(&mut rng, f64::NAN), 0);
        let draws = |seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            (0..50).map(|_| sample_discrete_gaussian(&mut rng, 4.0)).collect::<Vec<_>>()
        };
        assert_eq!(draws(5), draws(5));
        assert_ne!(draws(5), draws(6));
    }
}
