//! zCDP accounting of a training run's Gaussian releases, conversion to
//! (ε, δ) with OpenDP, and calibration of noise scales to a budget.
//!
//! # Floating point
//! Every step that could make the stated guarantee optimistic is rounded
//! outward: the ρ handed to OpenDP is never below the true ρ (checked on the
//! value OpenDP itself derives), calibrated noise scales are nudged up until
//! the recomputed ε is at or below the target, and budgets are compared with
//! `<=` on the recomputed value, never with `==`.

use opendp::combinators::make_zCDP_to_approxDP;
use opendp::domains::AtomDomain;
use opendp::measurements::make_gaussian;
use opendp::measures::ZeroConcentratedDivergence;
use opendp::metrics::AbsoluteDistance;
use serde::{Deserialize, Serialize};

use crate::{Budget, Delta, Error, Result, Rho};

fn opendp_error(e: opendp::error::Error) -> Error {
    Error::OpenDp(e.to_string())
}

/// ε of the (ε, δ)-DP guarantee implied by ρ-zCDP, computed by OpenDP.
///
/// # Privacy
/// A Gaussian mechanism of sensitivity 1 and scale `1/√(2ρ)` is exactly
/// ρ-zCDP; OpenDP's `make_zCDP_to_approxDP` turns its privacy map into a
/// privacy profile using Canonne, Kamath and Steinke (2020), Prop. 12, and
/// the profile is read at δ. The scale is nudged down until the ρ OpenDP
/// derives is at least `rho`, so rounding can only make ε larger.
///
/// # Errors
/// [`Error::OpenDp`] if OpenDP refuses the parameters.
pub fn epsilon_for_rho(rho: Rho, delta: Delta) -> Result<f64> {
    let mut scale = (1.0 / (2.0 * rho.value())).sqrt();
    loop {
        let gaussian = make_gaussian::<_, _, ZeroConcentratedDivergence>(
            AtomDomain::<f64>::new_non_nan(),
            AbsoluteDistance::<f64>::default(),
            scale,
            None,
        )
        .map_err(opendp_error)?;
        let derived_rho = gaussian.map(&1.0).map_err(opendp_error)?;
        if derived_rho >= rho.value() {
            let profile = make_zCDP_to_approxDP(gaussian).map_err(opendp_error)?.map(&1.0).map_err(opendp_error)?;
            return profile.epsilon(delta.value()).map_err(opendp_error);
        }
        scale = scale.next_down();
    }
}

/// The simple, looser conversion ε = ρ + 2√(ρ ln(1/δ)) (Bun and Steinke 2016, Prop. 1.3).
pub fn epsilon_simple_bound(rho: Rho, delta: Delta) -> f64 {
    rho.value() + 2.0 * (rho.value() * (1.0 / delta.value()).ln()).sqrt()
}

/// δ(ε) for ρ-zCDP from Canonne, Kamath and Steinke (2020), Prop. 12:
/// inf over α > 1 of exp((α−1)(αρ−ε) + α·ln(1−1/α)) / (α−1), minimized here
/// by golden-section search on ln(α−1). Used to cross-check OpenDP.
fn cks_delta(rho: f64, epsilon: f64) -> f64 {
    let f = |log_am1: f64| {
        let a = 1.0 + log_am1.exp();
        ((a - 1.0) * (a * rho - epsilon) + a * (-1.0 / a).ln_1p() - (a - 1.0).ln()).exp()
    };
    let (mut lo, mut hi) = (-12.0f64, 12.0f64);
    let g = (5f64.sqrt() - 1.0) / 2.0;
    for _ in 0..200 {
        let m1 = hi - g * (hi - lo);
        let m2 = lo + g * (hi - lo);
        if f(m1) < f(m2) {
            hi = m2;
        } else {
            lo = m1;
        }
    }
    f((lo + hi) / 2.0).min(1.0)
}

