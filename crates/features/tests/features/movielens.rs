//! The real MovieLens latest-small file, read as research data.

use hush_consent::formats::EventFormat;
use hush_consent::PseudonymKey;
use hush_features::split::split;
use hush_features::{ConsentView, ExtractParams, Extractor, Feedback, SplitSpec};

fn extract(bound: Option<u32>) -> (hush_features::FeatureSet, hush_features::ExtractionReport) {
    let now = hush_consent::Timestamp::now();
    let params = ExtractParams {
        feedback: Feedback::Explicit,
        research_data: true,
        max_events_per_subject: bound,
        strict: true,
        ..ExtractParams::default()
    };
    let config = params.validate(now).unwrap();
    let view = ConsentView::research(&config);
    let key = PseudonymKey::from_bytes([0; 32]);
    let mut extractor = Extractor::new(&config, &view, &key);
    extractor.add_file(&super::movielens_small(), &EventFormat::MovielensCsv, &mut |_| {}).unwrap();
    extractor.finish(now).unwrap()
}

#[test]
fn exact_counts_of_ml_latest_small() {
    let (set, report) = extract(None);
    assert_eq!(report.rows_in, 100_836);
    assert_eq!(report.events_kept, 100_836);
    assert_eq!(set.nnz(), 100_836);
    assert_eq!(set.n_subjects(), 610);
    assert_eq!(set.n_items(), 9_724);
    assert!(set.meta.research_only);
    // Subjects are in key order, interactions in item order: user 1 rated 232
    // movies, movie 1 (the first item, "1" < "10" < ...) at 4.0.
    let user1 = (0..set.n_subjects())
        .find(|&s| {
            set.by_subject.range(s).len() == 232
                && set.subject_interactions(s).next().is_some_and(|i| i.item == 0 && i.value == 4.0)
        })
        .expect("user 1");
    assert_eq!(set.items[0], "1");

    let parts = split(&set, &SplitSpec::Holdout { fraction: 0.2, seed: 42 });
    assert_eq!(parts.train.nnz() + parts.test.nnz(), 100_836);
    assert_eq!(parts.test.by_subject.range(user1).len(), 46); // round(0.2 * 232)
}

#[test]
fn the_contribution_bound_caps_heavy_raters() {
    let (set, report) = extract(Some(100));
    assert!((0..set.n_subjects()).all(|s| set.by_subject.range(s).len() <= 100));
    assert_eq!(set.n_subjects(), 610);
    let dropped = report.dropped_events[&hush_features::DropReason::OverContributionBound];
    assert_eq!(report.events_kept + dropped, 100_836);
    assert!(dropped > 40_000, "heavy raters dominate ml-latest-small: {dropped}");
}
