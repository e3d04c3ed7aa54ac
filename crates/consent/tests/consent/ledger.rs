//! Ledger behaviour on both backends: real SQLite files and a real PostgreSQL server.

use std::path::Path;

use hush_consent::import::{import_consent, import_events, ImportOptions};
use hush_consent::ledger::SCHEMA_VERSION;
use hush_consent::{
    ConsentChange, ConsentSource, ConsentState, Error, Event, EventKind, IngestOutcome, Ledger, Pseudonym,
    PseudonymKey, Purpose, SubjectEvent, Timestamp,
};
use hush_formats::{ConsentFormat, EventFormat};
use proptest::prelude::*;

use crate::backends::{on_both_backends, Backend, Fresh};

fn key() -> PseudonymKey {
    PseudonymKey::from_bytes([7; 32])
}

fn t(seconds: i64) -> Timestamp {
    Timestamp::from_unix_seconds(seconds)
}

fn change(purpose: Purpose, granted: bool, at: i64) -> ConsentChange {
    ConsentChange {
        purpose,
        granted,
        effective_at: t(at),
        source: ConsentSource::Api,
        notice_version: "v1".into(),
        proof_ref: Some("receipt-1".into()),
    }
}

fn event(subject: Pseudonym, item: &str, at: i64) -> SubjectEvent {
    SubjectEvent {
        subject,
        event: Event { item: item.into(), kind: EventKind::View, value: 1.0, at: t(at) },
        event_id: None,
    }
}

fn with_id(mut e: SubjectEvent, id: &str) -> SubjectEvent {
    e.event_id = Some(id.into());
    e
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every file SQLite keeps for the database: main, WAL and shared memory.
fn database_bytes(db: &Path) -> Vec<(String, Vec<u8>)> {
    ["", "-wal", "-shm"]
        .iter()
        .filter_map(|suffix| {
            let path = format!("{}{suffix}", db.display());
            std::fs::read(&path).ok().map(|bytes| (path, bytes))
        })
        .collect()
}

on_both_backends! {
fn status_answers_from_history_at_any_time(store) {
    let mut ledger = store.open();
    let alice = key().pseudonymize("alice");
    ledger.record_consent(&alice, &change(Purpose::Training, true, 100), t(100)).unwrap();
    ledger.record_consent(&alice, &change(Purpose::Training, false, 200), t(200)).unwrap();
    let at = |s| ledger.status(&alice, Purpose::Training, t(s)).unwrap().state;
    assert_eq!(at(99), ConsentState::NoRecord);
    assert_eq!(at(100), ConsentState::Granted);
    assert_eq!(at(199), ConsentState::Granted);
    assert_eq!(at(200), ConsentState::Withdrawn);
    assert_eq!(ledger.status(&alice, Purpose::Personalization, t(150)).unwrap().state, ConsentState::NoRecord);
    let history = ledger.history(&alice).unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[0].proof_ref.as_deref(), Some("receipt-1"));
    assert_eq!(history[1].recorded_at, t(200));
}}

on_both_backends! {
fn a_withdrawal_is_never_undone_by_a_clock(store) {
    let mut ledger = store.open();
    let now = 1_767_225_600; // 2026-01-01
    // Grant now, then a withdrawal dated yesterday: withdrawn from yesterday on.
    let a = key().pseudonymize("backdated-withdrawal");
    ledger.record_consent(&a, &change(Purpose::Personalization, true, now), t(now)).unwrap();
    ledger.record_consent(&a, &change(Purpose::Personalization, false, now - 86_400), t(now + 1)).unwrap();
    for at in [now - 86_400, now, now + 1, now + 10_000] {
        assert_eq!(ledger.status(&a, Purpose::Personalization, t(at)).unwrap().state, ConsentState::Withdrawn);
    }
    // Grant now, grant again 3 s ahead, withdraw now: still withdrawn after the 3 s.
    let b = key().pseudonymize("future-grant");
    ledger.record_consent(&b, &change(Purpose::Personalization, true, now), t(now)).unwrap();
    ledger.record_consent(&b, &change(Purpose::Personalization, true, now + 3), t(now)).unwrap();
    ledger.record_consent(&b, &change(Purpose::Personalization, false, now), t(now)).unwrap();
    for at in [now, now + 4, now + 1_000] {
        assert_eq!(ledger.status(&b, Purpose::Personalization, t(at)).unwrap().state, ConsentState::Withdrawn);
    }
    // A withdrawal dated in the future still counts from the moment it is recorded.
    let c = key().pseudonymize("future-withdrawal");
    ledger.record_consent(&c, &change(Purpose::Training, true, now), t(now)).unwrap();
    ledger.record_consent(&c, &change(Purpose::Training, false, now + 200), t(now + 10)).unwrap();
    assert_eq!(ledger.status(&c, Purpose::Training, t(now + 10)).unwrap().state, ConsentState::Withdrawn);
    // Beyond the five-minute skew, or before 1970, or at the ends of time: refused, nothing stored.
    for effective in [now + 301, i64::MAX / 1000, -62_135_596_800, i64::MIN / 1000] {
        let err = ledger.record_consent(&c, &change(Purpose::Training, true, effective), t(now)).unwrap_err();
        assert!(matches!(err, Error::Vocabulary(hush_vocab::Error::InvalidField { field: "effective_at", .. })), "{err}");
    }
    assert_eq!(ledger.history(&c).unwrap().len(), 2);
    // A grant backdated over a time when a withdrawal was in force does not
    // reopen it: a past snapshot keeps the withdrawal; the grant holds from when it was recorded.
    let d = key().pseudonymize("backdated-grant");
    ledger.record_consent(&d, &change(Purpose::Training, false, now), t(now)).unwrap();
    ledger.record_consent(&d, &change(Purpose::Training, true, now - 86_400), t(now + 100)).unwrap();
    let at = |s| ledger.status(&d, Purpose::Training, t(s)).unwrap().state;
    assert_eq!(at(now - 3_600), ConsentState::Granted, "before any decision was in force, the backdated grant counts");
    assert_eq!(at(now + 50), ConsentState::Withdrawn);
    assert_eq!(at(now + 100), ConsentState::Granted);
    // History is in the order recorded.
    let history = ledger.history(&d).unwrap();
    assert!(!history[0].granted && history[1].granted && history[0].seq < history[1].seq);
}}

on_both_backends! {
fn a_withdrawal_recorded_by_a_clock_ahead_counts_at_once(store) {
    let mut ledger = store.open();
    let now = Timestamp::now();
    let ahead = Timestamp::from_unix_millis(now.as_unix_millis() + 120_000);
    let behind = Timestamp::from_unix_millis(now.as_unix_millis() - 600_000);
    let mut at = |subject: &str, granted: bool, effective: Timestamp, recorded: Timestamp| {
        let change = ConsentChange { effective_at: effective, ..change(Purpose::Personalization, granted, 0) };
        ledger.record_consent(&key().pseudonymize(subject), &change, recorded).unwrap();
    };
    // Granted by this host, withdrawn by a replica whose clock runs two minutes ahead.
    at("ahead", true, now, now);
    at("ahead", false, ahead, ahead);
    // Granted, then withdrawn after the host clock stepped ten minutes back.
    at("stepped-back", true, now, now);
    at("stepped-back", false, behind, behind);
    // And the other way round: a grant recorded ahead is in force too, for the present.
    at("granted-ahead", false, now, now);
    at("granted-ahead", true, ahead, ahead);
    let status = |subject: &str, t: Timestamp| ledger.status(&key().pseudonymize(subject), Purpose::Personalization, t);
    assert_eq!(status("ahead", Timestamp::now()).unwrap().state, ConsentState::Withdrawn);
    assert_eq!(status("stepped-back", Timestamp::now()).unwrap().state, ConsentState::Withdrawn);
    assert_eq!(status("granted-ahead", Timestamp::now()).unwrap().state, ConsentState::Granted);
    // Questions about the past are answered at the time asked.
    let hour_ago = Timestamp::from_unix_millis(now.as_unix_millis() - 3_600_000);
    assert_eq!(status("ahead", hour_ago).unwrap().state, ConsentState::NoRecord);
    // Ingestion gates on the same answer: nothing is stored for the withdrawn subjects.
    let mut batch = ledger.batch().unwrap();
    for subject in ["ahead", "stepped-back"] {
        let outcome = batch.ingest_event(&event(key().pseudonymize(subject), "sku-1", 10), Timestamp::now()).unwrap();
        assert_eq!(outcome, hush_consent::IngestOutcome::NoConsent, "{subject}");
    }
    batch.commit().unwrap();
}}

