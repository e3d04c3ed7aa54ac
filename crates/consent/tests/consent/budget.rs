//! The privacy budget ledger on both backends.

use std::sync::{Arc, Barrier};

use hush_consent::{BudgetCap, BudgetPurpose, BudgetRequest, Error, Ledger, RunGuarantee, RunState, Timestamp};
use proptest::prelude::*;

use crate::backends::{on_both_backends, Backend, Fresh};

fn t(seconds: i64) -> Timestamp {
    Timestamp::from_unix_seconds(seconds)
}

fn cap(dataset: &str, purpose: BudgetPurpose, rho: f64) -> BudgetCap {
    BudgetCap { dataset: dataset.into(), purpose, epsilon: 10.0, delta: 1e-6, rho, set_at: t(1) }
}

pub(crate) fn request(key: &str, dataset: &str, purpose: BudgetPurpose, rho: Option<f64>) -> BudgetRequest {
    BudgetRequest {
        run_key: key.into(),
        dataset: dataset.into(),
        purpose,
        guarantee: rho.map(|rho| RunGuarantee { epsilon: 1.0, delta: 1e-6, rho }),
        snapshot_at: t(100),
    }
}

fn spend_of(ledger: &Ledger, dataset: &str, purpose: BudgetPurpose) -> hush_consent::BudgetSpend {
    ledger
        .budget_spending()
        .unwrap()
        .into_iter()
        .find(|s| s.dataset == dataset && s.purpose == purpose)
        .expect("a spend row")
}

on_both_backends! {
fn a_run_that_fits_is_recorded_and_one_that_would_pass_the_cap_is_refused(store) {
    let mut ledger = store.open();
    ledger.set_budget_cap(&cap("shop", BudgetPurpose::Release, 1.0)).unwrap();

    let first = ledger.reserve_budget(&request("run-1", "shop", BudgetPurpose::Release, Some(0.6)), t(2)).unwrap();
    assert_eq!(first.state, RunState::Reserved);
    ledger.commit_budget("run-1", "model-a").unwrap();

    let refused = ledger.reserve_budget(&request("run-2", "shop", BudgetPurpose::Release, Some(0.5)), t(3));
    match refused {
        Err(Error::BudgetExceeded { spent_rho, requested_rho, cap_rho, .. }) => {
            assert_eq!((spent_rho, requested_rho, cap_rho), (0.6, 0.5, 1.0));
        }
        other => panic!("expected BudgetExceeded, got {other:?}"),
    }
    let message = ledger
        .reserve_budget(&request("run-2", "shop", BudgetPurpose::Release, Some(0.5)), t(3))
        .unwrap_err()
        .to_string();
    assert!(message.contains("dataset `shop`") && message.contains("hush budget set-cap"), "{message}");

    // Exactly what is left fits.
    ledger.reserve_budget(&request("run-3", "shop", BudgetPurpose::Release, Some(0.4)), t(4)).unwrap();
    let spend = spend_of(&ledger, "shop", BudgetPurpose::Release);
    assert!((spend.spent_rho - 1.0).abs() < 1e-12);
    assert_eq!(spend.remaining_rho(), Some(0.0));
    assert_eq!(spend.private_runs, 2);

    let runs = ledger.budget_runs(Some("shop")).unwrap();
    assert_eq!(runs.len(), 2, "the refused run left no record");
    assert_eq!(runs[0].model_id.as_deref(), Some("model-a"));
    assert_eq!(runs[0].state, RunState::Committed);
    assert_eq!(runs[1].state, RunState::Reserved);
}}

on_both_backends! {
fn release_and_evaluation_budgets_are_separate_and_datasets_do_not_share(store) {
    let mut ledger = store.open();
    ledger.set_budget_cap(&cap("shop", BudgetPurpose::Release, 1.0)).unwrap();
    // The evaluation budget has no cap: a sweep's exploration is recorded, not blocked.
    for i in 0..5 {
        ledger
            .reserve_budget(&request(&format!("sweep-{i}"), "shop", BudgetPurpose::Evaluation, Some(0.9)), t(2))
            .unwrap();
    }
    ledger.reserve_budget(&request("other", "other-shop", BudgetPurpose::Release, Some(5.0)), t(2)).unwrap();
    ledger.reserve_budget(&request("release", "shop", BudgetPurpose::Release, Some(0.9)), t(3)).unwrap();
    assert!((spend_of(&ledger, "shop", BudgetPurpose::Evaluation).spent_rho - 4.5).abs() < 1e-12);
    assert!((spend_of(&ledger, "shop", BudgetPurpose::Release).spent_rho - 0.9).abs() < 1e-12);
    assert_eq!(spend_of(&ledger, "other-shop", BudgetPurpose::Release).cap, None);
}}

