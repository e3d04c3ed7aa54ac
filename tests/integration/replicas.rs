//! Scale-out: the real binary on a real PostgreSQL server. The store URL
//! selects the backend in every command; two `hush serve` replicas share one
//! ledger, and a withdrawal or erasure acknowledged by one is honoured by the
//! other for every request that starts afterwards.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{hush, json, ok, root, sample_store, start_server, stderr};
use serde_json::Value;

/// One HTTP/1.1 request to 127.0.0.1:`port` with the API key; (status, body).
fn call(port: u16, method: &str, path: &str, key: &str, body: Option<&str>) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, response.split("\r\n\r\n").nth(1).unwrap_or("").to_string())
}

/// The sample's consent and events in a fresh PostgreSQL store (with the
/// quickstart's key), an admin key, and the quickstart's model.
fn shared_store(dir: &Path) -> (String, String) {
    sample_store(dir);
    let url = hush_testkit::postgres_url();
    let sample = root().join("data/sample");
    let store = ["--db", url.as_str(), "--key-file", "qs/hush.key", "-q"];
    for (what, file) in [("consent", "consent.csv"), ("events", "events.csv")] {
        let path = sample.join(file);
        let mut args = store.to_vec();
        args.extend([what, "import", path.to_str().unwrap()]);
        ok(dir, &args);
    }
    let mut args = store.to_vec();
    args.extend(["keys", "create", "--name", "replicas", "--scopes", "admin"]);
    let key = String::from_utf8(ok(dir, &args).stdout).unwrap().trim().to_string();
    (url, key)
}

#[test]
fn every_command_runs_on_postgres_and_extraction_matches_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (url, _) = shared_store(d);
    // The same consent-filtered extraction from either store, streamed from PostgreSQL.
    let from_sqlite = json(&ok(
        d,
        &[
            "--db",
            "qs/hush.db",
            "--key-file",
            "qs/hush.key",
            "extract",
            "--out",
            "a.hfs",
            "--json",
            "--as-of",
            "2026-01-01T00:00:00Z",
        ],
    ));
    let erase = root().join("data/sample/erasure_requests.csv");
    ok(d, &["--db", &url, "--key-file", "qs/hush.key", "erase", "--requests", erase.to_str().unwrap(), "-q"]);
    let from_postgres = json(&ok(
        d,
        &[
            "--db",
            &url,
            "--key-file",
            "qs/hush.key",
            "extract",
            "--out",
            "b.hfs",
            "--json",
            "--as-of",
            "2026-01-01T00:00:00Z",
        ],
    ));
    for field in ["subjects", "interactions", "items", "events_kept", "rows_in"] {
        assert_eq!(from_sqlite["report"][field], from_postgres["report"][field], "{field}");
    }
    assert!(from_postgres["report"]["inputs"][0]["source"].as_str().unwrap().starts_with("event-store:postgres://"));

    // Budget ledger and consent commands on PostgreSQL.
    let store = ["--db", url.as_str(), "--key-file", "qs/hush.key"];
    let mut args = store.to_vec();
    args.extend(["budget", "set-cap", "--epsilon", "2"]);
    ok(d, &args);
    let mut args = store.to_vec();
    args.extend(["consent", "status", "--subject", "cust-0000000", "--json"]);
    let status = json(&ok(d, &args));
    assert_eq!(status[0]["purpose"], "personalization");

    // Bad store URLs and unreachable servers: a clear error, no panic.
    for (store, expected) in [
        ("mysql://db/x", "unknown scheme `mysql`"),
        ("sqlite://", "names no file"),
        ("postgres://nobody@127.0.0.1:1/none", "cannot connect to the store postgres://nobody@127.0.0.1:1/none"),
        ("postgres://u:s3cret@127.0.0.1:1/none", "postgres://u:***@127.0.0.1:1/none"),
    ] {
        let out = hush(d, &["--db", store, "keys", "list"]);
        assert!(!out.status.success());
        let message = stderr(&out);
        assert!(message.contains(expected), "{store}: {message}");
        assert!(!message.contains("s3cret") && !message.contains("panicked"), "{message}");
    }
    // The server itself refuses to start on an unreachable store, with the same message.
    let out = hush(d, &["--db", "postgres://nobody@127.0.0.1:1/none", "serve", "--model", "qs/model.hmdl"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("cannot connect to the store postgres://nobody@127.0.0.1:1/none"),
        "{}",
        stderr(&out)
    );
    let wrong_user = url.replace("postgres@", "nosuchuser@");
    let out = hush(d, &["--db", &wrong_user, "keys", "list"]);
    assert!(
        stderr(&out).contains("cannot connect to the store") && stderr(&out).contains("nosuchuser"),
        "{}",
        stderr(&out)
    );
}

/// Hammers `GET recommendations` of `subject` on `port` from several threads
/// until `stop`; returns every (start time, status).
fn hammer(
    port: u16,
    key: &str,
    subject: &str,
    stop: Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<Vec<(Instant, u16)>>> {
    (0..4)
        .map(|_| {
            let (key, subject, stop) = (key.to_string(), subject.to_string(), stop.clone());
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let started = Instant::now();
                    let (status, _) =
                        call(port, "GET", &format!("/v1/subjects/{subject}/recommendations?k=5"), &key, None);
                    seen.push((started, status));
                }
                seen
            })
        })
        .collect()
}