on_both_backends! {
fn an_imported_row_dated_in_the_future_is_a_malformed_row(store) {
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = store.open();
    let csv = dir.path().join("consent.csv");
    std::fs::write(
        &csv,
        "subject_id,purpose,granted,effective_at,notice_version,proof_ref\n\
         a,training,true,2025-01-01T00:00:00Z,v1,\n\
         b,training,true,2026-06-01T00:00:00Z,v1,\n",
    )
    .unwrap();
    let lenient = ImportOptions { strict: false, max_malformed_fraction: 1.0 };
    let now = t(1_767_225_600);
    let report = import_consent(&mut ledger, &key(), &csv, ConsentFormat::Csv, &lenient, now, &mut |_| {}).unwrap();
    assert_eq!((report.rows, report.stored, report.malformed), (2, 1, 1));
    let message = report.errors[0].to_string();
    assert!(message.starts_with(&format!("{}:3: field `effective_at`: 2026-06-01T00:00:00Z is in the future", csv.display())), "{message}");
}}

on_both_backends! {
fn reimporting_a_consent_history_changes_nothing(store) {
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = store.open();
    let csv = dir.path().join("consent.csv");
    std::fs::write(
        &csv,
        "subject_id,purpose,granted,effective_at,notice_version,proof_ref\n\
         a,personalization,true,2025-01-01T00:00:00Z,v1,banner-1\n\
         b,personalization,true,2025-01-01T00:00:00Z,v1,\n\
         b,personalization,true,2025-01-01T00:00:00Z,v1,\n",
    )
    .unwrap();
    let opts = ImportOptions::default();
    let now = Timestamp::now();
    let first = import_consent(&mut ledger, &key(), &csv, ConsentFormat::Csv, &opts, now, &mut |_| {}).unwrap();
    assert_eq!((first.rows, first.stored, first.duplicates), (3, 2, 1), "a row repeated within the file is one decision");
    // The person withdraws through the API; then the platform's history is imported again.
    let a = key().pseudonymize("a");
    ledger.record_consent(&a, &change(Purpose::Personalization, false, now.as_unix_millis() / 1000), now).unwrap();
    let again = import_consent(&mut ledger, &key(), &csv, ConsentFormat::Csv, &opts, Timestamp::now(), &mut |_| {})
        .unwrap();
    assert_eq!((again.stored, again.duplicates), (0, 3));
    assert_eq!(ledger.status(&a, Purpose::Personalization, Timestamp::now()).unwrap().state, ConsentState::Withdrawn);
    assert_eq!(ledger.history(&a).unwrap().len(), 2);
}}

on_both_backends! {
fn erasing_a_never_seen_id_says_so_and_blocks_no_opt_in(store) {
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = store.open();
    let raw = "never-seen@example.org";
    let stranger = key().pseudonymize(raw);
    assert!(!ledger.is_known(&stranger).unwrap());
    let receipt = ledger.erase(&stranger, t(100)).unwrap();
    assert!(!receipt.subject_was_known && receipt.suppressed, "{receipt:?}");
    assert_eq!((receipt.consent_records_deleted, receipt.events_deleted), (0, 0));
    // Erasing it again still says it was never seen.
    assert!(!ledger.erase(&stranger, t(150)).unwrap().subject_was_known);
    // A stale backfill of the id stays suppressed ...
    let consent = dir.path().join("consent.csv");
    std::fs::write(
        &consent,
        format!("subject_id,purpose,granted,effective_at,notice_version,proof_ref\n{raw},training,true,100,v2,\n"),
    )
    .unwrap();
    let opts = ImportOptions::default();
    let c = import_consent(&mut ledger, &key(), &consent, ConsentFormat::Csv, &opts, t(200), &mut |_| {}).unwrap();
    assert_eq!((c.stored, c.dropped_suppressed), (0, 1));
    // ... a withdrawal does not lift it, but the person's own opt-in does.
    let err = ledger.record_consent(&stranger, &change(Purpose::Personalization, false, 200), t(200)).unwrap_err();
    assert!(matches!(err, Error::Suppressed), "{err}");
    ledger.record_consent(&stranger, &change(Purpose::Personalization, true, 200), t(200)).unwrap();
    assert!(!ledger.is_suppressed(&stranger).unwrap() && ledger.is_known(&stranger).unwrap());
    // A subject whose data was erased is known, and an opt-in alone does not lift that.
    let receipt = ledger.erase(&stranger, t(300)).unwrap();
    assert!(receipt.subject_was_known && receipt.consent_records_deleted == 1);
    let again = ledger.erase(&stranger, t(400)).unwrap();
    assert!(again.subject_was_known && again.consent_records_deleted == 0);
    let err = ledger.record_consent(&stranger, &change(Purpose::Personalization, true, 500), t(500)).unwrap_err();
    assert!(matches!(err, Error::Suppressed), "{err}");
}}

on_both_backends! {
fn history_is_append_only(store) {
    let mut ledger = store.open();
    ledger.record_consent(&key().pseudonymize("a"), &change(Purpose::Training, true, 1), t(1)).unwrap();
    let refused = match ledger.sqlite_path() {
        Some(path) => {
            let conn = rusqlite::Connection::open(path).unwrap();
            conn.execute("UPDATE consent_records SET granted = 0", []).unwrap_err().to_string()
        }
        None => {
            let mut client = postgres::Client::connect(store.url(), postgres::NoTls).unwrap();
            let err = client.execute("UPDATE consent_records SET granted = false", &[]).unwrap_err();
            err.as_db_error().map(|e| e.message().to_string()).unwrap_or_default()
        }
    };
    assert!(refused.contains("consent history is append-only"), "{refused}");
}
}

on_both_backends! {
fn events_without_any_granted_purpose_are_counted_not_stored(store) {
    let mut ledger = store.open();
    let consenting = key().pseudonymize("consenting");
    let withdrawn = key().pseudonymize("withdrawn");
    let never = key().pseudonymize("never");
    ledger.record_consent(&consenting, &change(Purpose::Personalization, true, 10), t(10)).unwrap();
    ledger.record_consent(&withdrawn, &change(Purpose::Training, true, 10), t(10)).unwrap();
    ledger.record_consent(&withdrawn, &change(Purpose::Training, false, 20), t(20)).unwrap();
    let batch =
        [event(consenting, "a", 30), event(withdrawn, "b", 30), event(never, "c", 30), event(consenting, "d", 31)];
    let report = ledger.ingest_events(&batch, t(40)).unwrap();
    assert_eq!((report.received, report.stored, report.dropped_no_consent), (4, 2, 2));
    assert_eq!(
        report.outcomes,
        [IngestOutcome::Stored, IngestOutcome::NoConsent, IngestOutcome::NoConsent, IngestOutcome::Stored]
    );
    assert_eq!(ledger.events_of(&consenting).unwrap().len(), 2);
    assert!(ledger.events_of(&withdrawn).unwrap().is_empty());
    assert_eq!(ledger.stats().unwrap().events, 2);
    // A batch that stores nothing still writes (and so commits durably) like
    // one that stores: its timing does not tell who consented.
    let report = ledger.ingest_events(&[event(never, "e", 50)], t(60)).unwrap();
    assert_eq!(report.stored, 0);
    let stats = ledger.stats().unwrap();
    assert_eq!((stats.events, stats.ingested_batches), (2, 2));
}}

