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

use crate::{Budget, Delta, Error, PrivacyLoss, Result, Rho};

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
    // OpenDP's arithmetic swaps the process's panic hook for a silent one
    // and back (`catch_unwind_silent`); two threads doing that at once can
    // leave the silent hook installed for good, and every later panic
    // message of the process is lost. One caller at a time keeps it paired.
    static OPENDP: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = OPENDP.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut scale = (1.0 / (2.0 * rho.value())).sqrt();
    // Each step lowers the scale by one ulp; OpenDP's ρ is within a few ulps
    // of 1/(2·scale²), so a handful of steps always suffice.
    for _ in 0..64 {
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
    Err(Error::OpenDp(format!("no Gaussian scale reproduces rho {} within 64 ulps", rho.value())))
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
    f(golden_section_argmin(&f, -12.0, 12.0, 200)).min(1.0)
}

/// The argument minimizing a unimodal `f` on [lo, hi], by golden-section search.
fn golden_section_argmin(f: &dyn Fn(f64) -> f64, mut lo: f64, mut hi: f64, steps: usize) -> f64 {
    let g = (5f64.sqrt() - 1.0) / 2.0;
    for _ in 0..steps {
        let m1 = hi - g * (hi - lo);
        let m2 = lo + g * (hi - lo);
        if f(m1) < f(m2) {
            hi = m2;
        } else {
            lo = m1;
        }
    }
    (lo + hi) / 2.0
}

/// ε at δ for ρ-zCDP from the Canonne–Kamath–Steinke bound (2020, Prop. 12),
/// computed independently of OpenDP by bisection on ε of that δ(ε).
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

/// ε at δ for ρ-zCDP by the same bound in its ε form (Canonne, Kamath and
/// Steinke 2020, Cor. 13): the infimum over α > 1 of
/// αρ + (ln(1/δ) + (α−1)·ln(1−1/α) − ln α)/(α−1), minimized by
/// golden-section search on ln(α−1). Every α gives a valid bound, so an
/// inexact minimum can only overstate ε. Cheap enough for inner loops.
pub fn epsilon_cks(rho: f64, delta: f64) -> f64 {
    let f = |log_am1: f64| {
        let a = 1.0 + log_am1.exp();
        a * rho + ((1.0 / delta).ln() + (a - 1.0) * (-1.0 / a).ln_1p() - a.ln()) / (a - 1.0)
    };
    f(golden_section_argmin(&f, -12.0, 16.0, 90)).max(0.0)
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

/// How a release is perturbed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoiseKind {
    /// Continuous Gaussian noise on real-valued statistics: exactly
    /// (Δ/σ)-GDP per release.
    Gaussian,
    /// The exact discrete Gaussian on integer statistics (counts):
    /// Δ²/(2σ²)-zCDP per release (Canonne, Kamath and Steinke 2020, Thm. 14).
    DiscreteGaussian,
}

/// One kind of statistic a training run releases, before calibration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlannedRelease {
    /// What is released, e.g. `item_gram`: for people.
    pub name: String,
    /// The release kind's stable code: what noise streams and lookups use.
    pub code: u32,
    /// Continuous or discrete noise.
    pub noise: NoiseKind,
    /// L2 sensitivity of one release: how far one subject's data can move it.
    pub l2_sensitivity: f64,
    /// How many times it is released (e.g. once per iteration).
    pub count: u32,
    /// The share of the run's privacy loss spent on all `count` releases.
    pub share: f64,
}

/// A calibrated release: what the trainer adds noise with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Release {
    /// What is released.
    pub name: String,
    /// The release kind's stable code.
    pub code: u32,
    /// Continuous or discrete noise.
    pub noise: NoiseKind,
    /// L2 sensitivity of one release.
    pub l2_sensitivity: f64,
    /// How many times it is released.
    pub count: u32,
    /// Standard deviation of the noise added to each coordinate.
    pub noise_std: f64,
}

impl Release {
    /// count · Δ²/σ²: this release's part of μ² (continuous) or of 2ρ (discrete).
    pub fn mu_squared(&self) -> f64 {
        f64::from(self.count) * self.l2_sensitivity.powi(2) / self.noise_std.powi(2)
    }

    /// ρ of all `count` releases as zCDP: count · Δ² / (2σ²).
    pub fn rho(&self) -> f64 {
        self.mu_squared() / 2.0
    }
}

