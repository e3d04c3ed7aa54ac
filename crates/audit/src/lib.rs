//! Empirical privacy auditing of hush models in one training run, after
//! Steinke, Nasr & Jagielski, "Privacy Auditing with One (1) Training Run"
//! (NeurIPS 2023).
//!
//! The audit inserts m synthetic canary subjects into a feature set, each
//! included independently with probability ½, trains one model, scores each
//! canary's membership from the released model alone, guesses "in" for the
//! highest scores and "out" for the lowest, and turns the number of correct
//! guesses into a lower bound on ε that holds with confidence 1 − β.
//!
//! - [`bound`]: the paper's p-value and the ε lower bound (the statistics).
//! - [`guess`]: ranking scores into guesses, and counting the correct ones.
//! - [`canary`]: building canaries into a feature set and scoring them.
//!
//! A DP model whose audit reports a lower bound above its claimed ε breaks
//! its guarantee (or the audit was unlucky, with probability at most β).

pub mod bound;
pub mod canary;
mod error;
pub mod guess;

pub use bound::{epsilon_lower_bound, p_value};
pub use canary::{insert_canaries, Canaries, CanaryPlan};
pub use error::{Error, Result};
pub use guess::{guess_by_rank, tally, Guess, Tally};