on_both_backends! {
fn erasure_leaves_nothing_of_the_subject_and_suppresses_reimport(store) {
    let dir = tempfile::tempdir().unwrap();
    let raw_id = "erase-me-7f3a9c21@example.org";
    let subject = key().pseudonymize(raw_id);
    let mut ledger = store.open();
    // Enough rows that the tables span many pages and the indexes have interior nodes.
    let mut batch = Vec::new();
    for n in 0..3000 {
        let other = key().pseudonymize(&format!("other-{n}"));
        ledger.record_consent(&other, &change(Purpose::Personalization, true, 1), t(1)).unwrap();
        batch.push(event(other, "x", 2));
    }
    ledger.record_consent(&subject, &change(Purpose::Training, true, 1), t(1)).unwrap();
    ledger.record_consent(&subject, &change(Purpose::Personalization, true, 1), t(1)).unwrap();
    for n in 0..200 {
        batch.push(event(subject, &format!("item-{n}"), 5 + n));
    }
    assert_eq!(ledger.ingest_events(&batch, t(1000)).unwrap().stored, 3200);

    let receipt = ledger.erase(&subject, t(2000)).unwrap();
    assert_eq!((receipt.consent_records_deleted, receipt.events_deleted), (2, 200));
    assert!(receipt.suppressed);
    assert!(ledger.is_suppressed(&subject).unwrap());
    assert!(matches!(ledger.export(&subject, t(2001)), Err(Error::UnknownSubject)));

    let needles: [(&str, Vec<u8>); 3] = [
        ("raw id", raw_id.as_bytes().to_vec()),
        ("pseudonym bytes", subject.as_bytes().to_vec()),
        ("pseudonym hex", subject.to_hex().into_bytes()),
    ];
    match ledger.sqlite_path() {
        // SQLite: not one byte of the subject is left in the files.
        Some(db) => {
            assert!(receipt.wal_truncated);
            let files = database_bytes(db);
            assert!(!files.is_empty());
            for (path, bytes) in &files {
                for (what, needle) in &needles {
                    assert!(!contains(bytes, needle), "{what} still present in {path}");
                }
            }
        }
        // PostgreSQL: no row of any table holds the subject (the suppression
        // entry is a one-way hash of the pseudonym).
        None => {
            let mut client = postgres::Client::connect(store.url(), postgres::NoTls).unwrap();
            for table in ["consent_records", "events", "suppressions", "erasure_log", "api_keys", "budget_runs"] {
                let rows = client.query(&format!("SELECT t::TEXT FROM {table} t"), &[]).unwrap();
                for row in rows {
                    let text: String = row.get(0);
                    for (what, needle) in &needles {
                        let hex_needle: String = needle.iter().map(|b| format!("{b:02x}")).collect();
                        assert!(!text.contains(std::str::from_utf8(needle).unwrap_or("\u{0}")), "{what} in {table}");
                        assert!(!text.contains(&hex_needle), "{what} (as bytes) in {table}");
                    }
                }
            }
        }
    }
    // The other subjects are intact.
    assert_eq!(ledger.stats().unwrap().events, 3000);

    // A later import of the erased subject is suppressed and counted.
    let events = dir.path().join("events.csv");
    std::fs::write(&events, format!("subject_id,item_id,kind,value,timestamp\n{raw_id},sku-1,view,1,100\n")).unwrap();
    let consent = dir.path().join("consent.csv");
    std::fs::write(
        &consent,
        format!("subject_id,purpose,granted,effective_at,notice_version,proof_ref\n{raw_id},training,true,100,v2,\n"),
    )
    .unwrap();
    let now = t(3000);
    let opts = ImportOptions::default();
    let c = import_consent(&mut ledger, &key(), &consent, ConsentFormat::Csv, &opts, now, &mut |_| {}).unwrap();
    assert_eq!((c.stored, c.dropped_suppressed), (0, 1));
    let format = EventFormat::from_name("csv").unwrap();
    let e = import_events(&mut ledger, &key(), &events, &format, &opts, now, &mut |_| {}).unwrap();
    assert_eq!((e.stored, e.dropped_suppressed), (0, 1));
    assert!(matches!(
        ledger.record_consent(&subject, &change(Purpose::Training, true, 3000), now),
        Err(Error::Suppressed)
    ));
}
}

on_both_backends! {
fn export_holds_history_events_and_current_status(store) {
    let mut ledger = store.open();
    let s = key().pseudonymize("exported");
    ledger.record_consent(&s, &change(Purpose::Personalization, true, 10), t(10)).unwrap();
    ledger.ingest_events(&[event(s, "sku-9", 11)], t(12)).unwrap();
    let export = ledger.export(&s, t(20)).unwrap();
    let json = serde_json::to_value(&export).unwrap();
    assert_eq!(json["subject"], s.to_hex());
    assert_eq!(json["events"][0]["item"], "sku-9");
    assert_eq!(json["events"][0]["at"], "1970-01-01T00:00:11Z");
    assert_eq!(json["consent_history"][0]["purpose"], "personalization");
    assert_eq!(json["consent_status"][0]["state"], "granted");
    assert_eq!(json["consent_status"][1]["state"], "no_record");
    assert!(matches!(ledger.export(&key().pseudonymize("stranger"), t(20)), Err(Error::UnknownSubject)));
}}

on_both_backends! {
fn a_newer_schema_is_refused_with_a_clear_message(store) {
    let ledger = store.open();
    match ledger.sqlite_path() {
        Some(path) => rusqlite::Connection::open(path).unwrap().pragma_update(None, "user_version", 99).unwrap(),
        None => {
            let mut client = postgres::Client::connect(store.url(), postgres::NoTls).unwrap();
            client.execute("UPDATE hush_schema SET version = 99", &[]).unwrap();
        }
    }
    let err = Ledger::connect(store.url()).unwrap_err().to_string();
    let expected = format!("has schema version 99, newer than this hush understands (at most {SCHEMA_VERSION})");
    assert!(err.contains(&expected), "{err}");
}
}

