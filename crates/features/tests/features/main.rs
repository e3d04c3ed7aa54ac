//! Integration tests of `hush-features`: one binary, one module per concern.

mod consent_view;
mod extract;
mod featureset;
mod movielens;

use std::path::{Path, PathBuf};

/// The MovieLens latest-small ratings beside the project (research-only
/// licence: read in place, never copied). Tests that need it fail, not skip,
/// when it is missing.
pub fn movielens_small() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/ml-latest-small/ratings.csv");
    assert!(path.exists(), "{} is missing: these tests need ../shared beside the project root", path.display());
    path
}
