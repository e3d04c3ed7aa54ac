//! Consent filtering, minimization and the contribution bound, on real ledgers and files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use hush_consent::{
    ConsentChange, ConsentSource, Event, EventKind, Ledger, PseudonymKey, Purpose, SubjectEvent, Timestamp,
};
use hush_features::{
    ConsentPolicy, ConsentView, DropReason, ExtractParams, ExtractionReport, Extractor, FeatureSet, Feedback,
};
use hush_formats::EventFormat;
use proptest::prelude::*;

fn key() -> PseudonymKey {
    PseudonymKey::from_bytes([3; 32])
}

fn t(s: i64) -> Timestamp {
    Timestamp::from_unix_seconds(s)
}

fn grant(ledger: &mut Ledger, subject: &str, purpose: Purpose, granted: bool, at: i64) {
    let change = ConsentChange {
        purpose,
        granted,
        effective_at: t(at),
        source: ConsentSource::Import,
        notice_version: "v1".into(),
        proof_ref: None,
    };
    ledger.record_consent(&key().pseudonymize(subject), &change, t(at)).unwrap();
}

/// Runs a file extraction against `ledger` with `params`, at time `now`.
fn run(ledger: &Ledger, file: &Path, params: &ExtractParams, now: i64) -> (FeatureSet, ExtractionReport) {
    let config = params.validate(t(now)).unwrap();
    let view = ConsentView::from_ledger(ledger, &config).unwrap();
    let key = key();
    let mut extractor = Extractor::new(&config, &view, &key);
    extractor.add_file(file, &EventFormat::from_name("csv").unwrap(), &mut |_| {}).unwrap();
    extractor.finish(t(now)).unwrap()
}

fn write_events(path: &Path, rows: &[(String, String, &str, f32, i64)]) {
    let mut text = String::from("subject_id,item_id,kind,value,timestamp\n");
    for (s, i, k, v, ts) in rows {
        text.push_str(&format!("{s},{i},{k},{v},{ts}\n"));
    }
    std::fs::write(path, text).unwrap();
}

fn items_of(set: &FeatureSet) -> BTreeSet<String> {
    set.items.iter().cloned().collect()
}

fn params(snapshot: i64) -> ExtractParams {
    ExtractParams { snapshot_at: Some(snapshot.to_string()), max_events_per_subject: None, ..ExtractParams::default() }
}

