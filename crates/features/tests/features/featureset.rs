//! The feature set file and the evaluation splits.

use hush_features::split::split;
use hush_features::{FeatureMeta, FeatureSet, Feedback, Interaction, SplitSpec};
use proptest::prelude::*;

fn meta() -> FeatureMeta {
    FeatureMeta { sampling_seeded: false, report_digest: "d".into(), ..FeatureMeta::assembled(Feedback::Explicit) }
}

fn set_from(rows: &[Vec<(u32, i64)>], n_items: u32) -> FeatureSet {
    let rows: Vec<Vec<Interaction>> = rows
        .iter()
        .map(|r| r.iter().map(|&(item, time)| Interaction { item, value: item as f32, time }).collect())
        .collect();
    FeatureSet::from_subject_rows(meta(), (0..n_items).map(|i| format!("i{i}")).collect(), &rows)
}

#[test]
fn save_load_round_trip_and_corruption_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.hfs");
    let set = set_from(&[vec![(0, 1), (2, 3)], vec![(1, 2)]], 3);
    set.save(&path).unwrap();
    assert_eq!(FeatureSet::load(&path).unwrap(), set);
    assert_eq!(set.by_item.row_indices(2), [0]);

    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x55;
    std::fs::write(&path, &bytes).unwrap();
    let err = FeatureSet::load(&path).unwrap_err().to_string();
    assert_eq!(err, format!("{}: hush feature set file is corrupted (checksum mismatch)", path.display()));
    std::fs::write(&path, &bytes[..30]).unwrap();
    let err = FeatureSet::load(&path).unwrap_err().to_string();
    assert!(err.contains("truncated hush feature set file: expected 52 bytes, found 30"), "{err}");
}

#[test]
fn split_specs_parse_and_reject() {
    assert_eq!("holdout:0.2:42".parse::<SplitSpec>().unwrap(), SplitSpec::Holdout { fraction: 0.2, seed: 42 });
    assert_eq!("temporal:0.1".parse::<SplitSpec>().unwrap(), SplitSpec::Temporal { fraction: 0.1 });
    let err = "holdout:1.5:1".parse::<SplitSpec>().unwrap_err().to_string();
    assert_eq!(err, "invalid setting `split`: `holdout:1.5:1` is not holdout:FRACTION:SEED or temporal:FRACTION with 0 < FRACTION < 1");
}

#[test]
fn temporal_split_holds_out_the_latest() {
    let set = set_from(&[vec![(0, 1), (1, 9)], vec![(2, 5), (0, 10)]], 3);
    let parts = split(&set, &SplitSpec::Temporal { fraction: 0.5 });
    let test_times: Vec<i64> = parts.test.by_subject.times.clone();
    assert_eq!(test_times, [9, 10]);
    assert_eq!(parts.train.by_subject.times, [1, 5]);
    assert_eq!(parts.test.meta.split.as_deref(), Some("test of temporal:0.5"));
}

proptest! {
    /// Holdout: every interaction lands in exactly one part, each subject
    /// holds out round(f·n) (at least 1), and the same seed gives the same split.
    #[test]
    fn holdout_partitions_each_subject(rows in prop::collection::vec(prop::collection::btree_set(0u32..40, 1..15), 1..20), seed in any::<u64>()) {
        let rows: Vec<Vec<(u32, i64)>> = rows.into_iter().map(|r| r.into_iter().map(|i| (i, i64::from(i))).collect()).collect();
        let set = set_from(&rows, 40);
        let spec = SplitSpec::Holdout { fraction: 0.2, seed };
        let parts = split(&set, &spec);
        prop_assert_eq!(&parts, &split(&set, &spec));
        for (s, row) in rows.iter().enumerate() {
            let mut train: Vec<u32> = parts.train.by_subject.row_indices(s).to_vec();
            let test: Vec<u32> = parts.test.by_subject.row_indices(s).to_vec();
            prop_assert_eq!(test.len(), ((0.2 * row.len() as f64).round() as usize).max(1));
            train.extend(&test);
            train.sort_unstable();
            let mut all: Vec<u32> = row.iter().map(|r| r.0).collect();
            all.sort_unstable();
            prop_assert_eq!(train, all);
        }
    }
}
