//! Differential-privacy accounting and noise for hush.
//!
//! The privacy unit is **one subject**: neighbouring datasets differ in all of
//! one subject's interactions (user-level DP). Every release in training is a
//! Gaussian mechanism: continuous Gaussian noise on real-valued statistics,
//! the exact discrete Gaussian on counts. The continuous releases compose
//! exactly into one Gaussian mechanism (μ-GDP, Dong, Roth and Su 2019) whose
//! (ε, δ) curve is known in closed form (Balle and Wang 2018); the discrete
//! ones are ρ-zCDP. [`PrivacyLoss`] keeps both parts and states ε by the
//! tighter of two certificates, one of them OpenDP's zCDP conversion.
//!
//! - [`Epsilon`], [`Delta`], [`Rho`]: validated parameters; [`Budget`] a target.
//! - [`Plan`]: the statistics a training run releases, with their L2
//!   sensitivities and shares of the loss; [`Plan::calibrate`] finds the noise
//!   scales for a budget by bisection, and the stated ε never exceeds the target.
//! - [`NoiseSource`]: the run's noise key; [`NoiseSource::stream`] opens the
//!   stream of one (release, iteration, index), never shared with another.
//! - [`seed::key_from_seed`]: the one way a seed becomes a key, per domain.
//!
//! # SIMD kernels
//! The Gaussian sampler's fast path (the ziggurat's rectangles) has an
//! AVX2 kernel beside its portable code; both give the same bits. The
//! [`KernelLevel`] (portable or AVX2) is chosen once per process: AVX2
//! where the CPU has it, or the portable code when the environment
//! variable `HUSH_KERNEL` is `portable` (as for `hush-mf`'s kernels).
//! Unset, empty or `auto` detects; any other value is ignored.
//! [`kernel_level`] tells which level runs. All of the crate's `unsafe`
//! code is in its private `kernels` module.

mod accountant;
mod discrete;
mod gdp;
mod kernels;
mod noise;
mod params;
pub mod seed;

pub use accountant::{
    epsilon_closed_form, epsilon_for_rho, epsilon_simple_bound, loss_of, rho_for_epsilon, Calibration, NoiseKind, Plan,
    PlannedRelease, Release,
};
pub use gdp::{gaussian_delta, gaussian_epsilon, normal_cdf, EpsilonAt, PrivacyLoss};
pub use kernels::{kernel_level, KernelLevel, KernelSwitch, KERNEL_SWITCH_VAR};
pub use noise::{NoiseSource, NoiseStream, StreamId};
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