#[test]
fn every_drop_reason_is_counted_and_rows_add_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = Ledger::open(dir.path().join("hush.db")).unwrap();
    grant(&mut ledger, "ok", Purpose::Training, true, 10);
    grant(&mut ledger, "late", Purpose::Training, true, 500);
    grant(&mut ledger, "gone", Purpose::Training, true, 10);
    grant(&mut ledger, "gone", Purpose::Training, false, 50);
    grant(&mut ledger, "withdrew-after-snapshot", Purpose::Training, true, 10);
    grant(&mut ledger, "withdrew-after-snapshot", Purpose::Training, false, 150);
    grant(&mut ledger, "personalization-only", Purpose::Personalization, true, 10);
    grant(&mut ledger, "erased", Purpose::Training, true, 10);
    ledger.erase(&key().pseudonymize("erased"), t(60)).unwrap();
    let s = |x: &str| x.to_string();
    let rows = vec![
        (s("ok"), s("a"), "view", 1.0, 20),
        (s("ok"), s("a"), "view", 1.0, 20), // duplicate
        (s("ok"), s("a"), "cart", 1.0, 21), // merged with the view
        (s("ok"), s("b"), "purchase", 1.0, 22),
        (s("ok"), s("c"), "rating", 2.0, 23),   // below threshold
        (s("ok"), s("d"), "wishlist", 1.0, 24), // unweighted kind
        (s("ok"), s("e"), "view", 1.0, 200),    // after snapshot
        (s("late"), s("f"), "view", 1.0, 20),
        (s("gone"), s("g"), "view", 1.0, 20),
        (s("withdrew-after-snapshot"), s("h"), "view", 1.0, 20),
        (s("personalization-only"), s("i"), "view", 1.0, 20),
        (s("erased"), s("j"), "view", 1.0, 20),
        (s("stranger"), s("k"), "view", 1.0, 20),
    ];
    let file = dir.path().join("events.csv");
    write_events(&file, &rows);
    let mut text = std::fs::read_to_string(&file).unwrap();
    text.push_str("ok,z,view,notanumber,20\n");
    std::fs::write(&file, text).unwrap();
    let lenient = ExtractParams { max_malformed_fraction: 0.5, ..params(100) };
    let (set, report) = run(&ledger, &file, &lenient, 300);

    assert_eq!(items_of(&set), BTreeSet::from([s("a"), s("b")]));
    assert_eq!(set.n_subjects(), 1);
    let ok_row: Vec<f32> = set.subject_interactions(0).map(|i| i.value).collect();
    assert_eq!(ok_row, [4.0, 5.0], "view 1 + cart 3 merged; purchase 5");
    let expected: BTreeMap<DropReason, u64> = [
        (DropReason::Malformed, 1),
        (DropReason::NoConsent, 3), // late, personalization-only, stranger
        (DropReason::Withdrawn, 2),
        (DropReason::Erased, 1),
        (DropReason::AfterSnapshot, 1),
        (DropReason::ExcludedKind, 1),
        (DropReason::BelowRatingThreshold, 1),
        (DropReason::Duplicate, 1),
    ]
    .into_iter()
    .collect();
    let nonzero: BTreeMap<DropReason, u64> =
        report.dropped_events.iter().filter(|(_, n)| **n > 0).map(|(r, n)| (*r, *n)).collect();
    assert_eq!(nonzero, expected);
    assert_eq!(report.rows_in, 14);
    assert_eq!(report.events_kept, 3);
    assert_eq!(report.rows_in, report.events_kept + report.dropped_total());
    assert_eq!(report.dropped_subjects[&DropReason::NoConsent], 3);
    assert_eq!(report.dropped_subjects[&DropReason::Withdrawn], 2);
    assert_eq!(report.dropped_subjects[&DropReason::Erased], 1);
    assert_eq!(report.malformed_examples[0].line, 15);
}

#[test]
fn since_grant_policy_and_retention_window() {
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = Ledger::open(dir.path().join("hush.db")).unwrap();
    grant(&mut ledger, "u", Purpose::Training, true, 1000);
    let day = 86_400;
    let rows = vec![
        ("u".to_string(), "before-grant".to_string(), "view", 1.0, 500),
        ("u".to_string(), "recent".to_string(), "view", 1.0, 1000 + 9 * day),
        ("u".to_string(), "old".to_string(), "view", 1.0, 1000 + day),
    ];
    let file = dir.path().join("events.csv");
    write_events(&file, &rows);
    let snapshot = 1000 + 10 * day;
    let (set, report) = run(&ledger, &file, &params(snapshot), snapshot);
    assert_eq!(items_of(&set).len(), 3, "as-of-snapshot keeps events from before the grant");
    assert_eq!(report.dropped_total(), 0);

    let strict = ExtractParams { policy: ConsentPolicy::SinceGrant, retention_days: Some(5), ..params(snapshot) };
    let (set, report) = run(&ledger, &file, &strict, snapshot);
    assert_eq!(items_of(&set), BTreeSet::from(["recent".to_string()]));
    assert_eq!(report.dropped_events[&DropReason::BeforeGrant], 1);
    assert_eq!(report.dropped_events[&DropReason::Retention], 1);
}