/// The statistics a training run releases.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The releases, in the order they happen.
    pub releases: Vec<PlannedRelease>,
    /// δ spent outside the Gaussian releases (e.g. thresholding an item set).
    pub delta_extra: f64,
}

/// A plan calibrated to a budget.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// The releases with their noise scales.
    pub releases: Vec<Release>,
    /// The run's loss in the parts that compose exactly.
    pub loss: PrivacyLoss,
    /// Total ρ of the run as zCDP (μ²/2 + ρ of the discrete releases).
    pub rho: f64,
    /// The stated ε at `delta`: never above the target.
    pub epsilon: f64,
    /// ε by the GDP certificate (see [`PrivacyLoss::epsilon_at`]).
    pub epsilon_gdp: f64,
    /// ε by OpenDP's conversion of ρ, the cross-check.
    pub epsilon_zcdp: f64,
    /// δ.
    pub delta: f64,
    /// ε by the simple bound ρ + 2√(ρ ln 1/δ), for comparison.
    pub epsilon_simple_bound: f64,
}

impl Calibration {
    /// The same calibration with release `code` made `count` times instead
    /// of as planned, each with its noise scaled by √(count / planned count) so
    /// that the release's total loss (count·Δ²/σ²) is unchanged; σ is rounded
    /// outward until it is at most the planned loss, and ε is read again.
    ///
    /// # Privacy
    /// Every choice of `count` has the same privacy loss, so the count may be
    /// chosen from earlier DP outputs (e.g. noisy item counts) without changing
    /// the guarantee: adaptive composition of mechanisms whose loss is fixed in
    /// advance.
    ///
    /// # Errors
    /// [`Error::Plan`] if there is no such release, `count` is zero, or ε would
    /// exceed the budget's (it cannot, but the guarantee is checked, not assumed).
    pub fn with_count(&self, code: u32, count: u32, budget: Budget) -> Result<Calibration> {
        if count == 0 {
            return Err(Error::Plan("a release must be made at least once".into()));
        }
        let planned = self.release(code)?.clone();
        let mut releases = self.releases.clone();
        let release = releases.iter_mut().find(|r| r.code == code).expect("looked up above");
        release.count = count;
        release.noise_std = planned.noise_std * (f64::from(count) / f64::from(planned.count)).sqrt();
        while release.mu_squared() > planned.mu_squared() {
            release.noise_std *= 1.0 + 1e-12;
        }
        self.checked(releases, budget, &format!("re-counting {}", planned.name))
    }

    /// The same calibration with the Gaussian releases `removed` replaced by
    /// one Gaussian release `added`, made once, whose noise carries exactly
    /// their loss: Δ²/σ² = Σ countᵢ·Δᵢ²/σᵢ² over the removed ones (σ rounded
    /// outward as in [`Calibration::with_count`]); ε is read again.
    /// `added.noise_std` and `added.count` are ignored.
    ///
    /// # Privacy
    /// The exchanged releases and the new one have the same loss, fixed in
    /// advance, so which of them a run makes may be chosen from earlier DP
    /// outputs without changing the guarantee (adaptive composition), e.g.
    /// spending the factor iterations' budget on a second count release when
    /// the noisy counts show the factors would be noise.
    ///
    /// # Errors
    /// [`Error::Plan`] if a removed code is not a Gaussian release of this
    /// calibration, `added` is not Gaussian or its code is taken, or ε would
    /// exceed the budget's.
    pub fn exchanged(&self, removed: &[u32], added: Release, budget: Budget) -> Result<Calibration> {
        if added.noise != NoiseKind::Gaussian {
            return Err(Error::Plan(format!("{}: only a Gaussian release can take a Gaussian one's loss", added.name)));
        }
        if !(added.l2_sensitivity.is_finite() && added.l2_sensitivity > 0.0) {
            return Err(Error::Plan(format!("{}: sensitivity must be finite and > 0", added.name)));
        }
        let mut mu_squared = 0.0;
        for (i, &code) in removed.iter().enumerate() {
            if removed[..i].contains(&code) {
                return Err(Error::Plan(format!("release code {code} is named twice")));
            }
            let release = self.release(code)?;
            if release.noise != NoiseKind::Gaussian {
                return Err(Error::Plan(format!("{} is not a Gaussian release", release.name)));
            }
            mu_squared += release.mu_squared();
        }
        if self.releases.iter().any(|r| r.code == added.code && !removed.contains(&r.code)) {
            return Err(Error::Plan(format!("release code {} is already taken", added.code)));
        }
        if mu_squared.is_nan() || mu_squared <= 0.0 {
            return Err(Error::Plan("nothing to exchange".into()));
        }
        let mut release = Release { count: 1, noise_std: added.l2_sensitivity / mu_squared.sqrt(), ..added };
        while release.mu_squared() > mu_squared {
            release.noise_std *= 1.0 + 1e-12;
        }
        let mut releases: Vec<Release> = self.releases.iter().filter(|r| !removed.contains(&r.code)).cloned().collect();
        releases.push(release);
        self.checked(releases, budget, "exchanging releases")
    }