/// ε at δ for ρ-zCDP from the Canonne–Kamath–Steinke bound, computed
/// independently of OpenDP (bisection on ε of [`cks_delta`]).
pub fn epsilon_closed_form(rho: Rho, delta: Delta) -> f64 {
    let (mut lo, mut hi) = (0.0, epsilon_simple_bound(rho, delta));
    for _ in 0..200 {
        let mid = (lo + hi) / 2.0;
        if cks_delta(rho.value(), mid) > delta.value() {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    hi
}

/// The largest ρ whose OpenDP ε at `budget.delta` is at most `budget.epsilon`,
/// by bisection (ε is increasing in ρ).
///
/// # Errors
/// [`Error::OpenDp`] if OpenDP refuses the parameters.
pub fn rho_for_epsilon(budget: Budget) -> Result<Rho> {
    let target = budget.epsilon.value();
    let (mut lo, mut hi) = (0.0f64, target.max(1e-3));
    while epsilon_for_rho(Rho::new(hi)?, budget.delta)? <= target {
        lo = hi;
        hi *= 2.0;
    }
    for _ in 0..100 {
        let mid = (lo + hi) / 2.0;
        if mid <= lo || mid >= hi {
            break;
        }
        if epsilon_for_rho(Rho::new(mid)?, budget.delta)? <= target {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    if lo <= 0.0 {
        return Err(Error::Plan(format!("no positive rho meets epsilon {target}")));
    }
    Rho::new(lo)
}

/// One kind of statistic a training run releases, before calibration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlannedRelease {
    /// What is released, e.g. `item_gram` or `item_rhs`.
    pub name: String,
    /// L2 sensitivity of one release: how far one subject's data can move it.
    pub l2_sensitivity: f64,
    /// How many times it is released (e.g. once per iteration).
    pub count: u32,
    /// The share of the total ρ spent on all `count` releases.
    pub rho_share: f64,
}

/// A calibrated release: what the trainer adds noise with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Release {
    /// What is released.
    pub name: String,
    /// L2 sensitivity of one release.
    pub l2_sensitivity: f64,
    /// How many times it is released.
    pub count: u32,
    /// Standard deviation of the Gaussian noise added to each coordinate.
    pub noise_std: f64,
}

impl Release {
    /// ρ of all `count` releases: count · Δ² / (2σ²).
    pub fn rho(&self) -> f64 {
        f64::from(self.count) * self.l2_sensitivity.powi(2) / (2.0 * self.noise_std.powi(2))
    }
}

/// The statistics a training run releases.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The releases, in the order they happen.
    pub releases: Vec<PlannedRelease>,
}

/// A plan calibrated to a budget.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// The releases with their noise scales.
    pub releases: Vec<Release>,
    /// Total ρ of the run (zCDP composition: the sum over releases).
    pub rho: f64,
    /// ε achieved at `delta`, by OpenDP: never above the target.
    pub epsilon: f64,
    /// δ.
    pub delta: f64,
    /// ε by the simple bound ρ + 2√(ρ ln 1/δ), for comparison.
    pub epsilon_simple_bound: f64,
}

impl Plan {
    /// Adds a release.
    #[must_use]
    pub fn with(mut self, name: &str, l2_sensitivity: f64, count: u32, rho_share: f64) -> Self {
        self.releases.push(PlannedRelease { name: name.into(), l2_sensitivity, count, rho_share });
        self
    }

    fn check(&self) -> Result<()> {
        if self.releases.is_empty() {
            return Err(Error::Plan("no releases to calibrate".into()));
        }
        for r in &self.releases {
            if !(r.l2_sensitivity.is_finite() && r.l2_sensitivity > 0.0) {
                return Err(Error::Plan(format!(
                    "{}: sensitivity must be finite and > 0, found {}",
                    r.name, r.l2_sensitivity
                )));
            }
            if !(r.rho_share > 0.0 && r.rho_share <= 1.0) || r.count == 0 {
                return Err(Error::Plan(format!("{}: share must be in (0, 1] and count >= 1", r.name)));
            }
        }
        let total: f64 = self.releases.iter().map(|r| r.rho_share).sum();
        if (total - 1.0).abs() > 1e-9 {
            return Err(Error::Plan(format!("rho shares add up to {total}, not 1")));
        }
        Ok(())
    }

    /// Noise scales for the given total ρ: release i gets ρᵢ = shareᵢ · ρ and
    /// σᵢ = Δᵢ · √(countᵢ / (2ρᵢ)).
    ///
    /// # Errors
    /// [`Error::Plan`] for an invalid plan.
    pub fn with_rho(&self, rho: Rho) -> Result<Vec<Release>> {
        self.check()?;
        Ok(self
            .releases
            .iter()
            .map(|r| Release {
                name: r.name.clone(),
                l2_sensitivity: r.l2_sensitivity,
                count: r.count,
                noise_std: r.l2_sensitivity * (f64::from(r.count) / (2.0 * r.rho_share * rho.value())).sqrt(),
            })
            .collect())
    }