on_both_backends! {
fn reserving_the_same_run_key_twice_spends_once(store) {
    let mut ledger = store.open();
    ledger.set_budget_cap(&cap("shop", BudgetPurpose::Evaluation, 1.0)).unwrap();
    let a = ledger.reserve_budget(&request("cell-e1-s0", "shop", BudgetPurpose::Evaluation, Some(0.7)), t(2)).unwrap();
    let b = ledger.reserve_budget(&request("cell-e1-s0", "shop", BudgetPurpose::Evaluation, Some(0.7)), t(9)).unwrap();
    assert_eq!(a, b);
    assert!((spend_of(&ledger, "shop", BudgetPurpose::Evaluation).spent_rho - 0.7).abs() < 1e-12);
}}

on_both_backends! {
fn a_cancelled_reservation_gives_its_budget_back_but_a_committed_run_stays(store) {
    let mut ledger = store.open();
    ledger.set_budget_cap(&cap("shop", BudgetPurpose::Release, 1.0)).unwrap();
    ledger.reserve_budget(&request("failed", "shop", BudgetPurpose::Release, Some(0.8)), t(2)).unwrap();
    assert!(ledger.cancel_budget("failed").unwrap());
    ledger.reserve_budget(&request("ok", "shop", BudgetPurpose::Release, Some(0.8)), t(3)).unwrap();
    ledger.commit_budget("ok", "m").unwrap();
    assert!(!ledger.cancel_budget("ok").unwrap(), "a committed run cannot be cancelled");
    assert!((spend_of(&ledger, "shop", BudgetPurpose::Release).spent_rho - 0.8).abs() < 1e-12);
    assert!(matches!(ledger.commit_budget("missing", "m"), Err(Error::InvalidField { field: "run_key", .. })));
}}

on_both_backends! {
fn a_non_private_run_is_recorded_as_evaluation_only(store) {
    let mut ledger = store.open();
    let refused = ledger.reserve_budget(&request("twin", "shop", BudgetPurpose::Release, None), t(2));
    assert!(matches!(refused, Err(Error::InvalidField { field: "purpose", .. })), "{refused:?}");
    ledger.reserve_budget(&request("twin", "shop", BudgetPurpose::Evaluation, None), t(2)).unwrap();
    let spend = spend_of(&ledger, "shop", BudgetPurpose::Evaluation);
    assert_eq!((spend.spent_rho, spend.private_runs, spend.non_private_runs), (0.0, 0, 1));
}}

on_both_backends! {
fn bad_caps_are_refused_and_leave_the_old_cap(store) {
    let mut ledger = store.open();
    ledger.set_budget_cap(&cap("shop", BudgetPurpose::Release, 1.0)).unwrap();
    for bad in [
        BudgetCap { rho: f64::NAN, ..cap("shop", BudgetPurpose::Release, 1.0) },
        BudgetCap { epsilon: -1.0, ..cap("shop", BudgetPurpose::Release, 1.0) },
        BudgetCap { delta: 1.5, ..cap("shop", BudgetPurpose::Release, 1.0) },
        cap(" ", BudgetPurpose::Release, 1.0),
    ] {
        assert!(matches!(ledger.set_budget_cap(&bad), Err(Error::InvalidField { .. })), "{bad:?}");
    }
    assert_eq!(ledger.budget_cap("shop", BudgetPurpose::Release).unwrap().unwrap().rho, 1.0);
}}