on_both_backends! {
fn an_older_schema_is_migrated_and_keeps_its_data(store) {
    let mut ledger = store.open();
    let alice = key().pseudonymize("alice");
    ledger.record_consent(&alice, &change(Purpose::Training, true, 10), t(10)).unwrap();
    ledger.ingest_events(&[event(alice, "sku-1", 11), event(alice, "sku-2", 12)], t(13)).unwrap();
    // Make it a version-2 store: the budget tables of migration 3, the
    // column of migration 4, the batch counter of migration 5, the event
    // ids of migration 6 and the catalogue of migration 7 do not exist yet.
    let downgrade = "DROP TABLE budget_runs; DROP TABLE budget_caps; \
                     ALTER TABLE suppressions DROP COLUMN subject_was_known; DROP TABLE ingest_batches; \
                     DROP INDEX events_by_event_key; ALTER TABLE events DROP COLUMN event_key; \
                     ALTER TABLE events DROP COLUMN event_id; DROP TABLE items;";
    match ledger.sqlite_path() {
        Some(path) => {
            let conn = rusqlite::Connection::open(path).unwrap();
            conn.execute_batch(&format!("{downgrade} PRAGMA user_version = 2;")).unwrap();
        }
        None => {
            let mut client = postgres::Client::connect(store.url(), postgres::NoTls).unwrap();
            client.batch_execute(&format!("{downgrade} UPDATE hush_schema SET version = 2;")).unwrap();
        }
    }
    drop(ledger);
    let ledger = store.open();
    assert_eq!(ledger.schema_version().unwrap(), SCHEMA_VERSION);
    assert_eq!(ledger.history(&alice).unwrap().len(), 1);
    assert!(ledger.budget_spending().unwrap().is_empty());
    let recent: Vec<String> = ledger.recent_events(&alice, 10).unwrap().into_iter().map(|e| e.item).collect();
    assert_eq!(recent, ["sku-2", "sku-1"]);
    assert_eq!(ledger.stats().unwrap().ingested_batches, 0, "the counter starts with the migration");
    assert!(ledger.catalogue_items().unwrap().is_empty(), "the catalogue starts empty with the migration");
    // The migrated events take part in duplicate detection.
    drop(ledger);
    let mut ledger = store.open();
    let again = ledger.ingest_events(&[event(alice, "sku-1", 11), with_id(event(alice, "sku-3", 14), "e-1")], t(15));
    let again = again.unwrap();
    assert_eq!((again.stored, again.duplicates), (1, 1));
    assert_eq!(ledger.events_of(&alice).unwrap().len(), 3);
}
}

on_both_backends! {
fn event_ingestion_is_idempotent_by_id_and_by_content(store) {
    let mut ledger = store.open();
    let (ada, bob, never) = (key().pseudonymize("ada"), key().pseudonymize("bob"), key().pseudonymize("never"));
    for s in [ada, bob] {
        ledger.record_consent(&s, &change(Purpose::Personalization, true, 1), t(1)).unwrap();
    }
    let first = [
        event(ada, "sku-1", 10),
        with_id(event(ada, "sku-2", 11), "order-7"),
        // Two events with their own ids and the same content are two events.
        with_id(event(ada, "sku-9", 12), "a"),
        with_id(event(ada, "sku-9", 12), "b"),
        // The same id of another subject is another event.
        with_id(event(bob, "sku-2", 11), "order-7"),
        event(never, "sku-1", 10),
    ];
    let report = ledger.ingest_events(&first, t(20)).unwrap();
    assert_eq!((report.stored, report.duplicates, report.dropped_no_consent), (5, 0, 1));
    // A storefront's retry: everything again, plus a repeat inside the batch.
    let mut retry = first.to_vec();
    retry.push(event(bob, "sku-5", 13));
    retry.push(event(bob, "sku-5", 13));
    let report = ledger.ingest_events(&retry, t(21)).unwrap();
    assert_eq!(
        (report.stored, report.duplicates, report.conflicts, report.dropped_no_consent),
        (1, 6, 0, 1),
        "{report:?}"
    );
    assert_eq!(ledger.events_of(&ada).unwrap().len(), 4);
    assert_eq!(ledger.events_of(&bob).unwrap().len(), 2);
    // The same id with other content: the first one stands.
    let report = ledger.ingest_events(&[with_id(event(ada, "sku-3", 11), "order-7")], t(22)).unwrap();
    assert_eq!((report.stored, report.conflicts), (0, 1));
    let items: Vec<String> = ledger.events_of(&ada).unwrap().into_iter().map(|e| e.item).collect();
    assert!(items.contains(&"sku-2".to_string()) && !items.contains(&"sku-3".to_string()), "{items:?}");
    // Every batch still commits alike (migration 5).
    assert_eq!(ledger.stats().unwrap().ingested_batches, 3);
    // Erasure deletes the events with their ids: a later grant and the same
    // events store them afresh, nothing is held as a duplicate.
    ledger.ingest_events(&[with_id(event(ada, "sku-4", 15), "ada-private-receipt")], t(23)).unwrap();
    ledger.erase(&ada, t(30)).unwrap();
    assert!(ledger.events_of(&ada).unwrap().is_empty());
    if let Some(path) = ledger.sqlite_path() {
        for (file, bytes) in database_bytes(path) {
            assert!(!contains(&bytes, b"ada-private-receipt"), "an event id of an erased subject is in {file}");
        }
    }
    ledger.record_consent(&ada, &change(Purpose::Personalization, true, 31), t(31)).ok();
    assert!(ledger.events_of(&ada).unwrap().is_empty(), "nothing of the erased subject came back");
}
}

on_both_backends! {
fn recent_events_are_the_newest_first_and_bounded(store) {
    let mut ledger = store.open();
    let (s, other) = (key().pseudonymize("recent"), key().pseudonymize("someone else"));
    for subject in [s, other] {
        ledger.record_consent(&subject, &change(Purpose::Personalization, true, 1), t(1)).unwrap();
    }
    // Out of time order, with a tie at 20 (broken by arrival), and another
    // subject's events in between.
    let batch = [
        event(s, "at-20-first", 20),
        event(other, "not-mine", 25),
        event(s, "at-10", 10),
        event(s, "at-30", 30),
        event(s, "at-20-second", 20),
    ];
    ledger.ingest_events(&batch, t(40)).unwrap();
    let items = |limit| -> Vec<String> { ledger.recent_events(&s, limit).unwrap().into_iter().map(|e| e.item).collect() };
    assert_eq!(items(10), ["at-30", "at-20-second", "at-20-first", "at-10"]);
    assert_eq!(items(2), ["at-30", "at-20-second"]);
    assert!(items(0).is_empty());
    assert_eq!(items(usize::MAX).len(), 4);
}
}

