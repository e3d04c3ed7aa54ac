//! The real-data checks on MovieLens latest-small, which the tests cannot make
//! (the file is research data under its own licence, read in place from
//! `../shared/data/ml-latest-small` and never copied into the repository).
//!
//! `cargo bench --bench movielens`. When the data is not beside the project it
//! prints `SKIPPED: ../shared/data/ml-latest-small is not here` and exits 0;
//! when it is, every check runs, and any failure makes it exit 1. The tests
//! check the same code on MovieLens-shaped synthetic data (`hush synth
//! --format movielens-csv`).
//!
//! Moved here from the tests (issue 18):
//! - `crates/features/tests/features/movielens.rs`: the exact counts of
//!   ml-latest-small and the contribution bound on its heavy raters;
//! - `tests/integration/cli.rs` `research_data_extraction_of_movielens`: the same counts
//!   (100,836 ratings, 610 users, 9,724 movies);
//! - `crates/mf/tests/mf/training.rs` `movielens_reaches_a_sane_rmse_private_and_not`
//!   and `tests/integration/cli.rs` `train_evaluate_recommend_and_inspect_on_real_files`:
//!   the RMSE sanity bounds, private and not.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use hush_consent::{PseudonymKey, Timestamp};
use hush_features::split::split;
use hush_features::{ConsentView, DropReason, ExtractParams, Extractor, FeatureSet, Feedback, SplitSpec};
use hush_formats::EventFormat;
use hush_mf::eval::{self, EvalOptions};
use hush_mf::{train, Privacy, TrainParams};
use hush_privacy::{Budget, NoiseSource};

/// What one check found: Ok, or what was wrong.
type Outcome = Result<(), String>;

/// One real-data check.
type Check = fn(&Path) -> Outcome;

/// Fails the check with a message unless `cond` holds (a NaN comparison
/// does not hold, so a NaN metric fails).
macro_rules! ensure {
    ($cond:expr, $($message:tt)+) => {
        let holds: bool = $cond;
        if !holds {
            return Err(format!($($message)+));
        }
    };
}

fn extract(ratings: &Path, bound: Option<u32>) -> Result<(FeatureSet, hush_features::ExtractionReport), String> {
    let now = Timestamp::now();
    let params = ExtractParams {
        feedback: Feedback::Explicit,
        research_data: true,
        max_events_per_subject: bound,
        strict: true,
        ..ExtractParams::default()
    };
    let config = params.validate(now).map_err(|e| e.to_string())?;
    let view = ConsentView::research(&config);
    let key = PseudonymKey::from_bytes([0; 32]);
    let mut extractor = Extractor::new(&config, &view, &key);
    extractor.add_file(ratings, &EventFormat::MovielensCsv, &mut |_| {}).map_err(|e| e.to_string())?;
    extractor.finish(now).map_err(|e| e.to_string())
}

/// The exact counts of ml-latest-small, read as research data.
fn exact_counts(ratings: &Path) -> Outcome {
    let (set, report) = extract(ratings, None)?;
    ensure!(report.rows_in == 100_836, "rows_in {} (expected 100,836)", report.rows_in);
    ensure!(report.events_kept == 100_836, "events_kept {} (expected 100,836)", report.events_kept);
    ensure!(set.nnz() == 100_836, "nnz {} (expected 100,836)", set.nnz());
    ensure!(set.n_subjects() == 610, "{} subjects (expected 610)", set.n_subjects());
    ensure!(set.n_items() == 9_724, "{} items (expected 9,724)", set.n_items());
    ensure!(set.meta.research_only, "the feature set is not marked research-only");
    // Subjects are in key order, interactions in item order: user 1 is the
    // subject with 232 ratings whose first (smallest) movie, "1", is rated 4.0.
    let user1 = (0..set.n_subjects()).find(|&s| {
        set.by_subject.range(s).len() == 232
            && set.subject_interactions(s).next().is_some_and(|i| set.items[i.item as usize] == "1" && i.value == 4.0)
    });
    let Some(user1) = user1 else {
        return Err("no subject has user 1's 232 ratings starting with movie 1 at 4.0".into());
    };
    let parts = split(&set, &SplitSpec::Holdout { fraction: 0.2, seed: 42 });
    let total = parts.train.nnz() + parts.test.nnz();
    ensure!(total == 100_836, "train + test hold {total} ratings (expected 100,836)");
    let held = parts.test.by_subject.range(user1).len();
    ensure!(held == 46, "user 1 has {held} held-out ratings (expected round(0.2 * 232) = 46)");
    Ok(())
}