    /// A calibration of `releases`, with ε read again and checked against `budget`.
    fn checked(&self, releases: Vec<Release>, budget: Budget, what: &str) -> Result<Calibration> {
        let loss = loss_of(&releases, self.loss.delta_extra);
        let at = loss.epsilon_at(budget.delta)?;
        if at.epsilon > budget.epsilon.value() {
            return Err(Error::Plan(format!(
                "{what} would raise epsilon to {}, over the budget's {}",
                at.epsilon,
                budget.epsilon.value()
            )));
        }
        Ok(Calibration {
            releases,
            rho: loss.rho(),
            loss,
            epsilon: at.epsilon,
            epsilon_gdp: at.epsilon_gdp,
            epsilon_zcdp: at.epsilon_zcdp,
            delta: budget.delta.value(),
            epsilon_simple_bound: epsilon_simple_bound(Rho::new(loss.rho())?, budget.delta),
        })
    }

    /// The release with this code.
    ///
    /// # Errors
    /// [`Error::Plan`] if the plan has no such release: a trainer asking for
    /// a release that was never planned must fail, not add no noise.
    pub fn release(&self, code: u32) -> Result<&Release> {
        self.releases
            .iter()
            .find(|r| r.code == code)
            .ok_or_else(|| Error::Plan(format!("no release with code {code} was planned")))
    }
}

/// The loss of a set of calibrated releases.
pub fn loss_of(releases: &[Release], delta_extra: f64) -> PrivacyLoss {
    let mut loss = PrivacyLoss { delta_extra, ..PrivacyLoss::default() };
    for r in releases {
        match r.noise {
            NoiseKind::Gaussian => loss.mu_squared += r.mu_squared(),
            NoiseKind::DiscreteGaussian => loss.rho_discrete += r.rho(),
        }
    }
    loss
}

impl Plan {
    /// Adds a release.
    #[must_use]
    pub fn with(mut self, release: PlannedRelease) -> Self {
        self.releases.push(release);
        self
    }

    /// Reserves δ for a step outside the Gaussian releases.
    #[must_use]
    pub fn with_delta_extra(mut self, delta: f64) -> Self {
        self.delta_extra = delta;
        self
    }

    fn check(&self) -> Result<()> {
        if self.releases.is_empty() {
            return Err(Error::Plan("no releases to calibrate".into()));
        }
        for (i, r) in self.releases.iter().enumerate() {
            if !(r.l2_sensitivity.is_finite() && r.l2_sensitivity > 0.0) {
                return Err(Error::Plan(format!(
                    "{}: sensitivity must be finite and > 0, found {}",
                    r.name, r.l2_sensitivity
                )));
            }
            if !(r.share > 0.0 && r.share <= 1.0) || r.count == 0 {
                return Err(Error::Plan(format!("{}: share must be in (0, 1] and count >= 1", r.name)));
            }
            if self.releases[..i].iter().any(|earlier| earlier.code == r.code) {
                return Err(Error::Plan(format!("{}: code {} is used twice", r.name, r.code)));
            }
        }
        let total: f64 = self.releases.iter().map(|r| r.share).sum();
        if (total - 1.0).abs() > 1e-9 {
            return Err(Error::Plan(format!("shares add up to {total}, not 1")));
        }
        if !(self.delta_extra.is_finite() && self.delta_extra >= 0.0) {
            return Err(Error::Plan(format!("extra delta must be >= 0, found {}", self.delta_extra)));
        }
        Ok(())
    }

