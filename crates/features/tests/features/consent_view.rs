//! The extractor's consent view follows the ledger's consent rule: the
//! latest recorded decision wins, on a real SQLite ledger.

use hush_consent::{ConsentChange, ConsentSource, ConsentState, Ledger, PseudonymKey, Purpose, Timestamp};
use hush_features::{ConsentPolicy, ConsentView, DropReason, ExtractParams, Inclusion};
use proptest::prelude::*;

fn key() -> PseudonymKey {
    PseudonymKey::from_bytes([5; 32])
}

fn t(s: i64) -> Timestamp {
    Timestamp::from_unix_seconds(s)
}

fn decide(ledger: &mut Ledger, subject: &str, granted: bool, effective: i64, recorded: i64) {
    let change = ConsentChange {
        purpose: Purpose::Training,
        granted,
        effective_at: t(effective),
        source: ConsentSource::Cli,
        notice_version: "v1".into(),
        proof_ref: None,
    };
    ledger.record_consent(&key().pseudonymize(subject), &change, t(recorded)).unwrap();
}

fn view(ledger: &Ledger, snapshot: i64, now: i64, policy: ConsentPolicy) -> ConsentView {
    let params = ExtractParams { snapshot_at: Some(snapshot.to_string()), policy, ..ExtractParams::default() };
    ConsentView::from_ledger(ledger, &params.validate(t(now)).unwrap()).unwrap()
}

#[test]
fn a_backdated_withdrawal_excludes_and_a_backdated_grant_does_not_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = Ledger::open(dir.path().join("hush.db")).unwrap();
    let (y2024, y2025, y2026) = (1_717_200_000, 1_735_689_600, 1_767_225_600);
    // `hush consent withdraw --effective-at 2024-06-01` after a 2025 grant.
    decide(&mut ledger, "withdrew", true, y2025, y2025);
    decide(&mut ledger, "withdrew", false, y2024, y2026);
    // A withdrawal in 2025, then in 2026 a grant backdated to 2024.
    decide(&mut ledger, "regranted", false, y2025, y2025);
    decide(&mut ledger, "regranted", true, y2024, y2026);
    let pseudonym = |s: &str| key().pseudonymize(s);
    let now = y2026 + 10;
    let at_2025 = view(&ledger, y2025 + 1000, now, ConsentPolicy::AsOfSnapshot);
    assert_eq!(at_2025.decide(&pseudonym("withdrew")), Inclusion::Excluded(DropReason::Withdrawn));
    assert_eq!(at_2025.decide(&pseudonym("regranted")), Inclusion::Excluded(DropReason::Withdrawn));
    let today = view(&ledger, now, now, ConsentPolicy::SinceGrant);
    assert_eq!(today.decide(&pseudonym("withdrew")), Inclusion::Excluded(DropReason::Withdrawn));
    // The grant counts from when it was recorded, not from its backdated effective time.
    assert_eq!(today.decide(&pseudonym("regranted")), Inclusion::Included { window_start: t(y2026) });
}

/// (subject 0..4, granted, seconds since the previous decision, effective minus recorded).
fn interleavings() -> impl Strategy<Value = Vec<(u8, bool, i64, i64)>> {
    prop::collection::vec((0u8..4, any::<bool>(), 0i64..300, -900i64..300), 0..30)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Included exactly when the ledger says granted at the snapshot and not
    /// withdrawn at extraction; under since-grant, the window starts where
    /// the ledger's unbroken grant up to the snapshot starts.
    #[test]
    fn the_view_agrees_with_the_ledger(decisions in interleavings(), snapshot_back in 0i64..6000) {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = Ledger::open(dir.path().join("hush.db")).unwrap();
        let mut recorded = 1_000_000;
        for &(subject, granted, gap, offset) in &decisions {
            recorded += gap;
            decide(&mut ledger, &format!("s{subject}"), granted, recorded + offset, recorded);
        }
        let now = recorded + 1000;
        let snapshot = now - snapshot_back;
        for policy in [ConsentPolicy::AsOfSnapshot, ConsentPolicy::SinceGrant] {
            let view = view(&ledger, snapshot, now, policy);
            for subject in 0..4 {
                let s = key().pseudonymize(&format!("s{subject}"));
                let at_snapshot = ledger.status(&s, Purpose::Training, t(snapshot)).unwrap().state;
                let at_now = ledger.status(&s, Purpose::Training, t(now)).unwrap().state;
                let decision = view.decide(&s);
                let included = at_snapshot == ConsentState::Granted && at_now != ConsentState::Withdrawn;
                prop_assert_eq!(matches!(decision, Inclusion::Included { .. }), included, "{:?}", decision);
                if let (Inclusion::Included { window_start }, ConsentPolicy::SinceGrant) = (decision, policy) {
                    prop_assert!(window_start <= t(snapshot));
                    for probe in [window_start, t(snapshot)] {
                        let state = ledger.status(&s, Purpose::Training, probe).unwrap().state;
                        prop_assert_eq!(state, ConsentState::Granted);
                    }
                    let before = Timestamp::from_unix_millis(window_start.as_unix_millis() - 1);
                    let state = ledger.status(&s, Purpose::Training, before).unwrap().state;
                    prop_assert_ne!(state, ConsentState::Granted, "the window starts where the grant starts");
                }
            }
        }
    }
}