#[test]
fn explicit_mode_keeps_the_latest_rating() {
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = Ledger::open(dir.path().join("hush.db")).unwrap();
    grant(&mut ledger, "u", Purpose::Training, true, 1);
    let rows = vec![
        ("u".to_string(), "m".to_string(), "rating", 2.0, 30),
        ("u".to_string(), "m".to_string(), "rating", 4.5, 40),
        ("u".to_string(), "m".to_string(), "view", 1.0, 41),
    ];
    let file = dir.path().join("events.csv");
    write_events(&file, &rows);
    let explicit = ExtractParams { feedback: Feedback::Explicit, ..params(100) };
    let (set, report) = run(&ledger, &file, &explicit, 100);
    let row: Vec<_> = set.subject_interactions(0).collect();
    assert_eq!((row.len(), row[0].value, row[0].time), (1, 4.5, 40));
    assert_eq!(report.dropped_events[&DropReason::Superseded], 1);
    assert_eq!(report.dropped_events[&DropReason::ExcludedKind], 1);
}

#[test]
fn the_event_store_is_an_input_too() {
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = Ledger::open(dir.path().join("hush.db")).unwrap();
    grant(&mut ledger, "trains", Purpose::Training, true, 1);
    grant(&mut ledger, "personal", Purpose::Personalization, true, 1);
    let ev = |who: &str, item: &str| SubjectEvent {
        subject: key().pseudonymize(who),
        event: Event { item: item.into(), kind: EventKind::Purchase, value: 1.0, at: t(5) },
        event_id: None,
    };
    ledger.ingest_events(&[ev("trains", "x"), ev("personal", "y")], t(6)).unwrap();
    let config = params(10).validate(t(10)).unwrap();
    let view = ConsentView::from_ledger(&ledger, &config).unwrap();
    let key = key();
    let mut extractor = Extractor::new(&config, &view, &key);
    extractor.add_store(&ledger, &mut |_| {}).unwrap();
    let (set, report) = extractor.finish(t(10)).unwrap();
    assert_eq!(items_of(&set), BTreeSet::from(["x".to_string()]));
    assert_eq!(report.dropped_events[&DropReason::NoConsent], 1);
    assert_eq!(report.inputs[0].format, "event-store");
}

#[test]
fn too_many_malformed_rows_fail_the_extraction() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path().join("hush.db")).unwrap();
    let file = dir.path().join("events.csv");
    std::fs::write(&file, "subject_id,item_id,kind,value,timestamp\na,b,view,1,1\na,b,view,1\n").unwrap();
    let config = params(10).validate(t(10)).unwrap();
    let view = ConsentView::from_ledger(&ledger, &config).unwrap();
    let key = key();
    let mut extractor = Extractor::new(&config, &view, &key);
    extractor.add_file(&file, &EventFormat::from_name("csv").unwrap(), &mut |_| {}).unwrap();
    let err = extractor.finish(t(10)).err().unwrap().to_string();
    assert!(err.starts_with("1 of 2 input rows are malformed"), "{err}");
    assert!(err.contains("events.csv:3: expected 5 fields separated by ','"), "{err}");
}

/// A random world: per subject, training decisions, a personalization grant,
/// maybe an erasure, and events on items unique to the subject.
/// One random subject: training decisions (granted, effective second), erased?, event seconds.
type RandomSubject = (Vec<(bool, i64)>, bool, Vec<i64>);

#[derive(Debug, Clone)]
struct World {
    subjects: Vec<RandomSubject>,
    snapshot: i64,
    bound: u32,
    seed: u64,
}

