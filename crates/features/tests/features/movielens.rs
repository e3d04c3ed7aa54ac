//! A MovieLens-shaped file (synthetic, see [`super::movielens_shaped`]), read
//! as research data. Every expected number is computed from the file itself
//! by a plain reading of its lines, independently of the extractor.

use std::collections::{BTreeMap, BTreeSet};

use hush_consent::PseudonymKey;
use hush_features::split::split;
use hush_features::{ConsentView, ExtractParams, Extractor, Feedback, SplitSpec};
use hush_formats::EventFormat;

/// The file's rows: (userId, movieId, rating), in file order.
fn rows() -> Vec<(u32, String, f32)> {
    let text = std::fs::read_to_string(super::movielens_shaped()).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("userId,movieId,rating,timestamp"));
    lines
        .map(|line| {
            let f: Vec<&str> = line.split(',').collect();
            (f[0].parse().unwrap(), f[1].to_string(), f[2].parse().unwrap())
        })
        .collect()
}

fn ratings_per_user(rows: &[(u32, String, f32)]) -> BTreeMap<u32, usize> {
    let mut per_user = BTreeMap::new();
    for (user, _, _) in rows {
        *per_user.entry(*user).or_default() += 1;
    }
    per_user
}

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
    extractor.add_file(&super::movielens_shaped(), &EventFormat::MovielensCsv, &mut |_| {}).unwrap();
    extractor.finish(now).unwrap()
}

#[test]
fn exact_counts_of_a_movielens_shaped_file() {
    let rows = rows();
    let per_user = ratings_per_user(&rows);
    let movies: BTreeSet<&str> = rows.iter().map(|r| r.1.as_str()).collect();
    let n = rows.len() as u64;
    assert!(n > 12_000, "the fixture is big enough to train on: {n} ratings");

    let (set, report) = extract(None);
    assert_eq!(report.rows_in, n);
    assert_eq!(report.events_kept, n);
    assert_eq!(set.nnz() as u64, n);
    assert_eq!(set.n_subjects(), 610);
    assert_eq!(set.n_subjects(), per_user.len());
    assert_eq!(set.n_items(), movies.len());
    assert!(set.meta.research_only);
    // Subjects are in key order and each one's interactions in item order
    // (the input's order shows nowhere): user 1 is found by their ratings.
    let first_user = per_user[&1];
    let sorted = |mut v: Vec<(String, f32)>| {
        v.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
        v
    };
    let expected = sorted(rows[..first_user].iter().map(|r| (r.1.clone(), r.2)).collect());
    let user1 = (0..set.n_subjects())
        .find(|&s| {
            sorted(set.subject_interactions(s).map(|i| (set.items[i.item as usize].clone(), i.value)).collect())
                == expected
        })
        .expect("user 1's ratings, as one subject");
    let items: Vec<u32> = set.subject_interactions(user1).map(|i| i.item).collect();
    assert!(items.windows(2).all(|w| w[0] < w[1]), "in item order");

    let parts = split(&set, &SplitSpec::Holdout { fraction: 0.2, seed: 42 });
    assert_eq!(parts.train.nnz() + parts.test.nnz(), set.nnz());
    assert_eq!(parts.test.by_subject.range(user1).len(), (0.2 * first_user as f64).round() as usize);
}

#[test]
fn the_contribution_bound_caps_heavy_raters() {
    const BOUND: usize = 25;
    let per_user = ratings_per_user(&rows());
    let over: u64 = per_user.values().map(|&k| k.saturating_sub(BOUND) as u64).sum();
    assert!(over > 500, "the fixture has heavy raters: {over} ratings above {BOUND}");

    let (set, report) = extract(Some(BOUND as u32));
    assert!((0..set.n_subjects()).all(|s| set.by_subject.range(s).len() <= BOUND));
    // Subjects are in key order: compare the multisets of row lengths.
    let mut kept: Vec<usize> = (0..set.n_subjects()).map(|s| set.by_subject.range(s).len()).collect();
    let mut expected: Vec<usize> = per_user.values().map(|&k| k.min(BOUND)).collect();
    kept.sort_unstable();
    expected.sort_unstable();
    assert_eq!(kept, expected);
    assert_eq!(set.n_subjects(), 610);
    let dropped = report.dropped_events[&hush_features::DropReason::OverContributionBound];
    assert_eq!(dropped, over);
    assert_eq!(report.events_kept + dropped, report.rows_in);
}