on_both_backends! {
fn a_gated_read_returns_only_what_the_key_and_consent_allow(store) {
    use hush_consent::keys::{self, KeyCheck, PresentedKey};
    use hush_consent::GatedRead;
    let mut ledger = store.open();
    let s = key().pseudonymize("gated");
    let (key_text, _) = keys::create(&mut ledger, "shop", &["recommend".into()], t(1)).unwrap();
    let (privacy_key, _) = keys::create(&mut ledger, "dpo", &["privacy".into()], t(1)).unwrap();
    let (admin_key, _) = keys::create(&mut ledger, "ops", &["admin".into()], t(1)).unwrap();
    let presented = PresentedKey::parse(&key_text).unwrap();
    // On PostgreSQL a server reads through `PgReader` (asynchronous,
    // pipelined): every answer below must be the same through it.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let reader = hush_consent::PgReaderTarget::of(&ledger)
        .map(|target| runtime.block_on(hush_consent::PgReader::connect(target, 2)).unwrap());
    let read = |ledger: &Ledger, key: Option<&PresentedKey>, at: i64| {
        let key = key.map(|k| (k, "recommend"));
        let answer = ledger.gated_read(key, &s, Purpose::Personalization, t(at), 2).unwrap();
        if let Some(reader) = &reader {
            let asynchronous = runtime.block_on(reader.gated_read(key, &s, Purpose::Personalization, t(at), 2));
            assert_eq!(asynchronous.unwrap(), answer, "PgReader and the ledger disagree");
        }
        answer
    };
    // Never decided: refused with no record, whoever asks.
    for key in [None, Some(&presented)] {
        match read(&ledger, key, 5) {
            GatedRead::NotGranted(status) => assert_eq!(status.state, ConsentState::NoRecord),
            other => panic!("{other:?}"),
        }
    }
    ledger.record_consent(&s, &change(Purpose::Personalization, true, 10), t(10)).unwrap();
    ledger.ingest_events(&[event(s, "a", 11), event(s, "b", 12), event(s, "c", 13)], t(14)).unwrap();
    let items = |read: GatedRead| match read {
        GatedRead::Granted { status, recent } => {
            assert!(status.is_granted());
            recent.into_iter().map(|e| e.item).collect::<Vec<_>>()
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(items(read(&ledger, Some(&presented), 20)), ["c", "b"]);
    assert_eq!(items(read(&ledger, None, 20)), ["c", "b"]);
    // An admin key carries every scope.
    assert_eq!(items(read(&ledger, Some(&PresentedKey::parse(&admin_key).unwrap()), 20)), ["c", "b"]);
    // A wrong secret, a key without the scope, an unknown key: refused, nothing of the subject returned.
    let mut wrong = key_text.clone();
    wrong.push('0');
    assert_eq!(read(&ledger, Some(&PresentedKey::parse(&wrong).unwrap()), 20), GatedRead::KeyRefused(KeyCheck::Invalid));
    assert_eq!(
        read(&ledger, Some(&PresentedKey::parse(&privacy_key).unwrap()), 20),
        GatedRead::KeyRefused(KeyCheck::MissingScope)
    );
    assert_eq!(
        read(&ledger, Some(&PresentedKey::parse("hush_000000000000_00").unwrap()), 20),
        GatedRead::KeyRefused(KeyCheck::Invalid)
    );
    // Before the grant was recorded it did not hold.
    assert!(matches!(read(&ledger, Some(&presented), 5), GatedRead::NotGranted(_)));
    // A withdrawal: refused, and no event comes back.
    ledger.record_consent(&s, &change(Purpose::Personalization, false, 30), t(30)).unwrap();
    match read(&ledger, Some(&presented), 31) {
        GatedRead::NotGranted(status) => assert_eq!(status.state, ConsentState::Withdrawn),
        other => panic!("{other:?}"),
    }
    // A revoked key is refused.
    let id = presented.key_id.clone();
    assert!(ledger.revoke_api_key(&id, t(40)).unwrap());
    assert_eq!(read(&ledger, Some(&presented), 41), GatedRead::KeyRefused(KeyCheck::Invalid));
}
}

on_both_backends! {
fn a_batch_of_many_subjects_is_gated_per_subject(store) {
    let mut ledger = store.open();
    let subjects: Vec<Pseudonym> = (0..50).map(|i| key().pseudonymize(&format!("many-{i}"))).collect();
    // Even subjects grant personalization, every third grants training too,
    // subject 0 is erased afterwards, and subject 2 withdraws.
    for (i, s) in subjects.iter().enumerate() {
        if i % 2 == 0 {
            ledger.record_consent(s, &change(Purpose::Personalization, true, 1), t(1)).unwrap();
        }
        if i % 3 == 0 && i % 2 == 1 {
            ledger.record_consent(s, &change(Purpose::Training, true, 1), t(1)).unwrap();
        }
    }
    ledger.erase(&subjects[0], t(2)).unwrap();
    ledger.record_consent(&subjects[2], &change(Purpose::Personalization, false, 3), t(3)).unwrap();
    let batch: Vec<SubjectEvent> = subjects.iter().flat_map(|&s| [event(s, "x", 4), event(s, "y", 5)]).collect();
    let report = ledger.ingest_events(&batch, t(6)).unwrap();
    for (i, pair) in report.outcomes.chunks(2).enumerate() {
        let expected = match i {
            0 => IngestOutcome::Suppressed,
            2 => IngestOutcome::NoConsent,
            i if i % 2 == 0 || i % 3 == 0 => IngestOutcome::Stored,
            _ => IngestOutcome::NoConsent,
        };
        assert_eq!(pair, [expected, expected], "subject {i}");
    }
    assert_eq!(report.received, 100);
    assert_eq!(ledger.stats().unwrap().events, report.stored);
}
}

on_both_backends! {
fn a_pool_lends_connections_to_the_same_store(store) {
    let mut ledger = store.open();
    let s = key().pseudonymize("pooled");
    let pool = hush_consent::LedgerPool::new(&ledger, 3).unwrap();
    assert!(hush_consent::LedgerPool::new(&ledger, 0).is_err());
    // A write on one connection is seen by every pooled one at once.
    ledger.record_consent(&s, &change(Purpose::Personalization, true, 1), t(1)).unwrap();
    let lent: Vec<_> = (0..3).map(|_| pool.get().unwrap()).collect();
    for reader in &lent {
        assert!(reader.status(&s, Purpose::Personalization, t(2)).unwrap().is_granted());
    }
    let state = pool.state();
    assert_eq!((state.size, state.in_use()), (3, 3), "{state:?}");
    drop(lent);
    let state = pool.state();
    assert_eq!((state.size, state.idle, state.in_use()), (3, 3, 0), "{state:?}");
}
}

on_both_backends! {
fn a_failed_import_leaves_the_store_untouched(store) {
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = store.open();
    let s = key().pseudonymize("kept");
    ledger.record_consent(&s, &change(Purpose::Personalization, true, 1), t(1)).unwrap();
    ledger.ingest_events(&[event(s, "before", 2)], t(3)).unwrap();
    let before = ledger.stats().unwrap();

    let file = dir.path().join("mostly-bad.csv");
    std::fs::write(&file, "subject_id,item_id,kind,value,timestamp\nkept,sku-1,view,1,10\nkept,sku-2,view,oops,11\n")
        .unwrap();
    let format = EventFormat::from_name("csv").unwrap();
    let err = import_events(&mut ledger, &key(), &file, &format, &ImportOptions::default(), t(20), &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("1 of 2 rows are malformed"), "{err}");
    assert!(err.contains("mostly-bad.csv:3: field `value`: expected a finite number, found `oops`"), "{err}");
    let strict = ImportOptions { strict: true, ..ImportOptions::default() };
    let err = import_events(&mut ledger, &key(), &file, &format, &strict, t(20), &mut |_| {}).unwrap_err();
    assert!(matches!(err, Error::Row(_)));
    assert_eq!(ledger.stats().unwrap(), before);
}}

on_both_backends! {
fn consent_files_in_both_formats_with_per_row_errors(store) {
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = store.open();
    let csv = dir.path().join("consent.csv");
    std::fs::write(
        &csv,
        "subject_id,purpose,granted,effective_at,notice_version,proof_ref\n\
         a,training,true,2025-01-01T00:00:00Z,v1,r-1\n\
         b,marketing,true,2025-01-01T00:00:00Z,v1,\n\
         c,training,maybe,2025-01-01T00:00:00Z,v1,\n\
         d,training,false,last tuesday,v1,\n",
    )
    .unwrap();
    let lenient = ImportOptions { strict: false, max_malformed_fraction: 1.0 };
    // Imported on 2026-01-01: the rows are dated in the past, as a consent platform's history is.
    let now = t(1_767_225_600);
    let report = import_consent(&mut ledger, &key(), &csv, ConsentFormat::Csv, &lenient, now, &mut |_| {}).unwrap();
    assert_eq!((report.rows, report.stored, report.malformed), (4, 1, 3));
    let messages: Vec<String> = report.errors.iter().map(|e| e.to_string()).collect();
    let p = csv.display();
    assert_eq!(
        messages,
        [
            format!("{p}:3: field `purpose`: unknown purpose `marketing`: expected one of personalization, training"),
            format!("{p}:4: field `granted`: expected true/false (or granted/withdrawn, 1/0, yes/no), found `maybe`"),
            format!("{p}:5: field `effective_at`: invalid timestamp `last tuesday`: expected RFC 3339 (e.g. 2026-01-31T12:00:00Z) or integer unix seconds"),
        ]
    );
    let jsonl = dir.path().join("consent.jsonl");
    std::fs::write(
        &jsonl,
        "{\"subject_id\":\"e\",\"purpose\":\"personalization\",\"granted\":true,\"effective_at\":1735689600,\"notice_version\":\"v2\"}\n\
         \n\
         {\"subject_id\":\"f\",\"purpose\":\"training\",\"granted\":true}\n",
    )
    .unwrap();
    let report =
        import_consent(&mut ledger, &key(), &jsonl, ConsentFormat::Jsonl, &lenient, now, &mut |_| {}).unwrap();
    assert_eq!((report.rows, report.stored, report.malformed), (2, 1, 1));
    assert_eq!(
        report.errors[0].to_string(),
        format!(
            "{}:3: expected a JSON object with subject_id, purpose, granted, effective_at, notice_version, proof_ref: missing field `effective_at` (column 54)",
            jsonl.display()
        )
    );
    let e = key().pseudonymize("e");
    assert!(ledger.status(&e, Purpose::Personalization, t(1_735_689_600)).unwrap().is_granted());
}}

/// One randomly generated decision: (purpose is training?, granted, seconds
/// since the previous decision was recorded, effective_at minus recorded_at
/// in seconds). Offsets reach past the clock skew on both sides, so some
/// records are refused.
fn decisions() -> impl Strategy<Value = Vec<(bool, bool, i64, i64)>> {
    prop::collection::vec((any::<bool>(), any::<bool>(), 0i64..400, -1000i64..700), 0..25)
}

/// What the rule says, written as plainly as possible and independently of
/// `hush_consent::rule`: among the accepted decisions in force at `at` (a
/// withdrawal from the earlier of its effective and recorded times, a grant
/// from the later), the one recorded last wins; when none is in force, a
/// backdated grant effective by `at` counts; otherwise there is no record.
fn model_state(accepted: &[(bool, i64, i64)], at: i64) -> ConsentState {
    let in_force = |&&(granted, effective, recorded): &&(bool, i64, i64)| {
        if granted {
            effective.max(recorded) <= at
        } else {
            effective.min(recorded) <= at
        }
    };
    if let Some(&(granted, _, _)) = accepted.iter().rfind(in_force) {
        return if granted { ConsentState::Granted } else { ConsentState::Withdrawn };
    }
    if accepted.iter().any(|&(granted, effective, _)| granted && effective <= at) {
        return ConsentState::Granted;
    }
    ConsentState::NoRecord
}

/// Records random decisions at increasing times and checks, for both
/// purposes and many probe times: records dated beyond the clock skew are
/// refused and change nothing; `status` equals the model; the latest decision
/// is what holds once it is in force; and a withdrawal is in force from the
/// moment it was recorded for as long as no grant is recorded after it.
fn check_latest_decision_wins(
    ledger: &mut Ledger,
    s: &Pseudonym,
    records: &[(bool, bool, i64, i64)],
    probes: &[i64],
) -> Result<(), TestCaseError> {
    const START: i64 = 1_000_000;
    let skew_s = hush_consent::MAX_CLOCK_SKEW_MS / 1000;
    let mut accepted: [Vec<(bool, i64, i64)>; 2] = [Vec::new(), Vec::new()];
    let mut recorded = START;
    for &(training, granted, gap, offset) in records {
        recorded += gap;
        let purpose = if training { Purpose::Training } else { Purpose::Personalization };
        let result = ledger.record_consent(s, &change(purpose, granted, recorded + offset), t(recorded));
        if offset > skew_s {
            let refused =
                matches!(result, Err(Error::Vocabulary(hush_vocab::Error::InvalidField { field: "effective_at", .. })));
            prop_assert!(refused, "a record {offset} s in the future was not refused: {result:?}");
        } else {
            prop_assert!(result.is_ok(), "{result:?}");
            accepted[usize::from(training)].push((granted, recorded + offset, recorded));
        }
    }
    let end = recorded + skew_s;
    for probe in probes.iter().map(|p| START - 1000 + p).chain([end]) {
        for purpose in Purpose::ALL {
            let mine = &accepted[usize::from(purpose == Purpose::Training)];
            let status = ledger.status(s, purpose, t(probe)).unwrap();
            prop_assert_eq!(status.state, model_state(mine, probe), "{} at {}", purpose, probe);
            // The latest decision holds once it is in force, whatever came before.
            if let Some(&(granted, _, _)) = mine.last() {
                if probe >= end {
                    let expected = if granted { ConsentState::Granted } else { ConsentState::Withdrawn };
                    prop_assert_eq!(status.state, expected);
                }
            }
            // Withdrawals recorded after the last grant: withdrawn from the first one's recording on.
            let trailing = mine.iter().rev().take_while(|d| !d.0).count();
            if trailing > 0 && probe >= mine[mine.len() - trailing].2 {
                prop_assert_eq!(status.state, ConsentState::Withdrawn);
            }
            // Where a withdrawal is in force, only a grant recorded (and effective) by then can override it.
            let withdrawal_in_force = mine.iter().any(|&(granted, e, r)| !granted && e.min(r) <= probe);
            if withdrawal_in_force && status.state == ConsentState::Granted {
                let by = status.decided_by.as_ref().expect("a granted status names its record");
                prop_assert!(by.granted && by.recorded_at <= t(probe) && by.effective_at <= t(probe), "{by:?}");
            }
        }
    }
    prop_assert_eq!(ledger.history(s).unwrap().len(), accepted[0].len() + accepted[1].len());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn the_latest_decision_wins_on_sqlite(
        records in decisions(),
        probes in prop::collection::vec(0i64..12_000, 1..12),
    ) {
        let mut ledger = Fresh::new(Backend::Sqlite).open();
        check_latest_decision_wins(&mut ledger, &key().pseudonymize("prop"), &records, &probes)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn the_latest_decision_wins_on_postgres(
        records in decisions(),
        probes in prop::collection::vec(0i64..12_000, 1..12),
    ) {
        // One database for every case, a subject of its own per case.
        static STORE: std::sync::OnceLock<Fresh> = std::sync::OnceLock::new();
        static CASE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let mut ledger = STORE.get_or_init(|| Fresh::new(Backend::Postgres)).open();
        let case = CASE.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        check_latest_decision_wins(&mut ledger, &key().pseudonymize(&format!("prop-{case}")), &records, &probes)?;
    }
}

#[cfg(unix)]
#[test]
fn the_sqlite_files_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("store").join("hush.db");
    let mut ledger = Ledger::open(&db).unwrap();
    ledger.record_consent(&key().pseudonymize("a"), &change(Purpose::Training, true, 1), t(1)).unwrap();
    let files = ["", "-wal", "-shm"].map(|s| std::path::PathBuf::from(format!("{}{s}", db.display())));
    for file in &files {
        let mode = std::fs::metadata(file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", file.display());
    }
    // A store made loose by hand is tightened when next opened.
    drop(ledger);
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let _ledger = Ledger::open(&db).unwrap();
    assert_eq!(std::fs::metadata(&db).unwrap().permissions().mode() & 0o777, 0o600);
}

/// The same store contents, on a fresh store of `store`'s backend.
fn twin_of(store: &Fresh) -> Fresh {
    Fresh::new(if store.url().starts_with("sqlite:") { Backend::Sqlite } else { Backend::Postgres })
}

/// Consent for ada and bob, nothing for `never`, `gone` erased, and
/// `late` granted from t = 25 (a grant recorded ahead of its effect).
fn consenting_store(store: &Fresh) -> hush_consent::Ledger {
    let mut ledger = store.open();
    for name in ["ada", "bob", "gone"] {
        ledger.record_consent(&key().pseudonymize(name), &change(Purpose::Personalization, true, 1), t(1)).unwrap();
    }
    ledger.record_consent(&key().pseudonymize("late"), &change(Purpose::Personalization, true, 25), t(1)).unwrap();
    ledger.erase(&key().pseudonymize("gone"), t(2)).unwrap();
    ledger
}

on_both_backends! {
fn a_group_of_batches_is_decided_as_the_same_batches_one_after_another(store) {
    let [ada, bob, never, gone, late] = ["ada", "bob", "never", "gone", "late"].map(|n| key().pseudonymize(n));
    // Each batch arrived at its own time; `late`'s grant takes effect between.
    let times = [t(20), t(24), t(30)];
    let batches: Vec<Vec<SubjectEvent>> = vec![
        vec![
            event(ada, "sku-1", 10),
            with_id(event(ada, "sku-2", 11), "order-7"),
            event(never, "sku-1", 10),
            event(late, "sku-6", 10),
        ],
        // Repeats of the first batch, by content and by id; a conflict; an erased subject.
        vec![
            event(ada, "sku-1", 10),
            with_id(event(ada, "sku-2", 11), "order-7"),
            with_id(event(ada, "sku-3", 12), "order-7"),
            event(gone, "sku-1", 10),
            event(bob, "sku-4", 13),
        ],
        // A repeat inside one batch, one of the second batch; `late` now granted.
        vec![event(bob, "sku-5", 14), event(bob, "sku-5", 14), event(bob, "sku-4", 13), event(late, "sku-7", 29)],
    ];
    let mut one_by_one = consenting_store(&store);
    let alone: Vec<_> =
        batches.iter().zip(times).map(|(b, at)| one_by_one.ingest_events(b, at).unwrap()).collect();
    let twin = twin_of(&store);
    let mut grouped = consenting_store(&twin);
    let slices: Vec<(&[SubjectEvent], Timestamp)> = batches.iter().zip(times).map(|(b, at)| (&b[..], at)).collect();
    let together = grouped.ingest_event_batches(&slices).unwrap();

    assert_eq!(together, alone, "each batch of a group is reported as if committed alone");
    assert_eq!(
        alone.iter().map(|r| (r.stored, r.duplicates, r.conflicts, r.dropped_no_consent, r.dropped_suppressed)).collect::<Vec<_>>(),
        [(2, 0, 0, 2, 0), (1, 2, 1, 0, 1), (2, 2, 0, 0, 0)],
        "the expected decisions themselves: each batch gated at its own time"
    );
    for subject in [ada, bob, never, gone, late] {
        assert_eq!(grouped.events_of(&subject).unwrap(), one_by_one.events_of(&subject).unwrap());
    }
    let (a, b) = (one_by_one.stats().unwrap(), grouped.stats().unwrap());
    assert_eq!((b.events, b.ingested_batches), (a.events, a.ingested_batches));
    assert_eq!(b.ingested_batches, 3, "a group counts each of its batches");
}
}

/// Events of ada, bob, never, gone and late, as (who, item, time, id) draws.
type Draw = (usize, usize, i64, Option<usize>);

/// Commits `events` split at `cuts`, each batch arriving at its own time,
/// as one group on one fresh store and one by one on another of `backend`:
/// the reports and the stored events must be the same.
fn group_matches_one_by_one(
    backend: Backend,
    events: Vec<Draw>,
    cuts: Vec<usize>,
    arrivals: Vec<i64>,
) -> Result<(), TestCaseError> {
    let names = ["ada", "bob", "never", "gone", "late"];
    let events: Vec<SubjectEvent> = events
        .into_iter()
        .map(|(who, item, at, id)| {
            let e = event(key().pseudonymize(names[who]), &format!("sku-{item}"), 10 + at);
            match id {
                Some(id) => with_id(e, &format!("e-{id}")),
                None => e,
            }
        })
        .collect();
    let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(events.len())).collect();
    cuts.push(0);
    cuts.push(events.len());
    cuts.sort_unstable();
    // Arrival times in any order (a group is in queue order, not time order).
    let batches: Vec<(&[SubjectEvent], Timestamp)> =
        cuts.windows(2).zip(&arrivals).map(|(w, &at)| (&events[w[0]..w[1]], t(at))).collect();
    let (a, b) = (Fresh::new(backend), Fresh::new(backend));
    let (mut one_by_one, mut grouped) = (consenting_store(&a), consenting_store(&b));
    let alone: Vec<_> = batches.iter().map(|&(batch, at)| one_by_one.ingest_events(batch, at).unwrap()).collect();
    let together = grouped.ingest_event_batches(&batches).unwrap();
    prop_assert_eq!(together, alone);
    for name in names {
        let s = key().pseudonymize(name);
        prop_assert_eq!(grouped.events_of(&s).unwrap(), one_by_one.events_of(&s).unwrap());
    }
    Ok(())
}

fn draws() -> impl Strategy<Value = (Vec<Draw>, Vec<usize>, Vec<i64>)> {
    (
        proptest::collection::vec((0..5usize, 0..5usize, 0..4i64, proptest::option::of(0..3usize)), 0..40),
        proptest::collection::vec(0..40usize, 0..5),
        proptest::collection::vec(20..30i64, 6),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Any split of any events into batches, arriving at any times:
    /// committing the batches as one group stores and reports exactly what
    /// committing them one by one does.
    #[test]
    fn any_group_matches_its_batches_one_by_one_on_sqlite((events, cuts, arrivals) in draws()) {
        group_matches_one_by_one(Backend::Sqlite, events, cuts, arrivals)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(8))]

    /// The same on PostgreSQL, whose batch prefetches every decision of a
    /// group's subjects in one round trip and decides each batch from them.
    #[test]
    fn any_group_matches_its_batches_one_by_one_on_postgres((events, cuts, arrivals) in draws()) {
        group_matches_one_by_one(Backend::Postgres, events, cuts, arrivals)?;
    }
}

/// A `PgReader` connection the server closes is opened again by the next
/// read on it, once however many reads find it closed at the same moment:
/// a restarted database or a killed backend costs a reconnection per
/// connection, not one per waiting request.
#[test]
fn the_async_reader_reopens_connections_the_server_closed() {
    use hush_consent::{GatedRead, PgReader, PgReaderTarget};
    let url = hush_testkit::postgres_url();
    let mut ledger = Ledger::connect(&url).unwrap();
    let s = key().pseudonymize("reopened");
    ledger.record_consent(&s, &change(Purpose::Personalization, true, 10), t(10)).unwrap();
    ledger.ingest_events(&[event(s, "a", 11), event(s, "b", 12)], t(14)).unwrap();
    let want = ledger.gated_read(None, &s, Purpose::Personalization, t(20), 5).unwrap();
    assert!(matches!(&want, GatedRead::Granted { recent, .. } if recent.len() == 2), "{want:?}");
    // Sessions ever opened to the test's database (PostgreSQL 14 and later).
    let sessions = |url: &str| -> i64 {
        let database = url.rsplit('/').next().unwrap().to_string();
        let admin = url.replace(&format!("/{database}"), "/postgres");
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    let mut client = postgres::Client::connect(&admin, postgres::NoTls).unwrap();
                    let row = client
                        .query_one("SELECT sessions FROM pg_stat_database WHERE datname = $1", &[&database])
                        .unwrap();
                    row.get::<_, i64>(0)
                })
                .join()
                .unwrap()
        })
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let reader = PgReader::connect(PgReaderTarget::of(&ledger).unwrap(), 3).await.unwrap();
        assert_eq!(reader.state().open, 3);
        assert_eq!(reader.gated_read(None, &s, Purpose::Personalization, t(20), 5).await.unwrap(), want);
        // The server ends every connection to this test's database.
        let ended = url.clone();
        let terminated = tokio::task::spawn_blocking(move || hush_testkit::end_connections(&ended)).await.unwrap();
        assert!(terminated >= 3, "{terminated} connections ended");
        // The reader notices, then every read reopens its slot's connection.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while reader.state().open > 0 {
            assert!(std::time::Instant::now() < deadline, "the closed connections were not noticed");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let sessions_before = sessions(&url);
        let opened_before = reader.connections_opened();
        let reader = std::sync::Arc::new(reader);
        let mut reads = tokio::task::JoinSet::new();
        for _ in 0..60 {
            let reader = reader.clone();
            reads.spawn(async move { reader.gated_read(None, &s, Purpose::Personalization, t(20), 5).await.unwrap() });
        }
        while let Some(answer) = reads.join_next().await {
            assert_eq!(answer.unwrap(), want);
        }
        assert_eq!(reader.state(), hush_consent::PgReaderState { size: 3, open: 3, in_flight: 0 });
        assert_eq!(reader.connections_opened() - opened_before, 3, "one reconnection per connection, not per read");
        // The server agrees. It counts a session when the backend flushes its
        // statistics: at exit (so a storm of replaced connections shows at
        // once), but for a live, idle one up to seconds later; so wait for
        // the three reopened ones. A reopening per read would show dozens.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut counted = sessions(&url) - sessions_before;
        while counted < 3 && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            counted = sessions(&url) - sessions_before;
        }
        assert!((3..10).contains(&counted), "{counted} sessions opened on the server for 60 reads over 3 connections");
    });
}

