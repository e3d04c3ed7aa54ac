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

mod cg;
mod config;
mod error;
pub mod eval;
mod foldin;
mod linalg;
mod model;
mod release;
pub mod rules;
mod train;

pub use config::TrainParams;
pub use error::{Error, Result};
pub use foldin::SubjectVector;
pub use model::{
    DataProvenance, Model, ModelMeta, ModelPurpose, PrivacyGuarantee, ReleaseSeal, SealError, MODEL_KIND,
    MOSTLY_POPULARITY, SIGNING_PURPOSE,
};
pub use release::{plan, ReleaseKind, ReleaseLog, ReleasedState, RATING_QUANTUM};
pub use rules::DpRules;
pub use train::{train, train_with_mechanics, ItemGramSource, IterationReport, IterationRule, Mechanics, Privacy};
