//! Differential-privacy accounting and noise for hush.
//!
//! The privacy unit is **one subject**: neighbouring datasets differ in all of
//! one subject's interactions (user-level DP). Every release in training is a
//! Gaussian mechanism, accounted in zero-concentrated DP (zCDP), where
//! releases compose by adding their ρ. The total ρ is converted to
//! (ε, δ)-DP with OpenDP's conversion (`make_zCDP_to_approxDP`, the tight
//! bound of Canonne, Kamath and Steinke 2020), cross-checked in tests
//! against a closed form computed here.
//!
//! - [`Epsilon`], [`Delta`], [`Rho`]: validated parameters; [`Budget`] a target.
//! - [`Plan`]: the statistics a training run releases, with their L2
//!   sensitivities and shares of ρ; [`Plan::calibrate`] finds the noise scales
//!   for a budget by bisection, and the achieved ε never exceeds the target.
//! - [`NoiseSource`]: the Gaussian sampler used in training.
#![deny(missing_docs)]

mod accountant;
mod noise;
mod params;

pub use accountant::{
    epsilon_closed_form, epsilon_for_rho, epsilon_simple_bound, rho_for_epsilon, Calibration, Plan, PlannedRelease,
    Release,
};
pub use noise::NoiseSource;
pub use params::{Budget, Delta, Epsilon, Rho};

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong in accounting.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Error {
    /// A parameter outside its allowed range.
    #[error("invalid {name}: {message}")]
    InvalidParameter {
        /// The parameter.
        name: &'static str,
        /// What is allowed.
        message: String,
    },
    /// OpenDP refused a computation.
    #[error("OpenDP: {0}")]
    OpenDp(String),
    /// A plan that cannot be calibrated (no releases, or shares that do not add up).
    #[error("privacy plan: {0}")]
    Plan(String),
}