fn grant_with_events(port: u16, key: &str, subject: &str) {
    let grant = r#"{"purpose":"personalization","granted":true,"notice_version":"v1"}"#;
    assert_eq!(call(port, "PUT", &format!("/v1/subjects/{subject}/consent"), key, Some(grant)).0, 200);
    let events: Vec<String> = (0..20)
        .map(|i| format!(r#"{{"subject_id":"{subject}","item_id":"sku-{:06}","kind":"view"}}"#, i * 7))
        .collect();
    let body = format!(r#"{{"events":[{}]}}"#, events.join(","));
    let (status, report) = call(port, "POST", "/v1/events", key, Some(&body));
    assert_eq!(status, 200, "{report}");
    assert!(report.contains(r#""received":20"#), "{report}");
}

#[test]
fn a_withdrawal_or_erasure_acknowledged_by_one_replica_holds_on_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (url, key) = shared_store(d);
    let model = crate::common::release_on(d, &url);
    let a = start_server(d, &url, &model);
    let b = start_server(d, &url, &model);
    // Both replicas report the model version they serve, in /readyz and /metrics.
    let model_id = json(&ok(d, &["model", "inspect", &model, "--json"]))["meta"]["model_id"].clone();
    for replica in [&a, &b] {
        let (status, body) = call(replica.port, "GET", "/readyz", &key, None);
        let ready: Value = serde_json::from_str(&body).unwrap();
        assert_eq!((status, ready["status"].as_str()), (200, Some("ready")));
        assert_eq!(ready["model_id"], model_id);
        let (_, metrics) = call(replica.port, "GET", "/metrics", &key, None);
        let info = format!("hush_model_info{{model_id={model_id}}} 1");
        assert!(metrics.contains(&info), "{info} not in /metrics");
    }

    for (subject, change) in [("replica-withdraws", "withdraw"), ("replica-erased", "erase")] {
        grant_with_events(a.port, &key, subject);
        // Written on A, visible on B at once: the store is shared, and neither replica caches consent.
        assert_eq!(call(b.port, "GET", &format!("/v1/subjects/{subject}/recommendations?k=5"), &key, None).0, 200);

        let stop = Arc::new(AtomicBool::new(false));
        let workers = hammer(b.port, &key, subject, stop.clone());
        std::thread::sleep(Duration::from_millis(300));
        let (status, _) = match change {
            "withdraw" => call(
                a.port,
                "PUT",
                &format!("/v1/subjects/{subject}/consent"),
                &key,
                Some(r#"{"purpose":"personalization","granted":false,"notice_version":"v1"}"#),
            ),
            _ => call(a.port, "DELETE", &format!("/v1/subjects/{subject}"), &key, None),
        };
        let acknowledged = Instant::now();
        assert_eq!(status, 200);
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::SeqCst);
        let seen: Vec<(Instant, u16)> = workers.into_iter().flat_map(|w| w.join().unwrap()).collect();
        let before = seen.iter().filter(|(t, s)| *t < acknowledged && *s == 200).count();
        let after: Vec<u16> = seen.iter().filter(|(t, _)| *t > acknowledged).map(|(_, s)| *s).collect();
        assert!(before > 0, "{change}: B served the subject before the change");
        assert!(!after.is_empty(), "{change}: requests were sent after the acknowledgement");
        assert!(
            after.iter().all(|&s| s == 403),
            "{change}: B scored the subject after A acknowledged: {:?}",
            after.iter().filter(|&&s| s != 403).collect::<Vec<_>>()
        );
    }
    // The erased subject is gone for both replicas.
    assert_eq!(call(b.port, "GET", "/v1/subjects/replica-erased/export", &key, None).0, 404);
}

/// A replica whose store connections all end (a PostgreSQL restart, killed
/// backends) connects again: each blocking connection (the writer, the read
/// pool's 8) fails the one call that meets it closed, and is replaced; a
/// recommendation read is retried on a reopened connection, so it does not
/// fail at all. Privacy holds across it: a withdrawal through the reopened
/// writer is honoured at once.
#[test]
fn a_replica_reconnects_when_the_store_ends_its_connections() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (url, key) = shared_store(d);
    let model = crate::common::release_on(d, &url);
    let a = start_server(d, &url, &model);
    grant_with_events(a.port, &key, "reconnected");
    let recommend = "/v1/subjects/reconnected/recommendations?k=5";
    assert_eq!(call(a.port, "GET", recommend, &key, None).0, 200);

    assert!(hush_testkit::end_connections(&url) >= 2, "the replica's connections were open");
    let consent = |granted: bool| {
        let body = format!(r#"{{"purpose":"personalization","granted":{granted},"notice_version":"v1"}}"#);
        call(a.port, "PUT", "/v1/subjects/reconnected/consent", &key, Some(&body)).0
    };
    // Each call fails at most once per closed connection it meets: 9 of them.
    let answers: Vec<u16> = (0..12).map(|_| consent(true)).collect();
    assert!(answers.iter().all(|&s| s == 200 || s == 500), "{answers:?}");
    assert_eq!(answers[9..], [200, 200, 200], "the connections were not replaced: {answers:?}");
    for _ in 0..5 {
        assert_eq!(call(a.port, "GET", recommend, &key, None).0, 200, "the recommendation read did not reconnect");
    }
    assert_eq!(consent(false), 200);
    assert_eq!(call(a.port, "GET", recommend, &key, None).0, 403);
}