/// A connection the server ended is known as broken once a call on it has
/// failed, so a pool or a server replaces it (the blocking client's own
/// `is_closed` does not notice).
#[test]
fn a_connection_the_server_ended_is_known_as_broken_after_its_first_failure() {
    let url = hush_testkit::postgres_url();
    let ledger = Ledger::connect(&url).unwrap();
    assert!(ledger.api_key("nobody").unwrap().is_none());
    assert!(!ledger.is_broken());
    assert_eq!(hush_testkit::end_connections(&url), 1);
    let error = ledger.api_key("nobody").unwrap_err();
    assert!(ledger.is_broken(), "not known as broken after: {error:?}");
    let fresh = ledger.reopen().unwrap();
    assert!(fresh.api_key("nobody").unwrap().is_none());
}

/// The server ends the connection while a write transaction is under way
/// (not at its BEGIN): erasure, consent and budget reservation alike leave
/// the connection marked for replacement.
#[test]
fn a_connection_the_server_ends_inside_a_write_is_known_as_broken() {
    let url = hush_testkit::postgres_url();
    let mut admin = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    type Write = fn(&mut Ledger) -> hush_consent::Result<()>;
    let writes: [(&str, Write); 3] = [
        ("erase", |ledger| ledger.erase(&key().pseudonymize("erased"), t(200)).map(drop)),
        ("record_consent", |ledger| {
            let subject = key().pseudonymize("granting");
            ledger.record_consent(&subject, &change(Purpose::Training, true, 100), t(100)).map(drop)
        }),
        ("reserve_budget", |ledger| {
            let request = crate::budget::request("run-1", "ended", hush_consent::BudgetPurpose::Release, Some(0.1));
            ledger.reserve_budget(&request, t(100)).map(drop)
        }),
    ];
    for (name, write) in writes {
        let mut ledger = Ledger::connect(&url).unwrap();
        // Another session holds every table the writes touch, so each write
        // waits inside its transaction until its connection is ended.
        let mut holder = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        let mut held = holder.transaction().unwrap();
        held.batch_execute(
            "LOCK TABLE consent_records, events, suppressions, erasure_log, budget_caps, budget_runs IN ACCESS EXCLUSIVE MODE",
        )
        .unwrap();
        let writing = std::thread::spawn(move || {
            let result = write(&mut ledger);
            (ledger, result)
        });
        let waiting = "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity \
                       WHERE datname = current_database() AND wait_event_type = 'Lock'";
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while admin.query_one(waiting, &[]).unwrap().get::<_, i64>(0) == 0 {
            assert!(std::time::Instant::now() < deadline, "{name} never waited for the lock");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let (ledger, result) = writing.join().unwrap();
        assert!(result.is_err(), "{name} succeeded on an ended connection");
        assert!(ledger.is_broken(), "{name}: not known as broken after {result:?}");
        held.rollback().unwrap();
        assert!(ledger.reopen().unwrap().api_key("nobody").unwrap().is_none());
    }
}

on_both_backends! {
fn a_streaming_reader_stops_at_its_visitors_first_error_and_returns_it(store) {
    #[derive(Debug, PartialEq)]
    enum Visitor {
        Stopped(usize),
        Store(String),
    }
    impl From<hush_consent::Error> for Visitor {
        fn from(e: hush_consent::Error) -> Self {
            Visitor::Store(e.to_string())
        }
    }
    let mut ledger = store.open();
    let subject = key().pseudonymize("streamed");
    ledger.record_consent(&subject, &change(Purpose::Training, true, 100), t(100)).unwrap();
    ledger.record_consent(&subject, &change(Purpose::Training, false, 200), t(200)).unwrap();
    ledger.record_consent(&subject, &change(Purpose::Training, true, 300), t(300)).unwrap();
    let events: Vec<_> = (0..5).map(|i| event(subject, &format!("item-{i}"), 150)).collect();
    assert_eq!(ledger.ingest_events(&events, t(150)).unwrap().stored, 5);

    let mut seen = 0;
    let stopped = ledger.for_each_event(|_| {
        seen += 1;
        if seen == 2 { Err(Visitor::Stopped(seen)) } else { Ok(()) }
    });
    assert_eq!((stopped, seen), (Err(Visitor::Stopped(2)), 2), "the stream stops at the first error");
    let mut items = Vec::new();
    ledger
        .for_each_event(|e| {
            items.push(e.event.item);
            Ok::<_, Visitor>(())
        })
        .unwrap();
    assert_eq!(items, ["item-0", "item-1", "item-2", "item-3", "item-4"], "ingestion order, all of them");

    let mut decisions = 0;
    let stopped = ledger.for_each_consent_decision(Purpose::Training, |_, _| {
        decisions += 1;
        Err(Visitor::Stopped(decisions))
    });
    assert_eq!((stopped, decisions), (Err(Visitor::Stopped(1)), 1));
    let mut granted = Vec::new();
    ledger
        .for_each_consent_decision(Purpose::Training, |_, d| {
            granted.push(d.granted);
            Ok::<_, Visitor>(())
        })
        .unwrap();
    assert_eq!(granted, [true, false, true]);
    // The store is usable after a stream stopped early (no transaction left open).
    assert_eq!(ledger.stats().unwrap().events, 5);
}
}