    /// Noise scales for a total loss of `m` (in units of μ²): release i gets
    /// countᵢ·Δᵢ²/σᵢ² = shareᵢ · m.
    fn scales_for(&self, m: f64) -> Vec<Release> {
        self.releases
            .iter()
            .map(|r| Release {
                name: r.name.clone(),
                code: r.code,
                noise: r.noise,
                l2_sensitivity: r.l2_sensitivity,
                count: r.count,
                noise_std: r.l2_sensitivity * (f64::from(r.count) / (r.share * m)).sqrt(),
            })
            .collect()
    }

    /// Finds noise scales that meet `budget`.
    ///
    /// # Privacy
    /// The releases compose as described in [`PrivacyLoss::epsilon_at`].
    /// The total loss is found by bisection, then recomputed from the
    /// noise scales actually returned, and the scales are enlarged until
    /// the stated ε for that loss is at or below the target.
    ///
    /// # Errors
    /// [`Error::Plan`] for an invalid plan or a δ the plan's extra δ uses
    /// up, [`Error::OpenDp`] if OpenDP fails.
    pub fn calibrate(&self, budget: Budget) -> Result<Calibration> {
        self.check()?;
        if self.delta_extra >= budget.delta.value() {
            return Err(Error::Plan(format!(
                "the plan spends delta {} outside its Gaussian releases, all of the budget's {}",
                self.delta_extra,
                budget.delta.value()
            )));
        }
        let target = budget.epsilon.value();
        let epsilon_of = |m: f64| -> Result<f64> {
            Ok(loss_of(&self.scales_for(m), self.delta_extra).epsilon_at(budget.delta)?.epsilon)
        };
        let (mut low, mut high) = (0.0f64, 1.0f64);
        while epsilon_of(high)? <= target {
            low = high;
            high *= 2.0;
            if high > 1e12 {
                return Err(Error::Plan(format!("epsilon {target} needs no noise at all")));
            }
        }
        for _ in 0..100 {
            let mid = 0.5 * (low + high);
            if mid <= low || mid >= high {
                break;
            }
            if epsilon_of(mid)? <= target {
                low = mid;
            } else {
                high = mid;
            }
        }
        if low <= 0.0 {
            return Err(Error::Plan(format!("no noise scale meets epsilon {target}")));
        }
        let mut releases = self.scales_for(low);
        loop {
            let loss = loss_of(&releases, self.delta_extra);
            let at = loss.epsilon_at(budget.delta)?;
            if at.epsilon <= target {
                let rho = loss.rho();
                return Ok(Calibration {
                    releases,
                    loss,
                    rho,
                    epsilon: at.epsilon,
                    epsilon_gdp: at.epsilon_gdp,
                    epsilon_zcdp: at.epsilon_zcdp,
                    delta: budget.delta.value(),
                    epsilon_simple_bound: epsilon_simple_bound(Rho::new(rho)?, budget.delta),
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

    fn planned(name: &str, code: u32, noise: NoiseKind, l2_sensitivity: f64, count: u32, share: f64) -> PlannedRelease {
        PlannedRelease { name: name.into(), code, noise, l2_sensitivity, count, share }
    }

    fn plan() -> Plan {
        Plan::default()
            .with(planned("counts", 1, NoiseKind::DiscreteGaussian, 4.0, 1, 0.1))
            .with(planned("gram", 2, NoiseKind::Gaussian, 4.0, 3, 0.45))
            .with(planned("rhs", 3, NoiseKind::Gaussian, 2.0, 3, 0.45))
    }

    #[test]
    fn calibrated_plan_meets_the_target_and_composes() {
        let budget = Budget::new(1.0, 1e-6).unwrap();
        let c = plan().calibrate(budget).unwrap();
        assert!(c.epsilon <= 1.0, "{}", c.epsilon);
        assert!(c.epsilon > 0.99, "calibration should spend nearly all of the budget: {}", c.epsilon);
        let summed: f64 = c.releases.iter().map(Release::rho).sum();
        assert!((summed - c.rho).abs() < 1e-12);
        let continuous: f64 = c.releases[1..].iter().map(Release::mu_squared).sum();
        assert!((continuous - c.loss.mu_squared).abs() < 1e-12);
        assert!((c.releases[0].rho() - c.loss.rho_discrete).abs() < 1e-15);
        // The shares hold: each release spends its share of the loss.
        let total: f64 = c.releases.iter().map(Release::mu_squared).sum();
        for (r, share) in c.releases.iter().zip([0.1, 0.45, 0.45]) {
            assert!((r.mu_squared() / total - share).abs() < 1e-9, "{}", r.name);
        }
        // The stated ε is the better of the two certificates, both recorded.
        assert_eq!(c.epsilon, c.epsilon_gdp.min(c.epsilon_zcdp), "{c:?}");
        // Without a discrete release it is the exact GDP one, below OpenDP's.
        let continuous = Plan::default()
            .with(planned("gram", 2, NoiseKind::Gaussian, 4.0, 3, 0.5))
            .with(planned("rhs", 3, NoiseKind::Gaussian, 2.0, 3, 0.5))
            .calibrate(budget)
            .unwrap();
        assert!(continuous.epsilon_gdp < continuous.epsilon_zcdp && continuous.epsilon == continuous.epsilon_gdp);
        assert!(continuous.epsilon > 0.99 && continuous.epsilon <= 1.0, "{continuous:?}");
        assert!(c.epsilon_simple_bound > c.epsilon_zcdp);
        assert_eq!(c.release(2).unwrap().name, "gram");
        assert!(c.release(9).is_err(), "an unplanned release is an error, not zero noise");
        assert_eq!(
            plan().with(planned("extra", 4, NoiseKind::Gaussian, 1.0, 1, 0.5)).calibrate(budget).unwrap_err(),
            Error::Plan("shares add up to 1.5, not 1".into())
        );
        assert!(matches!(
            Plan::default().with(planned("a", 1, NoiseKind::Gaussian, 1.0, 1, 0.5))
                .with(planned("b", 1, NoiseKind::Gaussian, 1.0, 1, 0.5)).calibrate(budget),
            Err(Error::Plan(m)) if m.contains("used twice")
        ));
    }

    #[test]
    fn gdp_calibration_adds_less_noise_than_zcdp_calibration() {
        // The whole point of exact accounting: at the same target, less noise.
        let continuous = Plan::default().with(planned("gram", 2, NoiseKind::Gaussian, 4.0, 10, 1.0));
        let budget = Budget::new(2.0, 1e-6).unwrap();
        let exact = continuous.calibrate(budget).unwrap();
        let rho = rho_for_epsilon(budget).unwrap().value();
        let zcdp_sigma = 4.0 * (10.0 / (2.0 * rho)).sqrt();
        let saving = 1.0 - exact.releases[0].noise_std / zcdp_sigma;
        assert!((0.03..0.12).contains(&saving), "noise saving {saving}");
    }

    #[test]
    fn only_gaussian_releases_are_exchanged_for_a_new_code() {
        let budget = Budget::new(1.0, 1e-6).unwrap();
        let c = plan().calibrate(budget).unwrap();
        let added =
            |code, noise| Release { name: "again".into(), code, noise, l2_sensitivity: 1.0, count: 1, noise_std: 0.0 };
        let refused = |r: Result<Calibration>, what: &str| {
            assert!(matches!(&r, Err(Error::Plan(m)) if m.contains(what)), "{r:?} should mention {what}");
        };
        refused(c.exchanged(&[1], added(9, NoiseKind::Gaussian), budget), "not a Gaussian release");
        refused(c.exchanged(&[2], added(9, NoiseKind::DiscreteGaussian), budget), "only a Gaussian release");
        refused(c.exchanged(&[2], added(3, NoiseKind::Gaussian), budget), "already taken");
        refused(c.exchanged(&[], added(9, NoiseKind::Gaussian), budget), "nothing to exchange");
        refused(c.exchanged(&[2, 2], added(9, NoiseKind::Gaussian), budget), "named twice");
        assert!(c.exchanged(&[7], added(9, NoiseKind::Gaussian), budget).is_err(), "no release 7");
        // The exchanged code may be reused by the new release.
        assert!(c.exchanged(&[2, 3], added(3, NoiseKind::Gaussian), budget).is_ok());
    }

    #[test]
    fn extra_delta_is_reserved() {
        let budget = Budget::new(1.0, 1e-6).unwrap();
        let with_extra = plan().with_delta_extra(1e-7).calibrate(budget).unwrap();
        assert!(with_extra.epsilon <= 1.0 && with_extra.loss.delta_extra == 1e-7);
        assert!(with_extra.releases[1].noise_std > plan().calibrate(budget).unwrap().releases[1].noise_std);
        assert!(plan().with_delta_extra(1e-6).calibrate(budget).is_err());
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
            // The fast ε form never understates OpenDP's and stays within 1e-6 of it.
            let fast = epsilon_cks(r.value(), d.value());
            prop_assert!(fast >= opendp * (1.0 - 1e-9) && fast - opendp <= 1e-6 * opendp.max(1.0), "opendp {} fast {}", opendp, fast);
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
            let plan = Plan::default()
                .with(planned("a", 1, NoiseKind::Gaussian, 3.0, iterations, 0.5))
                .with(planned("b", 2, NoiseKind::DiscreteGaussian, 0.7, 1, 0.5));
            let c = plan.calibrate(Budget::new(eps, d).unwrap()).unwrap();
            prop_assert!(c.epsilon <= eps);
            let recomputed = loss_of(&c.releases, 0.0).epsilon_at(delta(d)).unwrap();
            prop_assert!(recomputed.epsilon <= eps && recomputed.epsilon_zcdp >= recomputed.epsilon);
        }

        /// Re-counting a release (the trainer choosing its iterations from
        /// noisy counts) keeps its loss and never raises ε above the budget.
        #[test]
        fn recounting_keeps_the_loss(eps in 0.1f64..32.0, planned_count in 1u32..12, count in 1u32..40) {
            let plan = Plan::default()
                .with(planned("a", 1, NoiseKind::Gaussian, 3.0, planned_count, 0.6))
                .with(planned("b", 2, NoiseKind::DiscreteGaussian, 0.7, 1, 0.4));
            let budget = Budget::new(eps, 1e-6).unwrap();
            let c = plan.calibrate(budget).unwrap();
            let r = c.with_count(1, count, budget).unwrap();
            let (before, after) = (c.release(1).unwrap(), r.release(1).unwrap());
            prop_assert_eq!(after.count, count);
            prop_assert!(after.mu_squared() <= before.mu_squared());
            prop_assert!(after.mu_squared() >= before.mu_squared() * (1.0 - 1e-9));
            prop_assert!(r.epsilon <= eps);
            prop_assert_eq!(r.release(2).unwrap(), c.release(2).unwrap());
            // More releases of the same total loss: each is noisier.
            if count > planned_count {
                prop_assert!(after.noise_std > before.noise_std);
            }
        }

        /// Exchanging Gaussian releases for one of their combined loss (a
        /// popularity-only run spending the iterations' budget on counts)
        /// keeps the total loss and never raises ε above the budget.
        #[test]
        fn exchanging_keeps_the_loss(eps in 0.1f64..32.0, count in 1u32..12, sensitivity in 0.1f64..20.0) {
            let plan = Plan::default()
                .with(planned("counts", 1, NoiseKind::DiscreteGaussian, 2.0, 1, 0.3))
                .with(planned("gram", 2, NoiseKind::Gaussian, 1.0, count, 0.07))
                .with(planned("rhs", 3, NoiseKind::Gaussian, 9.0, count, 0.63));
            let budget = Budget::new(eps, 1e-6).unwrap();
            let c = plan.calibrate(budget).unwrap();
            let added = Release {
                name: "counts again".into(),
                code: 4,
                noise: NoiseKind::Gaussian,
                l2_sensitivity: sensitivity,
                count: 7,
                noise_std: 0.0,
            };
            let x = c.exchanged(&[2, 3], added, budget).unwrap();
            let before = c.release(2).unwrap().mu_squared() + c.release(3).unwrap().mu_squared();
            let after = x.release(4).unwrap();
            prop_assert_eq!(after.count, 1);
            prop_assert!(after.mu_squared() <= before && after.mu_squared() >= before * (1.0 - 1e-9));
            prop_assert!(x.epsilon <= eps && (x.epsilon - c.epsilon).abs() <= 1e-6 * eps);
            prop_assert!(x.release(2).is_err() && x.release(3).is_err());
            prop_assert_eq!(x.release(1).unwrap(), c.release(1).unwrap());
        }
    }
}
