//! Crash safety: `kill -9` of a real server in the middle of a sustained
//! ingestion and consent load, on SQLite and on PostgreSQL. Afterwards every
//! acknowledged write is there, and no batch is there in part.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::{ok, sample_store, start_server};
use hush_consent::{Ledger, PseudonymKey, Purpose};

/// One request; `None` when the connection fails (the server is gone).
fn try_call(port: u16, method: &str, path: &str, key: &str, body: &str) -> Option<(u16, String)> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.get(9..12)?.parse().ok()?;
    Some((status, response.split("\r\n\r\n").nth(1).unwrap_or("").to_string()))
}

const EVENTS_PER_BATCH: usize = 10;
const CLIENTS: usize = 4;

/// Runs the load against a server on `store`, kills it with SIGKILL after a
/// while, and checks the store.
fn crash_under_load(dir: &Path, store: &str) {
    // Subjects that may have events stored: each client's batches are for
    // subjects of its own, granted up front.
    let mut consent = String::from("subject_id,purpose,granted,effective_at,notice_version,proof_ref\n");
    for c in 0..CLIENTS {
        for i in 0..2000 {
            consent.push_str(&format!("crash-{c}-{i},personalization,true,2025-01-01T00:00:00Z,v1,\n"));
        }
    }
    std::fs::write(dir.join("crash-consent.csv"), consent).unwrap();
    let with_store = |args: &[&str]| {
        let mut all = vec!["--db", store, "--key-file", "qs/hush.key", "-q"];
        all.extend(args);
        ok(dir, &all)
    };
    with_store(&["consent", "import", "crash-consent.csv"]);
    let key = String::from_utf8(with_store(&["keys", "create", "--name", "load", "--scopes", "admin"]).stdout)
        .unwrap()
        .trim()
        .to_string();

    let model = crate::common::release_on(dir, store);
    let mut server = start_server(dir, store, &model);
    let port = server.port;

    // Clients: event batches (one subject each) and consent grants, each
    // noting what was acknowledged and what was only attempted.
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (key, stop) = (key.clone(), stop.clone());
            std::thread::spawn(move || {
                let (mut acknowledged, mut attempted, mut granted) = (Vec::new(), Vec::new(), Vec::new());
                for i in 0..2000 {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let subject = format!("crash-{c}-{i}");
                    let events: Vec<String> = (0..EVENTS_PER_BATCH)
                        .map(|n| format!(r#"{{"subject_id":"{subject}","item_id":"sku-{n:06}","kind":"view"}}"#))
                        .collect();
                    attempted.push(subject.clone());
                    let body = format!(r#"{{"events":[{}]}}"#, events.join(","));
                    match try_call(port, "POST", "/v1/events", &key, &body) {
                        Some((200, report)) => {
                            assert!(report.contains(&format!(r#""received":{EVENTS_PER_BATCH}"#)), "{report}");
                            acknowledged.push(subject)
                        }
                        Some((status, body)) => panic!("ingestion answered {status}: {body}"),
                        None => break,
                    }
                    let fresh = format!("crash-consent-{c}-{i}");
                    let grant = r#"{"purpose":"training","granted":true,"notice_version":"v1"}"#;
                    match try_call(port, "PUT", &format!("/v1/subjects/{fresh}/consent"), &key, grant) {
                        Some((200, _)) => granted.push(fresh),
                        Some((status, body)) => panic!("consent answered {status}: {body}"),
                        None => break,
                    }
                }
                (acknowledged, attempted, granted)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    server.child.kill().unwrap(); // SIGKILL: no shutdown, no flush, no goodbye.
    server.child.wait().unwrap();
    stop.store(true, Ordering::SeqCst);
    let results: Vec<_> = clients.into_iter().map(|c| c.join().unwrap()).collect();

    let pseudonyms = PseudonymKey::from_env_or_file(&dir.join("qs/hush.key")).unwrap();
    // Relative SQLite paths are relative to `dir`, where the server ran.
    let ledger = if store.contains("://") { Ledger::connect(store) } else { Ledger::open(dir.join(store)) }.unwrap();
    let (mut acknowledged_batches, mut grants) = (0, 0);
    for (acknowledged, attempted, granted) in &results {
        for subject in attempted {
            let stored = ledger.events_of(&pseudonyms.pseudonymize(subject)).unwrap().len();
            assert!(stored == 0 || stored == EVENTS_PER_BATCH, "{subject}: a partial batch of {stored} events");
        }
        for subject in acknowledged {
            let stored = ledger.events_of(&pseudonyms.pseudonymize(subject)).unwrap().len();
            assert_eq!(stored, EVENTS_PER_BATCH, "{subject}: an acknowledged batch was lost");
        }
        for subject in granted {
            let status =
                ledger.status(&pseudonyms.pseudonymize(subject), Purpose::Training, hush_consent::Timestamp::now());
            assert!(status.unwrap().is_granted(), "{subject}: an acknowledged grant was lost");
        }
        acknowledged_batches += acknowledged.len();
        grants += granted.len();
    }
    assert!(acknowledged_batches > 10 && grants > 10, "the load ran: {acknowledged_batches} batches, {grants} grants");
}

#[test]
fn acknowledged_writes_survive_kill_9_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    sample_store(dir.path());
    crash_under_load(dir.path(), "qs/hush.db");
}

#[test]
fn acknowledged_writes_survive_kill_9_on_postgres() {
    let dir = tempfile::tempdir().unwrap();
    sample_store(dir.path());
    crash_under_load(dir.path(), &hush_testkit::postgres_url());
}