fn world() -> impl Strategy<Value = World> {
    let subject = (
        prop::collection::vec((any::<bool>(), 0i64..100), 0..4),
        prop::bool::weighted(0.15),
        prop::collection::vec(0i64..120, 0..12),
    );
    (prop::collection::vec(subject, 1..10), 0i64..120, 1u32..6, any::<u64>())
        .prop_map(|(subjects, snapshot, bound, seed)| World { subjects, snapshot, bound, seed })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    /// Never a subject without training consent at T (or withdrawn since, or
    /// erased); always one that has it; the bound always holds; and the same
    /// inputs and seed give the same output.
    #[test]
    fn consent_filter_bound_and_determinism(w in world()) {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = Ledger::open(dir.path().join("hush.db")).unwrap();
        let now = 150;
        let mut rows = Vec::new();
        let mut allowed = BTreeSet::new();
        for (index, (decisions, erased, events)) in w.subjects.iter().enumerate() {
            let name = format!("s{index}");
            for &(granted, at) in decisions {
                grant(&mut ledger, &name, Purpose::Training, granted, at);
            }
            if *erased {
                ledger.erase(&key().pseudonymize(&name), t(now)).unwrap();
            }
            // The model: of the decisions in force at T (each recorded at its
            // effective time here), the one recorded last is a grant, and so is
            // the one in force at extraction (the latest decision wins).
            let last_by = |limit: i64| decisions.iter().rfind(|d| d.1 <= limit).map(|d| d.0);
            if !erased && last_by(w.snapshot) == Some(true) && last_by(now) == Some(true) {
                allowed.insert(index);
            }
            for (k, &at) in events.iter().enumerate() {
                rows.push((name.clone(), format!("s{index}-i{k}"), "view", 1.0, at));
            }
        }
        let file = dir.path().join("events.csv");
        write_events(&file, &rows);
        let p = ExtractParams { max_events_per_subject: Some(w.bound), sampling_seed: Some(w.seed), ..params(w.snapshot) };
        let (set, report) = run(&ledger, &file, &p, now);

        let included: BTreeSet<usize> = set.items.iter().map(|i| i[1..i.find('-').unwrap()].parse().unwrap()).collect();
        prop_assert!(included.is_subset(&allowed), "included {:?} allowed {:?}", included, allowed);
        for index in &allowed {
            let has_usable_event = w.subjects[*index].2.iter().any(|&at| at <= w.snapshot);
            prop_assert_eq!(included.contains(index), has_usable_event);
        }
        for s in 0..set.n_subjects() {
            prop_assert!(set.by_subject.range(s).len() <= w.bound as usize);
        }
        prop_assert_eq!(report.rows_in, report.events_kept + report.dropped_total());

        let (again, again_report) = run(&ledger, &file, &p, now);
        prop_assert_eq!(&set, &again);
        prop_assert_eq!(report.digest(&key()), again_report.digest(&key()));
    }
}