on_both_backends! {
fn concurrent_runs_cannot_both_overspend(store) {
    store.open().set_budget_cap(&cap("shop", BudgetPurpose::Release, 1.0)).unwrap();
    // Eight writers on their own connections, each asking for 0.3 of a cap of
    // 1.0: exactly three fit, whatever the interleaving.
    let barrier = Arc::new(Barrier::new(8));
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let (url, barrier) = (store.url().to_string(), barrier.clone());
            std::thread::spawn(move || {
                let mut ledger = Ledger::connect(&url).unwrap();
                barrier.wait();
                ledger.reserve_budget(&request(&format!("run-{i}"), "shop", BudgetPurpose::Release, Some(0.3)), t(2))
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let accepted = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(accepted, 3, "{results:?}");
    assert!(results.iter().filter_map(|r| r.as_ref().err()).all(|e| matches!(e, Error::BudgetExceeded { .. })));
    let ledger = store.open();
    assert!(spend_of(&ledger, "shop", BudgetPurpose::Release).spent_rho <= 1.0 + 1e-12);
}}

/// Whatever the sequence of requests, the spent total never passes the
/// cap, and a request is refused exactly when it would not fit.
fn check_spending(ledger: &mut Ledger, dataset: &str, cap_rho: f64, asks: &[f64]) -> Result<(), TestCaseError> {
    ledger.set_budget_cap(&cap(dataset, BudgetPurpose::Release, cap_rho)).unwrap();
    let mut spent = 0.0;
    for (i, ask) in asks.iter().enumerate() {
        let fits = spent + ask <= cap_rho * (1.0 + 1e-12);
        let key = format!("{dataset}-r{i}");
        let result = ledger.reserve_budget(&request(&key, dataset, BudgetPurpose::Release, Some(*ask)), t(2));
        prop_assert_eq!(result.is_ok(), fits);
        if fits {
            spent += ask;
        }
        let recorded = spend_of(ledger, dataset, BudgetPurpose::Release).spent_rho;
        prop_assert!((recorded - spent).abs() < 1e-9);
        prop_assert!(recorded <= cap_rho * (1.0 + 1e-9));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn spending_never_passes_the_cap_on_sqlite(cap_rho in 0.1f64..5.0, asks in prop::collection::vec(0.01f64..2.0, 1..20)) {
        check_spending(&mut Fresh::new(Backend::Sqlite).open(), "d", cap_rho, &asks)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn spending_never_passes_the_cap_on_postgres(cap_rho in 0.1f64..5.0, asks in prop::collection::vec(0.01f64..2.0, 1..20)) {
        // One database for every case, a dataset of its own per case.
        static STORE: std::sync::OnceLock<Fresh> = std::sync::OnceLock::new();
        static CASE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let mut ledger = STORE.get_or_init(|| Fresh::new(Backend::Postgres)).open();
        let case = CASE.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        check_spending(&mut ledger, &format!("d{case}"), cap_rho, &asks)?;
    }
}

/// On PostgreSQL a reservation takes the lock of its dataset and purpose
/// (the lock older hush builds take too, so two builds sharing a store
/// cannot both pass a cap), and not the writers' lock: an import's open
/// batch does not hold a training run's reservation up.
#[test]
fn a_postgres_reservation_locks_its_budget_and_not_the_writers() {
    use std::time::{Duration, Instant};
    let store = Fresh::new(Backend::Postgres);
    let mut setup = store.open();
    setup.set_budget_cap(&cap("shop", BudgetPurpose::Release, 1.0)).unwrap();

    // An import's batch is open (the writers' lock is held): a reservation still goes through.
    let mut importer = store.open();
    let batch = importer.batch().unwrap();
    let during_import = std::thread::spawn({
        let url = store.url().to_string();
        move || {
            let mut trainer = Ledger::connect(&url).unwrap();
            trainer.reserve_budget(&request("during-import", "shop", BudgetPurpose::Release, Some(0.2)), t(10))
        }
    });
    let started = Instant::now();
    while !during_import.is_finished() && started.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let finished = during_import.is_finished();
    drop(batch);
    assert!(finished, "a reservation waited for an import's batch");
    during_import.join().unwrap().unwrap();

    // Another reservation of the same budget holds its lock (as an older
    // build's would): this one waits for it, then counts what it spent.
    let mut holder = postgres::Client::connect(store.url(), postgres::NoTls).unwrap();
    let mut held = holder.transaction().unwrap();
    held.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", &[&"shop\nrelease"]).unwrap();
    held.execute(
        "INSERT INTO budget_runs (run_key, dataset, purpose, model_id, epsilon, delta, rho, snapshot_at, state, created_at)
         VALUES ('older-build', 'shop', 'release', NULL, 1.0, 1e-6, 0.7, 0, 'reserved', 0)",
        &[],
    )
    .unwrap();
    let waiting = std::thread::spawn({
        let url = store.url().to_string();
        move || {
            let mut ledger = Ledger::connect(&url).unwrap();
            ledger.reserve_budget(&request("newer-build", "shop", BudgetPurpose::Release, Some(0.2)), t(20))
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(!waiting.is_finished(), "the reservation did not wait for the budget's lock");
    held.commit().unwrap();
    let refused = waiting.join().unwrap();
    assert!(matches!(refused, Err(Error::BudgetExceeded { .. })), "0.2 + 0.7 + 0.2 > 1.0: {refused:?}");
    assert!((spend_of(&setup, "shop", BudgetPurpose::Release).spent_rho - 0.9).abs() < 1e-12);
}