/// A contribution bound of 100 caps the heavy raters, who dominate ml-latest-small.
fn contribution_bound(ratings: &Path) -> Outcome {
    let (set, report) = extract(ratings, Some(100))?;
    ensure!((0..set.n_subjects()).all(|s| set.by_subject.range(s).len() <= 100), "a subject keeps over 100 ratings");
    ensure!(set.n_subjects() == 610, "{} subjects (expected 610)", set.n_subjects());
    let dropped = report.dropped_events.get(&DropReason::OverContributionBound).copied().unwrap_or(0);
    ensure!(report.events_kept + dropped == 100_836, "kept {} + dropped {dropped} != 100,836", report.events_kept);
    ensure!(dropped > 40_000, "only {dropped} ratings over the bound (expected over 40,000)");
    Ok(())
}

/// The RMSE sanity bounds on a 20% holdout: the non-private twin under 0.9
/// and below the item mean, DP at epsilon 8 below the global mean.
fn rmse_sanity(ratings: &Path) -> Outcome {
    let (set, _) = extract(ratings, None)?;
    let parts = split(&set, &SplitSpec::Holdout { fraction: 0.2, seed: 42 });
    let options = EvalOptions::default();
    let params = TrainParams { rank: 32, iterations: 8, lambda: 0.1, ..TrainParams::default() };
    let twin = train(&parts.train, &params, Privacy::NonPrivate, &mut |_| {}).map_err(|e| e.to_string())?;
    let rating = |m| eval::evaluate(m, &parts.train, &parts.test, options).rating.map(|r| r.rmse);
    let twin_rmse = rating(&twin).ok_or("no rating metrics for the twin")?;
    let base = eval::baselines(&parts.train, &parts.test, options);
    let item_mean = base.item_mean.ok_or("no item-mean baseline")?.rmse;
    let global_mean = base.global_mean.ok_or("no global-mean baseline")?.rmse;
    println!("  non-private RMSE {twin_rmse:.4}, item mean {item_mean:.4}, global mean {global_mean:.4}");
    ensure!(twin_rmse < 0.9, "non-private RMSE {twin_rmse:.4} (expected under 0.9)");
    ensure!(twin_rmse < item_mean, "non-private RMSE {twin_rmse:.4} does not beat the item mean {item_mean:.4}");
    let dp_params = TrainParams { rank: 16, iterations: 2, clip_norm: 1.0, ..params };
    let privacy = Privacy::Dp {
        budget: Budget::new(8.0, 1e-6).map_err(|e| e.to_string())?,
        noise: Box::new(NoiseSource::seeded(1)),
        rules: None,
    };
    let dp = train(&parts.train, &dp_params, privacy, &mut |_| {}).map_err(|e| e.to_string())?;
    let dp_rmse = rating(&dp).ok_or("no rating metrics for the DP model")?;
    println!("  DP (epsilon 8) RMSE {dp_rmse:.4}");
    ensure!(dp_rmse < global_mean, "DP RMSE {dp_rmse:.4} does not beat the global mean {global_mean:.4}");
    Ok(())
}

fn main() -> ExitCode {
    // The project root at run time (cargo sets it for the checkout it runs
    // in), so that a binary built from another copy of the checkout with the
    // same target directory still looks beside this one.
    let root =
        std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    let data = root.join("../shared/data/ml-latest-small");
    let ratings = data.join("ratings.csv");
    if !ratings.exists() {
        println!("SKIPPED: ../shared/data/ml-latest-small is not here");
        return ExitCode::SUCCESS;
    }
    let checks: [(&str, Check); 3] = [
        ("exact counts of ml-latest-small", exact_counts),
        ("the contribution bound caps heavy raters", contribution_bound),
        ("RMSE sanity bounds, private and not", rmse_sanity),
    ];
    let mut failed = 0;
    for (name, check) in checks {
        let start = Instant::now();
        match check(&ratings) {
            Ok(()) => println!("ok      {name} ({:.1} s)", start.elapsed().as_secs_f64()),
            Err(why) => {
                println!("FAILED  {name}: {why}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        println!("{failed} of {} real-data checks failed on {}", checks.len(), data.display());
        return ExitCode::FAILURE;
    }
    println!("all {} real-data checks passed on {}", checks.len(), data.display());
    ExitCode::SUCCESS
}