/// An event row: subject, item, kind, value, unix seconds.
type Row = (String, String, &'static str, f32, i64);

/// A storefront of `n` consenting subjects (and one who never consented),
/// each with more items than the bound, in a catalogue of 40 items.
fn neighbour_world(dir: &Path, n: usize) -> (Ledger, Vec<Row>, std::path::PathBuf) {
    let mut ledger = Ledger::open(dir.join("hush.db")).unwrap();
    let mut rows = Vec::new();
    for s in 0..n {
        let name = format!("c{s}");
        grant(&mut ledger, &name, Purpose::Training, true, 1);
        for k in 0..(8 + s % 7) {
            rows.push((name.clone(), format!("sku-{:02}", (s * 7 + k * 3) % 40), "view", 1.0, 10 + k as i64));
        }
    }
    // Never consented: their rows come first, so they would take the first slot.
    for k in 0..12 {
        rows.insert(0, ("never".to_string(), format!("sku-{:02}", (k * 5) % 40), "view", 1.0, 10));
    }
    let catalogue = dir.join("items.csv");
    let mut text = String::from("item_id,category\n");
    for i in (0..40).rev() {
        text.push_str(&format!("sku-{i:02},x\n"));
    }
    std::fs::write(&catalogue, text).unwrap();
    (ledger, rows, catalogue)
}

/// Each subject's kept interactions, by key.
fn rows_by_key(set: &FeatureSet) -> BTreeMap<hush_features::SubjectKey, Vec<(String, f32)>> {
    (0..set.n_subjects())
        .map(|s| {
            let mut row: Vec<(String, f32)> =
                set.subject_interactions(s).map(|i| (set.items[i.item as usize].clone(), i.value)).collect();
            row.sort_by(|a, b| a.0.cmp(&b.0));
            (set.subject_keys[s], row)
        })
        .collect()
}

/// Neighbouring inputs: removing one subject changes only that subject's
/// rows (the contribution bound of everyone else is unchanged), removing a
/// subject without consent changes nothing at all, and the item universe is
/// the catalogue in sorted order whoever is present.
#[test]
fn per_subject_sampling_and_the_item_universe_do_not_depend_on_other_subjects() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, rows, catalogue) = neighbour_world(dir.path(), 30);
    let p = ExtractParams {
        max_events_per_subject: Some(5),
        sampling_seed: Some(7),
        catalogue: Some(catalogue),
        ..params(100)
    };
    let full_file = dir.path().join("full.csv");
    write_events(&full_file, &rows);
    let (full, report) = run(&ledger, &full_file, &p, 200);
    assert_eq!(full.items, (0..40).map(|i| format!("sku-{i:02}")).collect::<Vec<_>>());
    assert!(
        report.dropped_events[&DropReason::OverContributionBound] > 0,
        "the bound must bite for this test to mean anything"
    );
    let full_rows = rows_by_key(&full);

    for removed in ["c0", "c15", "c29", "never"] {
        let kept: Vec<_> = rows.iter().filter(|r| r.0 != removed).cloned().collect();
        let file = dir.path().join(format!("without-{removed}.csv"));
        write_events(&file, &kept);
        let (neighbour, _) = run(&ledger, &file, &p, 200);
        assert_eq!(neighbour.items, full.items, "the item universe never depends on who is present");
        if removed == "never" {
            // Only the private report differs (it counts the rows read).
            let mut neighbour = neighbour;
            neighbour.meta.report_digest.clone_from(&full.meta.report_digest);
            assert_eq!(neighbour, full, "a subject without consent influences nothing, bit for bit");
            continue;
        }
        let mut expected = full_rows.clone();
        assert_eq!(expected.len(), neighbour.n_subjects() + 1);
        let neighbour_rows = rows_by_key(&neighbour);
        expected.retain(|k, _| neighbour_rows.contains_key(k));
        assert_eq!(neighbour_rows, expected, "removing {removed} changed another subject's sample");
    }

    // The input's row order shows nowhere: reversed rows give the same set.
    let reversed_file = dir.path().join("reversed.csv");
    write_events(&reversed_file, &rows.iter().rev().cloned().collect::<Vec<_>>());
    let (reversed, _) = run(&ledger, &reversed_file, &p, 200);
    assert_eq!((&reversed.subject_keys, &reversed.by_subject), (&full.subject_keys, &full.by_subject));

    // Without a seed the secret is fresh each run: samples differ, and the
    // output says it is not seeded.
    let fresh = ExtractParams { sampling_seed: None, ..p.clone() };
    let (a, _) = run(&ledger, &full_file, &fresh, 200);
    let (b, _) = run(&ledger, &full_file, &fresh, 200);
    assert!(!a.meta.sampling_seeded && full.meta.sampling_seeded);
    assert_ne!(a.subject_keys, b.subject_keys);
    assert_eq!(a.meta.catalogue, full.meta.catalogue);
}

#[test]
fn items_outside_the_catalogue_are_dropped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = Ledger::open(dir.path().join("hush.db")).unwrap();
    grant(&mut ledger, "a", Purpose::Training, true, 1);
    let catalogue = dir.path().join("items.csv");
    std::fs::write(&catalogue, "item_id\nx\ny\n").unwrap();
    let file = dir.path().join("events.csv");
    let s = |x: &str| x.to_string();
    write_events(&file, &[(s("a"), s("y"), "view", 1.0, 5), (s("a"), s("secret-item"), "view", 1.0, 6)]);
    let p = ExtractParams { catalogue: Some(catalogue), ..params(100) };
    let (set, report) = run(&ledger, &file, &p, 200);
    assert_eq!(set.items, ["x", "y"]);
    assert_eq!(report.dropped_events[&DropReason::UnknownItem], 1);
    assert_eq!(report.rows_in, report.events_kept + report.dropped_total());
    // Without a catalogue the items seen are sorted, and the set says where they came from.
    let (set, _) = run(&ledger, &file, &params(100), 200);
    assert_eq!(set.items, ["secret-item", "y"]);
    assert_eq!(set.meta.catalogue, None);
}