    /// Finds noise scales that meet `budget`.
    ///
    /// # Privacy
    /// Composition is by summing ρ (zCDP); the conversion to (ε, δ) is
    /// OpenDP's. After rounding, the total ρ is recomputed from the noise
    /// scales actually returned, and the scales are enlarged until OpenDP's ε
    /// for that ρ is at or below the target.
    ///
    /// # Errors
    /// [`Error::Plan`] for an invalid plan, [`Error::OpenDp`] if OpenDP fails.
    pub fn calibrate(&self, budget: Budget) -> Result<Calibration> {
        let rho = rho_for_epsilon(budget)?;
        let mut releases = self.with_rho(rho)?;
        loop {
            let total: f64 = releases.iter().map(Release::rho).sum();
            let epsilon = epsilon_for_rho(Rho::new(total)?, budget.delta)?;
            if epsilon <= budget.epsilon.value() {
                return Ok(Calibration {
                    rho: total,
                    epsilon,
                    delta: budget.delta.value(),
                    epsilon_simple_bound: epsilon_simple_bound(Rho::new(total)?, budget.delta),
                    releases,
                });
            }
            for r in &mut releases {
                r.noise_std *= 1.0 + 1e-9;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn rho(v: f64) -> Rho {
        Rho::new(v).unwrap()
    }

    fn delta(v: f64) -> Delta {
        Delta::new(v).unwrap()
    }

    #[test]
    fn opendp_matches_its_published_value() {
        // OpenDP's own test: scale 4 gives rho = 1/32, epsilon 0.6880024554878085 at delta 1e-3.
        let eps = epsilon_for_rho(rho(1.0 / 32.0), delta(1e-3)).unwrap();
        assert!((eps - 0.6880024554878085).abs() < 1e-9, "{eps}");
    }

    #[test]
    fn calibrated_plan_meets_the_target_and_composes() {
        let plan = Plan::default().with("mean", 100.0, 1, 0.1).with("gram", 4.0, 3, 0.45).with("rhs", 2.0, 3, 0.45);
        let budget = Budget::new(1.0, 1e-6).unwrap();
        let c = plan.calibrate(budget).unwrap();
        assert!(c.epsilon <= 1.0, "{}", c.epsilon);
        assert!(c.epsilon > 0.99, "calibration should spend nearly all of the budget: {}", c.epsilon);
        let summed: f64 =
            c.releases.iter().map(|r| r.count as f64 * r.l2_sensitivity.powi(2) / (2.0 * r.noise_std.powi(2))).sum();
        assert!((summed - c.rho).abs() < 1e-12);
        assert!(c.epsilon_simple_bound > c.epsilon);
        assert_eq!(
            plan.clone().with("extra", 1.0, 1, 0.5).calibrate(budget).unwrap_err(),
            Error::Plan("rho shares add up to 1.5, not 1".into())
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

        /// OpenDP's conversion agrees with the closed form computed here,
        /// and both are below the simple bound.
        #[test]
        fn opendp_agrees_with_closed_form(r in 1e-4f64..20.0, d in 1e-12f64..1e-2) {
            let (r, d) = (rho(r), delta(d));
            let opendp = epsilon_for_rho(r, d).unwrap();
            let closed = epsilon_closed_form(r, d);
            prop_assert!((opendp - closed).abs() <= 1e-6 * closed.max(1.0), "opendp {} closed form {}", opendp, closed);
            prop_assert!(opendp <= epsilon_simple_bound(r, d) + 1e-12);
        }

        /// ε grows with ρ and shrinks with δ.
        #[test]
        fn conversion_is_monotone(r in 1e-3f64..10.0, factor in 1.01f64..3.0, d in 1e-10f64..1e-3) {
            let e1 = epsilon_for_rho(rho(r), delta(d)).unwrap();
            prop_assert!(epsilon_for_rho(rho(r * factor), delta(d)).unwrap() > e1);
            prop_assert!(epsilon_for_rho(rho(r), delta(d * 2.0)).unwrap() < e1);
        }

        /// Calibrated noise never exceeds the target ε, at any budget.
        #[test]
        fn calibration_never_exceeds_target(eps in 0.05f64..32.0, d in 1e-9f64..1e-3, iterations in 1u32..8) {
            let plan = Plan::default().with("a", 3.0, iterations, 0.5).with("b", 0.7, iterations, 0.5);
            let c = plan.calibrate(Budget::new(eps, d).unwrap()).unwrap();
            prop_assert!(c.epsilon <= eps);
            prop_assert!(epsilon_for_rho(rho(c.releases.iter().map(Release::rho).sum()), delta(d)).unwrap() <= eps);
        }
    }
}
