//! Matrix factorization for hush: the recommender and its privacy.
//!
//! - [`train`]: ALS with biases and frequency-scaled regularization
//!   (explicit ratings), weighted ALS (implicit signals, Hu, Koren and
//!   Volinsky 2008), and DP-ALS (Chien et al., ICML 2021) with user-level
//!   (ε, δ)-DP; the non-private twin is the same code without noise.
//! - [`Model`]: the released item side, saved in a checksummed envelope with
//!   its [`PrivacyGuarantee`]; [`Model::fold_in`] computes a subject's vector
//!   at request time from their own interactions.
//! - [`eval`]: rating and ranking metrics, baselines and the fairness audit.
//!
//! # SIMD kernels
//! The hot loops have SIMD kernels beside their portable code: the
//! conjugate-gradient solve of training and request-time fold-in compiled
//! for AVX2+FMA, an AVX-512F+FMA fold-in solve for implicit models, and the
//! quantized first scoring pass of [`Model::top_k`] on AVX-512 VNNI or AVX2.
//! The [`KernelLevel`] (portable, AVX2+FMA, AVX-512F+FMA, AVX-512 VNNI) is
//! chosen once per process: the highest the CPU supports, or the portable
//! code everywhere when the environment variable `HUSH_KERNEL` is
//! `portable`. Unset, empty or `auto` detects; any other value is ignored
//! with a warning. [`kernel_level`] tells which level runs. All of the
//! crate's `unsafe` code is in its private `kernels` module.

mod cg;
mod config;
mod error;
pub mod eval;
mod foldin;
mod kernels;
mod linalg;
mod model;
mod release;
pub mod rules;
mod train;

pub use config::TrainParams;
pub use error::{Error, Result};
pub use foldin::SubjectVector;
pub use kernels::{kernel_level, KernelLevel};
pub use model::{
    DataProvenance, Model, ModelMeta, ModelPurpose, PrivacyGuarantee, ReleaseSeal, SealError, MODEL_KIND,
    MOSTLY_POPULARITY, SIGNING_PURPOSE,
};
pub use release::{counts_again_release, plan, ReleaseKind, ReleaseLog, ReleasedState, RATING_QUANTUM};
pub use rules::DpRules;
pub use train::{
    dp_popularity_counts, train, train_with_mechanics, ItemGramSource, IterationReport, IterationRule, Mechanics,
    Privacy,
};
