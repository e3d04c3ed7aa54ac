//! Integration tests of `hush-features`: one binary, one module per concern.

mod consent_view;
mod extract;
mod featureset;
mod movielens;

use std::path::PathBuf;
use std::sync::OnceLock;

/// A MovieLens-shaped `ratings.csv` made by `hush-synth` (610 users, 1,000
/// movies, seed 1), generated once per test run in Cargo's temporary
/// directory: the tests need nothing beside the project. The real
/// ml-latest-small checks live in the root bench `benches/movielens.rs`.
pub fn movielens_shaped() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("hush-features-movielens-shaped");
        hush_synth::generate(&hush_synth::SynthParams::movielens_shaped(), &dir, &mut |_| {})
            .expect("the MovieLens-shaped fixture can be generated");
        dir.join("ratings.csv")
    })
    .clone()
}
