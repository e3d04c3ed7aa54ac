//! The API over a real server on 127.0.0.1 with a real HTTP client.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use hush_consent::{Ledger, PseudonymKey};
use hush_features::{FeatureMeta, FeatureSet, Feedback, Interaction, SubjectKey};
use hush_mf::{train, ModelPurpose, Privacy, TrainParams};
use hush_privacy::{Budget, NoiseSource};
use hush_serve::{AppState, ServeConfig, ServeError};
use serde_json::{json, Value};

const KEY: [u8; 32] = [9; 32];

/// What makes a test model unfit for release, if anything.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Unfit {
    No,
    ResearchData,
    NonPrivate,
    SeededNoise,
    SeededSampling,
    NoCatalogue,
    Evaluation,
}

/// A small releasable implicit model over items sku-0..sku-39 in two taste clusters.
fn model(research_only: bool) -> hush_mf::Model {
    model_with(if research_only { Unfit::ResearchData } else { Unfit::No })
}

fn model_with(unfit: Unfit) -> hush_mf::Model {
    model_weighing(unfit, hush_features::EventWeighting::default())
}

/// As [`model_with`], trained on events weighed by `weighting`.
fn model_weighing(unfit: Unfit, weighting: hush_features::EventWeighting) -> hush_mf::Model {
    let rows: Vec<Vec<Interaction>> = (0..200u32)
        .map(|s| {
            let base = if s % 2 == 0 { 0 } else { 20 };
            (0..6).map(|k| Interaction { item: base + (s * 7 + k * 3) % 20, value: 1.0, time: 0 }).collect()
        })
        .collect();
    let meta = FeatureMeta {
        research_only: unfit == Unfit::ResearchData,
        sampling_seeded: unfit == Unfit::SeededSampling,
        catalogue: (unfit != Unfit::NoCatalogue).then(|| "test catalogue".to_string()),
        weighting,
        ..FeatureMeta::assembled(Feedback::Implicit)
    };
    let mut set = FeatureSet::from_subject_rows(meta, (0..40).map(|i| format!("sku-{i}")).collect(), &rows);
    // Dedup items within a row (the modulo above can repeat).
    // Keys as extraction would draw them: from a fresh secret, never from positions.
    let keys = (0..set.n_subjects()).map(|_| SubjectKey(rand::random::<u128>())).collect();
    set = FeatureSet::from_keyed_rows(
        set.meta.clone(),
        set.items.clone(),
        &(0..set.n_subjects())
            .map(|s| {
                let mut seen = std::collections::BTreeSet::new();
                set.subject_interactions(s).filter(|i| seen.insert(i.item)).collect()
            })
            .collect::<Vec<_>>(),
        keys,
    );
    // The bounds fit the data (6 interactions of value 1 per subject): with the
    // defaults' k = 100 and max value 20, the sensitivity is 56× larger and at
    // this size noise erases a few items' factors at random, even at ε = 500.
    let params = TrainParams {
        rank: 4,
        iterations: 4,
        lambda: 1.0,
        alpha: 2.0,
        max_items_per_subject: 6,
        max_value: 1.0,
        ..TrainParams::default()
    };
    let noise = if unfit == Unfit::SeededNoise { NoiseSource::seeded(1) } else { NoiseSource::from_os_entropy() };
    // A loose budget keeps the two taste clusters apart for the API tests.
    let privacy = match unfit {
        Unfit::NonPrivate => Privacy::NonPrivate,
        _ => Privacy::Dp { budget: Budget::new(500.0, 1e-6).unwrap(), noise: Box::new(noise), rules: None },
    };
    let mut model = train(&set, &params, privacy, &mut |_| {}).unwrap();
    if unfit == Unfit::Evaluation {
        model.set_purpose(ModelPurpose::Evaluation);
    }
    model
}

/// Releases `model` as this store would: a committed release entry in the
/// budget ledger, then the store's seal (see `hush train`).
fn release(model: &mut hush_mf::Model, ledger: &mut Ledger) {
    let run_key = format!("release-{}", model.meta.model_id);
    let guarantee = match &model.meta.privacy {
        hush_mf::PrivacyGuarantee::Dp { epsilon, delta, rho, .. } => {
            Some(hush_consent::RunGuarantee { epsilon: *epsilon, delta: *delta, rho: *rho })
        }
        hush_mf::PrivacyGuarantee::NonPrivate => None,
    };
    let request = hush_consent::BudgetRequest {
        run_key: run_key.clone(),
        dataset: "default".into(),
        purpose: hush_consent::BudgetPurpose::Release,
        guarantee,
        snapshot_at: hush_consent::Timestamp::from_unix_millis(model.meta.data.snapshot_at_ms),
    };
    ledger.reserve_budget(&request, hush_consent::Timestamp::now()).unwrap();
    ledger.commit_budget(&run_key, &model.meta.model_id).unwrap();
    model.seal(&PseudonymKey::from_bytes(KEY).derive(hush_mf::SIGNING_PURPOSE));
}

struct Server {
    base: String,
    db: PathBuf,
    model_path: PathBuf,
    client: reqwest::Client,
    /// One key per scope, by scope; the client sends the admin key.
    keys: std::collections::HashMap<&'static str, String>,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start() -> Server {
        Server::start_with(ServeConfig::default()).await
    }

    async fn start_with(config: ServeConfig) -> Server {
        Server::start_on(model(false), config, false).await
    }

    /// A server of `model` (released by the server's store first).
    async fn serving(released: hush_mf::Model, config: ServeConfig) -> Server {
        Server::start_on(released, config, false).await
    }

    /// A server on a fresh database of the throwaway PostgreSQL server.
    async fn start_on_postgres(config: ServeConfig) -> Server {
        Server::start_on(model(false), config, true).await
    }

    /// A server of `released` on a fresh PostgreSQL database, or on a fresh SQLite file.
    async fn start_on(released: hush_mf::Model, config: ServeConfig, on_postgres: bool) -> Server {
        Server::start_catalogued(released, config, on_postgres, Vec::new()).await
    }

    /// As [`Server::start_on`], with `catalogue` imported into the store before the server starts.
    async fn start_catalogued(
        released: hush_mf::Model,
        config: ServeConfig,
        on_postgres: bool,
        catalogue: Vec<hush_consent::CatalogueItem>,
    ) -> Server {
        captured_logs();
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("hush.db");
        let model_path = dir.path().join("model.hmdl");
        // The synchronous PostgreSQL client must not block a thread that drives
        // this test's runtime (as `hush serve` sets up before starting its own).
        let (state, keys) = {
            let (db, model_path) = (db.clone(), model_path.clone());
            std::thread::spawn(move || Server::state(released, config, on_postgres, &db, &model_path, &catalogue))
                .join()
                .unwrap()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(hush_serve::serve(listener, Arc::new(state), std::future::pending()));
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("authorization", format!("Bearer {}", keys["admin"]).parse().unwrap());
        let client = reqwest::Client::builder().default_headers(headers).build().unwrap();
        Server { base, db, model_path, client, keys, _dir: dir }
    }

    /// The served state over a fresh store with one key per scope, and the keys.
    fn state(
        mut released: hush_mf::Model,
        config: ServeConfig,
        on_postgres: bool,
        db: &Path,
        model_path: &Path,
        catalogue: &[hush_consent::CatalogueItem],
    ) -> (AppState, std::collections::HashMap<&'static str, String>) {
        let mut ledger = match on_postgres {
            true => Ledger::connect(&hush_testkit::postgres_url()).unwrap(),
            false => Ledger::open(db).unwrap(),
        };
        let now = hush_consent::Timestamp::now();
        let mut keys = std::collections::HashMap::new();
        for scope in ["admin", "recommend", "ingest", "privacy"] {
            let (key, _) = hush_consent::keys::create(&mut ledger, scope, &[scope.to_string()], now).unwrap();
            keys.insert(scope, key);
        }
        if !catalogue.is_empty() {
            ledger.upsert_items(catalogue, now).unwrap();
        }
        release(&mut released, &mut ledger);
        released.save(model_path).unwrap();
        let loaded = hush_mf::Model::load(model_path).unwrap();
        let state = AppState::new(loaded, ledger, PseudonymKey::from_bytes(KEY), config)
            .unwrap()
            .with_model_path(model_path.to_path_buf());
        (state, keys)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.client.get(format!("{}{path}", self.base)).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let r = request.send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    /// GET with the key of one scope instead of the admin key.
    async fn get_as(&self, scope: &str, path: &str) -> (u16, Value) {
        let r = reqwest::Client::new()
            .get(format!("{}{path}", self.base))
            .header("authorization", format!("Bearer {}", self.keys[scope]))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn consent(&self, subject: &str, purpose: &str, granted: bool) -> (u16, Value) {
        let body = json!({ "purpose": purpose, "granted": granted, "notice_version": "v1", "proof_ref": "banner-1" });
        self.send(reqwest::Method::PUT, &format!("/v1/subjects/{subject}/consent"), Some(body)).await
    }

    async fn events(&self, subject: &str, items: &[&str]) -> (u16, Value) {
        let events: Vec<Value> =
            items.iter().map(|i| json!({ "subject_id": subject, "item_id": i, "kind": "purchase" })).collect();
        self.send(reqwest::Method::POST, "/v1/events", Some(json!({ "events": events }))).await
    }
}

fn database_files(db: &Path) -> Vec<Vec<u8>> {
    ["", "-wal", "-shm"].iter().filter_map(|s| std::fs::read(format!("{}{s}", db.display())).ok()).collect()
}

#[tokio::test]
async fn the_consent_gate_refuses_grants_and_withdraws() {
    let server = Server::start().await;
    let (status, body) = server.get("/v1/subjects/ada/recommendations?k=5").await;
    assert_eq!(status, 403);
    assert_eq!(body["error"], "consent_required");
    assert_eq!(body["purpose"], "personalization");

    assert_eq!(server.consent("ada", "personalization", true).await.0, 200);
    let (status, report) = server.events("ada", &["sku-0", "sku-2", "sku-4"]).await;
    assert_eq!((status, report["received"].as_u64()), (200, Some(3)));
    let (_, export) = server.get("/v1/subjects/ada/export").await;
    assert_eq!(export["events"].as_array().map(Vec::len), Some(3), "{export}");
    let (status, body) = server.get("/v1/subjects/ada/recommendations?k=5&exclude=sku-6").await;
    assert_eq!(status, 200, "{body}");
    let items: Vec<&str> = body["items"].as_array().unwrap().iter().map(|i| i["item"].as_str().unwrap()).collect();
    assert_eq!(items.len(), 5);
    assert!(items.iter().all(|i| !["sku-0", "sku-2", "sku-4", "sku-6"].contains(i)), "{items:?}");
    assert!(body["personalized"].as_bool().unwrap());
    assert!(body["items"][0]["because"][0]["text"].as_str().unwrap().starts_with("because you bought sku-"), "{body}");

    let gpc = server
        .client
        .get(format!("{}/v1/subjects/ada/recommendations", server.base))
        .header("Sec-GPC", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(gpc.status().as_u16(), 403);
    assert_eq!(gpc.json::<Value>().await.unwrap()["reason"], "sec_gpc");

    assert_eq!(server.consent("ada", "personalization", false).await.0, 200);
    let (status, body) = server.get("/v1/subjects/ada/recommendations").await;
    assert_eq!((status, body["reason"].as_str()), (403, Some("withdrawn")));

    // The non-personalized fallback needs no consent and comes from the model's popularity.
    let (status, body) = server.get("/v1/recommendations/popular?k=3").await;
    assert_eq!((status, body["items"].as_array().unwrap().len()), (200, 3));
}

/// The issue's reproductions: a backdated withdrawal, and a future-dated grant
/// racing a withdrawal. The latest decision wins; the far future is refused.
#[tokio::test]
async fn a_withdrawal_is_never_undone_by_a_clock() {
    let server = Server::start().await;
    let put = |subject: &'static str, granted: bool, effective_at: String| {
        let body = json!({ "purpose": "personalization", "granted": granted, "notice_version": "v1", "effective_at": effective_at });
        let server = &server;
        async move { server.send(reqwest::Method::PUT, &format!("/v1/subjects/{subject}/consent"), Some(body)).await }
    };
    let now = hush_consent::Timestamp::now().as_unix_millis();
    let at = |seconds: i64| hush_consent::Timestamp::from_unix_millis(now + seconds * 1000).to_rfc3339();

    assert_eq!(put("ada", true, at(0)).await.0, 200);
    assert_eq!(put("ada", false, at(-86_400)).await.0, 200);
    let (status, body) = server.get("/v1/subjects/ada/recommendations").await;
    assert_eq!((status, body["reason"].as_str()), (403, Some("withdrawn")), "{body}");
    let (_, consent) = server.get("/v1/subjects/ada/consent").await;
    assert_eq!(consent["status"][0]["state"], "withdrawn", "{consent}");

    assert_eq!(put("bob", true, at(0)).await.0, 200);
    assert_eq!(put("bob", true, at(2)).await.0, 200);
    assert_eq!(put("bob", false, at(0)).await.0, 200);
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let (status, body) = server.get("/v1/subjects/bob/recommendations").await;
    assert_eq!((status, body["reason"].as_str()), (403, Some("withdrawn")), "{body}");

    for effective_at in [at(3600), "9999-12-31T23:59:59Z".to_string(), "0001-01-01T00:00:00Z".to_string()] {
        let (status, body) = put("cy", true, effective_at.clone()).await;
        assert_eq!((status, body["error"].as_str()), (400, Some("invalid_field")), "{effective_at}: {body}");
        assert!(body["message"].as_str().unwrap().contains("effective_at"), "{body}");
    }
    let (_, consent) = server.get("/v1/subjects/cy/consent").await;
    assert_eq!(consent["history"].as_array().map(Vec::len), Some(0), "{consent}");
}

/// Many concurrent requests while consent is withdrawn (or the subject erased):
/// no request sent after the acknowledgement is ever scored.
async fn race(erase: bool) {
    let server = Arc::new(Server::start().await);
    server.consent("bo", "personalization", true).await;
    server.events("bo", &["sku-1", "sku-3"]).await;
    let started = Instant::now();
    let acked = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..16 {
        let server = server.clone();
        let acked = acked.clone();
        workers.push(tokio::spawn(async move {
            // Keep firing until the acknowledgement, then 10 more each (bounded either way).
            let mut seen = Vec::new();
            let mut after_ack = 0;
            for _ in 0..5_000 {
                if acked.load(std::sync::atomic::Ordering::SeqCst) {
                    after_ack += 1;
                    if after_ack > 10 {
                        break;
                    }
                }
                let sent = started.elapsed();
                let (status, _) = server.get("/v1/subjects/bo/recommendations?k=3").await;
                seen.push((sent, status));
            }
            seen
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    let (status, _) = if erase {
        server.send(reqwest::Method::DELETE, "/v1/subjects/bo", None).await
    } else {
        server.consent("bo", "personalization", false).await
    };
    let acknowledged = started.elapsed();
    acked.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(status, 200);
    let mut after = 0;
    let mut scored = 0;
    for worker in workers {
        for (sent, status) in worker.await.unwrap() {
            scored += usize::from(status == 200);
            if sent > acknowledged {
                after += 1;
                assert_ne!(status, 200, "a request sent after the acknowledgement was scored");
            }
        }
    }
    assert!(after > 0, "the race must have requests on both sides of the acknowledgement");
    assert!(scored > 0, "requests before the acknowledgement were scored: the race was real");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_after_a_withdrawal_is_scored() {
    race(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_after_an_erasure_is_scored() {
    race(true).await;
}

#[tokio::test]
async fn erasure_leaves_nothing_and_refuses_new_events() {
    let server = Server::start().await;
    let raw = "erase-me-8c1f@example.org";
    server.consent(raw, "personalization", true).await;
    server.events(raw, &["sku-1", "sku-2"]).await;
    let (status, export) = server.get(&format!("/v1/subjects/{raw}/export")).await;
    assert_eq!((status, export["events"].as_array().unwrap().len()), (200, 2));
    let pseudonym = export["subject"].as_str().unwrap().to_string();

    let (status, receipt) = server.send(reqwest::Method::DELETE, &format!("/v1/subjects/{raw}"), None).await;
    assert_eq!(status, 200);
    assert_eq!(receipt["receipt"]["events_deleted"], 2);
    let promise = receipt["model"].as_str().unwrap();
    assert!(
        promise.contains("user-level (500.000, 1e-6)-DP") && promise.contains("bounded by that guarantee"),
        "{promise}"
    );
    let (status, body) = server.get(&format!("/v1/subjects/{raw}/export")).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
    let (status, report) = server.events(raw, &["sku-3"]).await;
    // The answer does not tell an erased subject from a stored one ...
    assert_eq!((status, report), (200, json!({ "received": 1, "duplicates": 0 })));
    // ... nothing was stored, and the keyless metrics do not tell either.
    let (status, _) = server.get(&format!("/v1/subjects/{raw}/export")).await;
    assert_eq!(status, 404);
    let metrics = server.client.get(format!("{}/metrics", server.base)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("hush_events_received_total "), "{metrics}");
    assert!(!metrics.contains("suppressed") && !metrics.contains("no_consent"), "{metrics}");
    let hex = pseudonym.as_bytes().to_vec();
    let bytes = hex::decode(&pseudonym).unwrap();
    for file in database_files(&server.db) {
        for needle in [raw.as_bytes(), &hex, &bytes] {
            assert!(!file.windows(needle.len()).any(|w| w == needle), "erased subject bytes remain in the database");
        }
    }
}

#[tokio::test]
async fn bad_input_gets_a_precise_error_and_stores_nothing() {
    let server = Server::start().await;
    let put = |body: &'static str| {
        server
            .client
            .put(format!("{}/v1/subjects/cy/consent", server.base))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let r = put("{not json").await.unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_json");
    let (status, body) = server.consent("cy", "marketing", true).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_field")));
    assert!(body["message"].as_str().unwrap().contains("unknown purpose `marketing`"));
    let (status, body) = server.get("/v1/recommendations/popular?k=0").await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_k")));
    let (status, _) = server.get("/v1/recommendations/popular?k=101").await;
    assert_eq!(status, 400);
    let (status, body) = server.get("/v1/subjects/nobody/export").await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
    let huge = format!(
        "{{\"events\":[{}]}}",
        vec![r#"{"subject_id":"cy","item_id":"sku-1","kind":"view"}"#; 40_000].join(",")
    );
    let r = server
        .client
        .post(format!("{}/v1/events", server.base))
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    // A batch with one bad event stores none of it.
    server.consent("cy", "personalization", true).await;
    let body = json!({ "events": [
        { "subject_id": "cy", "item_id": "sku-1", "kind": "view" },
        { "subject_id": "cy", "item_id": "sku-2", "kind": "Not A Kind" },
    ]});
    let (status, err) = server.send(reqwest::Method::POST, "/v1/events", Some(body)).await;
    assert_eq!((status, err["error"].as_str()), (400, Some("invalid_event")));
    assert!(err["message"].as_str().unwrap().starts_with("events[1]: invalid event kind"));
    let body = json!({ "events": [{ "subject_id": "cy", "item_id": "", "kind": "view" }] });
    let (status, err) = server.send(reqwest::Method::POST, "/v1/events", Some(body)).await;
    assert_eq!((status, err["error"].as_str()), (400, Some("invalid_event")));
    assert_eq!(
        err["message"],
        "events[0]: invalid item_id: expected 1 to 128 bytes without control characters, found 0 bytes"
    );
    let (_, export) = server.get("/v1/subjects/cy/export").await;
    assert_eq!(export["events"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn model_card_health_and_research_models_refused() {
    let server = Server::start().await;
    assert_eq!(server.get("/healthz").await.0, 200);
    let (status, ready) = server.get("/readyz").await;
    assert_eq!((status, ready["status"].as_str()), (200, Some("ready")));
    let (status, card) = server.get("/v1/model").await;
    assert_eq!(status, 200);
    assert!(card["privacy"]["dp"]["epsilon"].as_f64().unwrap() <= 500.0, "{card}");
    assert_eq!(card["purpose"], "release");
    for private in ["subjects", "interactions", "evaluation", "train_seconds"] {
        assert!(card.get(private).is_none() && card["data"].get(private).is_none(), "{private} is served: {card}");
    }
    assert_eq!(card["model_id"], ready["model_id"]);
    let markdown = card["card_markdown"].as_str().unwrap();
    assert!(markdown.starts_with(&format!("# Model card: hush model `{}`", card["model_id"].as_str().unwrap())));
    assert!(markdown.contains("Personalized recommendations in a storefront"), "{markdown}");
    assert!(
        !markdown.contains("Customers in training") && !markdown.contains("Recall@"),
        "no exact private figures: {markdown}"
    );

    // The same card as Markdown or HTML, by Accept header or ?format=.
    let url = format!("{}/v1/model", server.base);
    for (accept, query, content_type, marker) in [
        ("text/markdown", "", "text/markdown; charset=utf-8", "## Privacy guarantee"),
        ("text/html,application/xhtml+xml", "", "text/html; charset=utf-8", "<h2>Privacy guarantee</h2>"),
        ("application/json", "?format=md", "text/markdown; charset=utf-8", "## Known limitations"),
    ] {
        let r = server.client.get(format!("{url}{query}")).header("accept", accept).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(r.headers()["content-type"], content_type);
        let body = r.text().await.unwrap();
        assert!(body.contains(marker), "{accept} {query}: {body}");
    }
    let (status, err) = server.get("/v1/model?format=pdf").await;
    assert_eq!((status, err["error"].as_str()), (400, Some("invalid_format")));

    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path().join("h.db")).unwrap();
    // Every model that is not a release is refused, each with its reason.
    for (unfit, reason) in [
        (Unfit::ResearchData, "research data"),
        (Unfit::NonPrivate, "non-private twin"),
        (Unfit::SeededNoise, "noise is seeded"),
        (Unfit::SeededSampling, "sampling is seeded"),
        (Unfit::NoCatalogue, "not a catalogue"),
        (Unfit::Evaluation, "trained for evaluation"),
    ] {
        let ledger = ledger.reopen().unwrap();
        let refused = AppState::new(model_with(unfit), ledger, PseudonymKey::from_bytes(KEY), ServeConfig::default());
        match refused {
            Err(e @ ServeError::NotReleasable { .. }) => assert!(e.to_string().contains(reason), "{unfit:?}: {e}"),
            Err(e) => panic!("{unfit:?}: refused for the wrong reason: {e}"),
            Ok(_) => panic!("{unfit:?}: a model that is not a release was accepted"),
        }
    }
}

#[tokio::test]
async fn api_keys_are_required_and_scoped() {
    let server = Server::start().await;
    let bare = reqwest::Client::new();
    let url = format!("{}/v1/recommendations/popular", server.base);
    let r = bare.get(&url).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "missing_api_key");
    let r = bare.get(&url).header("x-api-key", "hush_000000000000_nope").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_api_key");
    let r = bare.get(&url).header("x-api-key", &server.keys["recommend"]).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // A recommend-only key cannot change consent, and nothing is stored.
    let r = bare
        .put(format!("{}/v1/subjects/dee/consent", server.base))
        .header("authorization", format!("Bearer {}", server.keys["recommend"]))
        .json(&json!({ "purpose": "personalization", "granted": true, "notice_version": "v1" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let body = r.json::<Value>().await.unwrap();
    assert_eq!((body["error"].as_str(), body["scope"].as_str()), (Some("insufficient_scope"), Some("privacy")));
    let (status, _) = server.get("/v1/subjects/dee/export").await;
    assert_eq!(status, 404, "the refused consent change stored nothing");
    // Health needs no key.
    assert_eq!(bare.get(format!("{}/healthz", server.base)).send().await.unwrap().status().as_u16(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_swap_under_load_and_bad_files_are_refused() {
    let server = Arc::new(Server::start().await);
    let (_, before) = server.get("/v1/model").await;
    let mut load = Vec::new();
    for _ in 0..8 {
        let server = server.clone();
        load.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            for _ in 0..30 {
                statuses.push(server.get("/v1/recommendations/popular?k=5").await.0);
            }
            statuses
        }));
    }
    // Models that are not this store's recorded releases are refused, each
    // with its reason, and the current model keeps serving.
    let mut ledger = Ledger::open(&server.db).unwrap();
    let mut other = model(false);
    let reload = || async {
        let (status, body) = server.send(reqwest::Method::POST, "/v1/admin/model/reload", None).await;
        (status, body["message"].as_str().unwrap_or_default().to_string())
    };
    other.save(&server.model_path).unwrap();
    let (status, message) = reload().await;
    assert!(status == 422 && message.contains("not signed by any store"), "{status} {message}");
    let mut foreign = other.clone();
    foreign.seal(&PseudonymKey::from_bytes([1; 32]).derive(hush_mf::SIGNING_PURPOSE));
    foreign.save(&server.model_path).unwrap();
    let (status, message) = reload().await;
    assert!(status == 422 && message.contains("released by another store"), "{status} {message}");
    let mut unrecorded = other.clone();
    unrecorded.seal(&PseudonymKey::from_bytes(KEY).derive(hush_mf::SIGNING_PURPOSE));
    unrecorded.save(&server.model_path).unwrap();
    let (status, message) = reload().await;
    assert!(status == 422 && message.contains("no committed release"), "{status} {message}");
    // A released model altered afterwards (say, an item's popularity raised) is
    // refused. (Not reversed: the fixture's counts can all be equal.)
    release(&mut other, &mut ledger);
    let mut altered = other.clone();
    altered.popularity[0] += 1.0;
    assert_ne!(altered.popularity, other.popularity);
    altered.save(&server.model_path).unwrap();
    let (status, message) = reload().await;
    assert!(status == 422 && message.contains("altered after release"), "{status} {message}");
    // The store's own recorded release replaces the file; the admin endpoint swaps it in.
    other.save(&server.model_path).unwrap();
    let (status, swapped) = server.send(reqwest::Method::POST, "/v1/admin/model/reload", None).await;
    assert_eq!(status, 200, "{swapped}");
    for worker in load {
        assert!(worker.await.unwrap().iter().all(|&s| s == 200), "no request may fail during a swap");
    }
    let (_, after) = server.get("/v1/model").await;
    assert_ne!(before["model_id"], after["model_id"]);
    assert_eq!(after["model_id"], swapped["model_id"]);

    std::fs::write(&server.model_path, b"HUSHMODL garbage").unwrap();
    let (status, refused) = server.send(reqwest::Method::POST, "/v1/admin/model/reload", None).await;
    assert_eq!((status, refused["error"].as_str()), (422, Some("model_refused")));
    let (_, still) = server.get("/v1/model").await;
    assert_eq!(still["model_id"], after["model_id"], "the old model keeps serving");
    // Only admin keys may swap models.
    let r = reqwest::Client::new()
        .post(format!("{}/v1/admin/model/reload", server.base))
        .header("x-api-key", &server.keys["ingest"])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
}

#[tokio::test]
async fn metrics_count_routes_refusals_and_the_model() {
    let server = Server::start().await;
    server.get("/v1/subjects/eve-0451/recommendations").await;
    server.get("/v1/recommendations/popular?k=2").await;
    let text = reqwest::get(format!("{}/metrics", server.base)).await.unwrap().text().await.unwrap();
    assert!(
        text.contains(
            r#"hush_http_requests_total{method="GET",route="/v1/subjects/{id}/recommendations",status="403"} 1"#
        ),
        "{text}"
    );
    assert!(text.contains(r#"route="/v1/recommendations/popular",status="200"} 1"#), "{text}");
    assert!(text.contains("hush_consent_refusals_total 1"), "{text}");
    assert!(text.contains("hush_http_request_duration_seconds_bucket"), "{text}");
    let (_, card) = server.get("/v1/model").await;
    assert!(
        text.contains(&format!(r#"hush_model_info{{model_id="{}"}} 1"#, card["model_id"].as_str().unwrap())),
        "{text}"
    );
    assert!(!text.contains("eve-0451"), "no subject id in metric labels");
    // The store's read pool: its size and how much of it is in use.
    assert!(text.contains(r#"hush_store_pool_connections{state="size"} 8"#), "{text}");
    assert!(text.contains(r#"hush_store_pool_connections{state="in_use"} 0"#), "{text}");
}

/// The recommendation route reads the key, the consent and the events in
/// one statement on PostgreSQL: every answer of the gate is the same as on
/// SQLite, in the same order (a bad key first, then the request, then consent).
#[tokio::test]
async fn the_recommendation_gate_answers_alike_on_both_backends() {
    let config = ServeConfig { store_pool_size: 3, store_reader_connections: 2, ..ServeConfig::default() };
    let mut answers = Vec::new();
    for server in [Server::start_with(config.clone()).await, Server::start_on_postgres(config.clone()).await] {
        let mut seen = Vec::new();
        let get = |path: &'static str, key: Option<String>, gpc: bool| {
            let mut request = reqwest::Client::new().get(format!("{}{path}", server.base));
            if let Some(key) = key {
                request = request.header("authorization", format!("Bearer {key}"));
            }
            if gpc {
                request = request.header("sec-gpc", "1");
            }
            async move {
                let response = request.send().await.unwrap();
                let status = response.status().as_u16();
                let body: Value = response.json().await.unwrap_or(Value::Null);
                (
                    status,
                    body["error"].as_str().unwrap_or("").to_string(),
                    body["reason"].as_str().unwrap_or("").to_string(),
                )
            }
        };
        let recommend = Some(server.keys["recommend"].clone());
        let privacy = Some(server.keys["privacy"].clone());
        let wrong = Some(format!("{}0", server.keys["recommend"]));
        let path = "/v1/subjects/ana/recommendations?k=3";
        seen.push(get(path, None, false).await);
        seen.push(get(path, wrong.clone(), false).await);
        seen.push(get("/v1/subjects/ana/recommendations?k=0", wrong.clone(), false).await);
        seen.push(get(path, wrong.clone(), true).await);
        seen.push(get(path, privacy.clone(), false).await);
        seen.push(get("/v1/subjects/ana/recommendations?k=0", recommend.clone(), false).await);
        seen.push(get(path, recommend.clone(), true).await);
        seen.push(get(path, recommend.clone(), false).await);
        assert_eq!(server.consent("ana", "personalization", true).await.0, 200);
        assert_eq!(server.events("ana", &["sku-0", "sku-2"]).await.0, 200);
        let (status, body) = server.get(path).await;
        assert_eq!(status, 200, "{body}");
        assert!(body["personalized"].as_bool().unwrap(), "{body}");
        let items: Vec<&str> = body["items"].as_array().unwrap().iter().map(|i| i["item"].as_str().unwrap()).collect();
        assert!(!items.contains(&"sku-0") && !items.contains(&"sku-2"), "{items:?}");
        seen.push(get(path, recommend.clone(), false).await);
        assert_eq!(server.consent("ana", "personalization", false).await.0, 200);
        seen.push(get(path, recommend.clone(), false).await);
        assert_eq!(server.send(reqwest::Method::DELETE, "/v1/subjects/ana", None).await.0, 200);
        seen.push(get(path, recommend.clone(), false).await);
        let text = reqwest::get(format!("{}/metrics", server.base)).await.unwrap().text().await.unwrap();
        assert!(text.contains(r#"hush_store_pool_connections{state="size"} 3"#), "{text}");
        // On PostgreSQL the gate is read through the asynchronous reader.
        let on_postgres = !answers.is_empty();
        assert_eq!(text.contains(r#"hush_store_reader_connections{state="size"} 2"#), on_postgres, "{text}");
        assert_eq!(text.contains(r#"hush_store_reader_connections{state="in_flight"} 0"#), on_postgres, "{text}");
        answers.push(seen);
    }
    let expected: Vec<(u16, &str, &str)> = vec![
        (401, "missing_api_key", ""),
        (401, "invalid_api_key", ""),
        (401, "invalid_api_key", ""),
        (401, "invalid_api_key", ""),
        (403, "insufficient_scope", ""),
        (400, "invalid_k", ""),
        (403, "consent_required", "sec_gpc"),
        (403, "consent_required", "not_granted"),
        (200, "", ""),
        (403, "consent_required", "withdrawn"),
        (403, "consent_required", "not_granted"),
    ];
    for seen in &answers {
        let seen: Vec<(u16, &str, &str)> = seen.iter().map(|(s, e, r)| (*s, e.as_str(), r.as_str())).collect();
        assert_eq!(seen, expected);
    }
}

/// The log sink of this test binary: every test's server logs here, so the
/// check below covers the whole suite. (A thread-local subscriber would miss
/// callsites that tracing cached as uninteresting while other tests ran.)
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

fn captured_logs() -> &'static Captured {
    static LOGS: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(logs.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber of this test binary");
        logs
    })
}

/// Every log line of a session of requests, at debug level: no raw subject id.
#[tokio::test]
async fn logs_carry_no_raw_subject_id() {
    let logs = captured_logs();
    let server = Server::start().await;
    let raw = "frida.k@example.org";
    server.get(&format!("/v1/subjects/{raw}/recommendations")).await;
    server.consent(raw, "personalization", true).await;
    server.events(raw, &["sku-1", "sku-5"]).await;
    server.get(&format!("/v1/subjects/{raw}/recommendations?k=3")).await;
    server.get(&format!("/v1/subjects/{raw}/export")).await;
    server.send(reqwest::Method::DELETE, &format!("/v1/subjects/{raw}"), None).await;
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(text.contains("route=/v1/subjects/{id}/recommendations"), "the request spans were captured:\n{text}");
    assert!(text.contains("erased subject"), "{text}");
    for id in [raw, "frida", "erase-me-8c1f@example.org"] {
        assert!(!text.contains(id), "a raw subject id reached the logs: {id}");
    }
    let pseudonym = PseudonymKey::from_bytes(KEY).pseudonymize(raw);
    assert!(text.contains(&pseudonym.short()), "spans name the subject by pseudonym prefix");
    assert!(!text.contains(&pseudonym.to_hex()), "never the full pseudonym");
}

#[tokio::test]
async fn the_openapi_document_lists_every_route_and_every_route_answers() {
    let server = Server::start().await;
    let (status, doc) = server.get("/openapi.json").await;
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    let mut operations = Vec::new();
    for (path, methods) in paths {
        for (method, op) in methods.as_object().unwrap() {
            assert!(op["summary"].is_string() && op["responses"]["200"].is_object(), "{method} {path}");
            operations.push((method.clone(), path.clone()));
        }
    }
    let expected = [
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/metrics"),
        ("get", "/openapi.json"),
        ("get", "/v1/model"),
        ("get", "/v1/recommendations/popular"),
        ("get", "/v1/items/{id}/similar"),
        ("get", "/v1/subjects/{id}/recommendations"),
        ("put", "/v1/subjects/{id}/consent"),
        ("get", "/v1/subjects/{id}/consent"),
        ("get", "/v1/subjects/{id}/export"),
        ("delete", "/v1/subjects/{id}"),
        ("post", "/v1/events"),
        ("post", "/v1/admin/model/reload"),
    ];
    let mut listed: Vec<(String, String)> = expected.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    listed.sort();
    operations.sort();
    assert_eq!(operations, listed);
    assert_eq!(doc["paths"]["/v1/subjects/{id}/consent"]["put"]["x-hush-scope"], "privacy");
    assert!(doc["components"]["schemas"]["EventBatch"].is_object());
    // Every documented operation is really routed (an unrouted path is an empty 404 or a 405).
    for (method, path) in operations {
        let url = format!("{}{}", server.base, path.replace("{id}", "openapi-probe"));
        let method: reqwest::Method = method.to_uppercase().parse().unwrap();
        let r = server.client.request(method.clone(), &url).json(&json!({})).send().await.unwrap();
        let status = r.status().as_u16();
        let body = r.text().await.unwrap();
        assert!(status != 405 && !(status == 404 && body.is_empty()), "{method} {path} is not routed ({status})");
    }
}

#[tokio::test]
async fn negative_feedback_cancels_items_and_they_are_never_recommended() {
    let server = Server::start().await;
    server.consent("gus", "personalization", true).await;
    let events = json!({ "events": [
        { "subject_id": "gus", "item_id": "sku-0", "kind": "view" },
        { "subject_id": "gus", "item_id": "sku-0", "kind": "dislike" },
        { "subject_id": "gus", "item_id": "sku-1", "kind": "return" },
    ]});
    let (status, report) = server.send(reqwest::Method::POST, "/v1/events", Some(events)).await;
    assert_eq!((status, report["received"].as_u64()), (200, Some(3)));
    let (_, export) = server.get("/v1/subjects/gus/export").await;
    assert_eq!(export["events"].as_array().map(Vec::len), Some(3), "{export}");
    let (status, body) = server.get("/v1/subjects/gus/recommendations?k=40").await;
    assert_eq!(status, 200);
    // view (+1) and dislike (-5) cancel sku-0 out; the return cancels sku-1: nothing positive is left.
    assert_eq!(body["personalized"], false, "{body}");
    let items: Vec<&str> = body["items"].as_array().unwrap().iter().map(|i| i["item"].as_str().unwrap()).collect();
    assert_eq!(items.len(), 38);
    assert!(!items.contains(&"sku-0") && !items.contains(&"sku-1"));
}

/// Similar items come from the released item factors alone: no subject, no
/// consent; the recommend scope; the model's exact cosine ranking.
#[tokio::test]
async fn similar_items_follow_the_item_factors() {
    let server = Server::start().await;
    let (status, body) = server.get("/v1/items/sku-3/similar?k=5&exclude=sku-4").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["basis"], "item_factors");
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 5, "{body}");
    // Exactly the model's own exact cosine ranking (tested against a
    // reference in hush-mf), minus the item and the excluded one.
    let model = hush_mf::Model::load(&server.model_path).unwrap();
    let expected: Vec<(String, f64)> =
        model.similar(3, 5, |i| i == 4).into_iter().map(|(i, s)| (model.items[i].clone(), f64::from(s))).collect();
    let got: Vec<(String, f64)> =
        items.iter().map(|i| (i["item"].as_str().unwrap().to_string(), i["similarity"].as_f64().unwrap())).collect();
    assert_eq!(got.iter().map(|g| &g.0).collect::<Vec<_>>(), expected.iter().map(|e| &e.0).collect::<Vec<_>>());
    assert!(got.iter().zip(&expected).all(|(g, e)| (g.1 - e.1).abs() < 1e-6), "{got:?} vs {expected:?}");
    assert!(got.iter().all(|g| g.0 != "sku-3" && g.0 != "sku-4"));
    assert!(got.windows(2).all(|w| w[0].1 >= w[1].1) && got[0].1 <= 1.0 + 1e-6, "{got:?}");

    let (status, body) = server.get("/v1/items/no-such-sku/similar").await;
    assert_eq!((status, body["error"].as_str()), (404, Some("unknown_item")), "{body}");
    let (status, body) = server.get("/v1/items/sku-3/similar?k=0").await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_k")), "{body}");
    let ingest_only = reqwest::Client::new()
        .get(format!("{}/v1/items/sku-3/similar", server.base))
        .bearer_auth(&server.keys["ingest"])
        .send()
        .await
        .unwrap();
    assert_eq!(ingest_only.status().as_u16(), 403);
}

/// Serving weighs a subject's events as the model's training did: its
/// rating threshold, not a fixed one.
#[tokio::test]
async fn events_fold_in_with_the_weighting_the_model_was_trained_with() {
    for (threshold, rating, folded_in) in [(3.0, 3.5, true), (4.5, 4.2, false), (4.5, 4.6, true)] {
        let weighting = hush_features::EventWeighting {
            rating_positive_threshold: threshold,
            ..hush_features::EventWeighting::default()
        };
        let server = Server::serving(model_weighing(Unfit::No, weighting), ServeConfig::default()).await;
        server.consent("ivy", "personalization", true).await;
        let event = json!({ "subject_id": "ivy", "item_id": "sku-3", "kind": "rating", "value": rating });
        let (status, _) = server.send(reqwest::Method::POST, "/v1/events", Some(json!({ "events": [event] }))).await;
        assert_eq!(status, 200);
        let (status, body) = server.get("/v1/subjects/ivy/recommendations?k=5").await;
        assert_eq!(status, 200);
        assert_eq!(body["personalized"], folded_in, "threshold {threshold}, rating {rating}: {body}");
        let card = server.client.get(format!("{}/v1/model?format=md", server.base)).send().await.unwrap();
        let card = card.text().await.unwrap();
        assert!(card.contains(&format!("a rating counts from {threshold}")), "{card}");
    }
}

#[tokio::test]
async fn only_the_most_recent_events_are_folded_in_and_excluded() {
    let server = Server::start_with(ServeConfig { max_history: 2, ..ServeConfig::default() }).await;
    server.consent("hal", "personalization", true).await;
    let events: Vec<Value> =
        [("sku-3", "2025-01-01T00:00:00Z"), ("sku-5", "2025-01-02T00:00:00Z"), ("sku-7", "2025-01-03T00:00:00Z")]
            .iter()
            .map(|(item, at)| json!({ "subject_id": "hal", "item_id": item, "kind": "purchase", "timestamp": at }))
            .collect();
    let (status, report) = server.send(reqwest::Method::POST, "/v1/events", Some(json!({ "events": events }))).await;
    assert_eq!((status, report["received"].as_u64()), (200, Some(3)), "{report}");
    let (_, export) = server.get("/v1/subjects/hal/export").await;
    assert_eq!(export["events"].as_array().map(Vec::len), Some(3), "{export}");
    let (status, body) = server.get("/v1/subjects/hal/recommendations?k=40").await;
    assert_eq!((status, &body["personalized"]), (200, &json!(true)), "{body}");
    let items = body["items"].as_array().unwrap();
    let ids: Vec<&str> = items.iter().map(|i| i["item"].as_str().unwrap()).collect();
    // The window is the two newest events: their items are not recommended
    // again, the older one is, and only the window explains anything.
    assert_eq!(ids.len(), 38);
    assert!(!ids.contains(&"sku-5") && !ids.contains(&"sku-7") && ids.contains(&"sku-3"), "{ids:?}");
    let reasons: std::collections::BTreeSet<&str> =
        items.iter().flat_map(|i| i["because"].as_array().unwrap()).map(|b| b["item"].as_str().unwrap()).collect();
    assert!(!reasons.is_empty() && reasons.iter().all(|r| ["sku-5", "sku-7"].contains(r)), "{reasons:?}");
}

/// Reads until the server closes the connection; how long that took, or
/// `None` if it was still open after `limit`.
async fn closed_within(stream: &mut tokio::net::TcpStream, limit: std::time::Duration) -> Option<std::time::Duration> {
    use tokio::io::AsyncReadExt;
    let started = std::time::Instant::now();
    let mut buffer = [0u8; 4096];
    loop {
        match tokio::time::timeout(limit.saturating_sub(started.elapsed()), stream.read(&mut buffer)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => continue,
        }
    }
}

/// Slowloris, silent sockets and idle keep-alive connections are closed after
/// the header read timeout, and connections past the cap are closed at once,
/// on a real server on 127.0.0.1.
/// A client that sends requests but never reads the answers holds no
/// connection for long: a write that makes no progress times out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_closed() {
    use tokio::io::AsyncWriteExt;
    let config = ServeConfig { write_timeout_ms: 500, ..ServeConfig::default() };
    let server = Server::start_with(config).await;
    let address: std::net::SocketAddr = server.base.trim_start_matches("http://").parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(address).await.unwrap();
    let requests = "GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n".repeat(2000);
    // Never read: the answers fill both buffers and the server's writes stall.
    let writer = tokio::spawn(async move {
        let _ = stream.write_all(requests.as_bytes()).await;
        tokio::time::sleep(std::time::Duration::from_secs(30)).await;
        drop(stream);
    });
    let open = |text: &str| {
        text.lines().find_map(|l| l.strip_prefix("hush_open_connections ")).and_then(|n| n.trim().parse::<i64>().ok())
    };
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    let mut seen_stalled = false;
    loop {
        let text = reqwest::get(format!("{}/metrics", server.base)).await.unwrap().text().await.unwrap();
        // This metrics request is one open connection; the stalled client would be another.
        match open(&text) {
            Some(n) if n >= 2 => seen_stalled = true,
            Some(1) if seen_stalled => break,
            _ => {}
        }
        assert!(Instant::now() < deadline, "the client that stopped reading still holds its connection: {text}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    writer.abort();
}

#[tokio::test]
async fn slow_silent_and_surplus_connections_are_closed() {
    use tokio::io::AsyncWriteExt;
    let timeout = std::time::Duration::from_millis(600);
    let config = ServeConfig { header_read_timeout_ms: 600, max_connections: 6, ..ServeConfig::default() };
    let server = Server::start_with(config).await;
    let address = server.base.trim_start_matches("http://").to_string();
    let connect = || tokio::net::TcpStream::connect(address.clone());

    // A client trickling a header line every 100 ms never finishes its head.
    let mut slow = connect().await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let trickle = tokio::spawn(async move {
        for n in 0..40 {
            if slow.write_all(format!("X-Slow-{n}: y\r\n").as_bytes()).await.is_err() {
                return (slow, true);
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        (slow, false)
    });
    // A socket that never sends a byte.
    let mut silent = connect().await.unwrap();
    // A keep-alive connection that goes idle after one request.
    let mut idle = connect().await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();

    let limit = timeout * 4;
    let silent_closed = closed_within(&mut silent, limit).await;
    assert!(silent_closed.is_some_and(|t| t >= timeout / 2), "silent socket: {silent_closed:?}");
    // The idle connection got its answer first, then was closed.
    let idle_closed = closed_within(&mut idle, limit).await;
    assert!(idle_closed.is_some(), "idle keep-alive connection still open");
    let (mut slow, write_failed) = trickle.await.unwrap();
    assert!(write_failed || closed_within(&mut slow, limit).await.is_some(), "slowloris connection still open");

    // The cap: six connections held open, a seventh is closed at once.
    let mut held = Vec::new();
    for _ in 0..6 {
        held.push(connect().await.unwrap());
    }
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let mut surplus = connect().await.unwrap();
    let surplus_closed = closed_within(&mut surplus, timeout / 2).await;
    assert!(surplus_closed.is_some(), "a connection beyond the cap was kept open");
    // Once the held ones time out, the server serves again.
    for stream in &mut held {
        assert!(closed_within(stream, limit).await.is_some());
    }
    let (status, _) = server.get("/healthz").await;
    assert_eq!(status, 200);
    let metrics = server.client.get(format!("{}/metrics", server.base)).send().await.unwrap().text().await.unwrap();
    let refused = metrics.lines().find(|l| l.starts_with("hush_connections_refused_total")).unwrap();
    assert_ne!(refused, "hush_connections_refused_total 0", "{metrics}");
}

/// A readiness probe is one cheap read, and says which schema it found.
#[tokio::test]
async fn readyz_answers_from_the_schema_version() {
    let server = Server::start().await;
    let (status, body) = server.get("/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ready");
    assert_eq!(body["schema_version"], hush_consent::ledger::SCHEMA_VERSION);
}

/// Sends raw bytes on a fresh connection and returns the status code and body of the answer.
async fn raw_exchange(server: &Server, request: String) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(server.base.trim_start_matches("http://")).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer).to_string();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}

/// A request that outlives `request_timeout_ms` is answered 503 `timeout`,
/// and that answer is counted in `/metrics` like any other (the metrics
/// layer sits outside the timeout).
#[tokio::test]
async fn timed_out_requests_are_answered_503_and_counted() {
    let server = Server::start_with(ServeConfig { request_timeout_ms: 300, ..ServeConfig::default() }).await;
    // A body announced but never sent: the handler waits for it until the timeout.
    let request = format!(
        "POST /v1/events HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\n\
         Content-Length: 100\r\n\r\n{{\"events\": [",
        server.keys["ingest"]
    );
    let (status, answer) = raw_exchange(&server, request).await;
    assert_eq!(status, 503, "{answer}");
    assert!(answer.contains(r#""error":"timeout""#), "{answer}");
    let text = reqwest::get(format!("{}/metrics", server.base)).await.unwrap().text().await.unwrap();
    assert!(text.contains(r#"hush_http_requests_total{method="POST",route="/v1/events",status="503"} 1"#), "{text}");
}

/// The small holes a hostile client found: each answered precisely now.
#[tokio::test]
async fn hostile_client_details_are_answered_precisely() {
    let server = Server::start().await;
    let admin = server.keys["admin"].clone();
    let privacy = reqwest::Client::new();

    // `bearer` in lower case is the same scheme.
    let r = privacy
        .get(format!("{}/v1/model", server.base))
        .header("authorization", format!("bearer {admin}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);

    // Every Sec-GPC instance counts.
    assert_eq!(server.consent("gpc", "personalization", true).await.0, 200);
    let r = server
        .client
        .get(format!("{}/v1/subjects/gpc/recommendations", server.base))
        .header("Sec-GPC", "0")
        .header("Sec-GPC", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    // ... also when a proxy joined the lines with a comma.
    for joined in ["0, 1", "1, 1", "1,0"] {
        let r = server
            .client
            .get(format!("{}/v1/subjects/gpc/recommendations", server.base))
            .header("Sec-GPC", joined)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 403, "Sec-GPC: {joined}");
    }
    // Client-chosen methods do not become metric labels.
    let r =
        server.client.request(reqwest::Method::from_bytes(b"ANYTHING1").unwrap(), format!("{}/healthz", server.base));
    let _ = r.send().await.unwrap();
    let metrics = reqwest::get(format!("{}/metrics", server.base)).await.unwrap().text().await.unwrap();
    assert!(!metrics.contains("ANYTHING1") && metrics.contains(r#"method="other""#), "{metrics}");

    // Personal data is never cached; the model card may be.
    for path in ["/v1/subjects/gpc/recommendations", "/v1/subjects/gpc/consent", "/v1/subjects/gpc/export"] {
        let r = server.client.get(format!("{}{path}", server.base)).send().await.unwrap();
        assert_eq!(r.headers().get("cache-control").map(|v| v.to_str().unwrap()), Some("no-store"), "{path}");
    }

    // The consent source is not the client's to choose.
    let forged = json!({ "purpose": "training", "granted": true, "notice_version": "v1", "source": "cli" });
    let (status, body) = server.send(reqwest::Method::PUT, "/v1/subjects/gpc/consent", Some(forged)).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_field")), "{body}");
    let honest = json!({ "purpose": "training", "granted": true, "notice_version": "v1", "source": "api" });
    assert_eq!(server.send(reqwest::Method::PUT, "/v1/subjects/gpc/consent", Some(honest)).await.0, 200);
    let (_, consent) = server.get("/v1/subjects/gpc/consent").await;
    assert!(consent["history"].as_array().unwrap().iter().all(|r| r["source"] == "api"), "{consent}");

    // 404 and 405 are JSON like every other error.
    let (status, body) = server.get("/v1/nowhere").await;
    assert_eq!((status, body["error"].as_str()), (404, Some("no_route")), "{body}");
    let (status, body) = server.send(reqwest::Method::PATCH, "/v1/events", None).await;
    assert_eq!((status, body["error"].as_str()), (405, Some("method_not_allowed")), "{body}");

    // A malformed chunked body is a 400, not a 413.
    let (status, text) = raw_exchange(
        &server,
        format!(
            "POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {admin}\r\nContent-Type: application/json\r\n\
             Transfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\n{{}}\r\n0\r\n\r\n"
        ),
    )
    .await;
    assert_eq!(status, 400, "{text}");
    assert!(!text.contains("body_too_large"), "{text}");

    // Integer unix seconds are accepted, as the README says; the ends of time are not.
    let event = |timestamp: Value| json!({ "events": [{ "subject_id": "gpc", "item_id": "sku-1", "kind": "view", "timestamp": timestamp }] });
    let (status, body) = server.send(reqwest::Method::POST, "/v1/events", Some(event(json!(1_735_689_600)))).await;
    assert_eq!((status, body["received"].as_u64()), (200, Some(1)), "{body}");
    let (_, export) = server.get("/v1/subjects/gpc/export").await;
    assert_eq!(export["events"][0]["at"], "2025-01-01T00:00:00Z", "{export}");
    for bad in [json!(i64::MAX), json!(-1), json!("0000-01-01T00:00:00Z"), json!(1.5)] {
        let (status, body) = server.send(reqwest::Method::POST, "/v1/events", Some(event(bad.clone()))).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let (_, export) = server.get("/v1/subjects/gpc/export").await;
    assert_eq!(export["events"].as_array().map(Vec::len), Some(1), "{export}");
}

/// Decisions about an id hush has never seen say so; erasing one blocks nothing.
#[tokio::test]
async fn never_seen_ids_are_named_as_such() {
    let server = Server::start().await;
    let (status, body) = server.send(reqwest::Method::DELETE, "/v1/subjects/ada-typo", None).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("unknown_subject")), "{body}");
    // The person can still opt in through the API.
    let (status, body) = server.consent("ada-typo", "personalization", true).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server.consent("bea-typo", "personalization", false).await;
    assert_eq!((status, &body["subject_was_known"]), (200, &json!(false)), "{body}");
    assert!(body["warning"].as_str().unwrap().contains("never seen"), "{body}");
    let (status, body) = server.consent("ada-typo", "personalization", false).await;
    assert_eq!((status, &body["subject_was_known"], body.get("warning")), (200, &json!(true), None), "{body}");
    let (status, body) = server.send(reqwest::Method::DELETE, "/v1/subjects/ada-typo", None).await;
    assert_eq!((status, body["receipt"]["subject_was_known"].as_bool()), (200, Some(true)), "{body}");
}

/// One subject id rule everywhere: control characters, over-long ids and
/// paths that are not UTF-8 are a JSON 400, and nothing is stored.
#[tokio::test]
async fn subject_ids_are_checked_once_for_every_route() {
    let server = Server::start().await;
    let long = "x".repeat(10_000);
    for id in ["a%00b", "a%0Ab", long.as_str()] {
        let (status, body) = server.consent(id, "personalization", true).await;
        assert_eq!((status, body["error"].as_str()), (400, Some("invalid_subject_id")), "{body}");
        let (status, body) = server.get(&format!("/v1/subjects/{id}/recommendations")).await;
        assert_eq!((status, body["error"].as_str()), (400, Some("invalid_subject_id")), "{body}");
    }
    let (status, body) = server.get("/v1/subjects/%FF%FE/export").await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_path")), "{body}");
    let (status, body) = server.events("a\nb", &["sku-1"]).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_event")), "{body}");
    assert!(body["message"].as_str().unwrap().contains("subject_id"), "{body}");
    let ledger = Ledger::open(&server.db).unwrap();
    assert_eq!(ledger.stats().unwrap().consent_records, 0);
}

/// A duplicated query key is a JSON 400 like every other error.
#[tokio::test]
async fn query_errors_are_json() {
    let server = Server::start().await;
    let (status, body) = server.get("/v1/recommendations/popular?k=3&k=4").await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_query")), "{body}");
    let (status, body) = server.get("/v1/model?format=md&format=html").await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_query")), "{body}");
}

/// A storefront's retry stores nothing twice, on either store, and the
/// answer is the same whoever the events belong to: `duplicates` counts
/// only repeats inside the request.
async fn retried_batches_are_idempotent_and_answer_alike(server: Server) {
    server.consent("ada", "personalization", true).await;
    let event = |subject: &str, id: Option<&str>, item: &str| {
        let mut e =
            json!({ "subject_id": subject, "item_id": item, "kind": "purchase", "timestamp": "2025-06-01T10:00:00Z" });
        if let Some(id) = id {
            e["event_id"] = json!(id);
        }
        e
    };
    let batch = |subject: &str| json!({ "events": [event(subject, Some("order-1"), "i1"), event(subject, None, "i2"), event(subject, None, "i2")] });
    let mut answers = Vec::new();
    for subject in ["ada", "never-seen", "ada", "never-seen"] {
        let (status, body) = server.send(reqwest::Method::POST, "/v1/events", Some(batch(subject))).await;
        assert_eq!(status, 200, "{body}");
        answers.push(body);
    }
    assert!(answers.iter().all(|a| a == &json!({ "received": 3, "duplicates": 1 })), "{answers:?}");
    let (_, export) = server.get("/v1/subjects/ada/export").await;
    assert_eq!(export["events"].as_array().unwrap().len(), 2, "{export}");
    // The same id with other content inside one request: the client's error.
    let conflicting = json!({ "events": [event("ada", Some("order-2"), "i1"), event("ada", Some("order-2"), "i3")] });
    let (status, body) = server.send(reqwest::Method::POST, "/v1/events", Some(conflicting)).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_event")), "{body}");
    assert!(body["message"].as_str().unwrap().contains("events[1]"), "{body}");
    // Against a stored event it is not (that would tell who consented): the first one stands.
    let (status, _) = server
        .send(reqwest::Method::POST, "/v1/events", Some(json!({ "events": [event("ada", Some("order-1"), "i9")] })))
        .await;
    assert_eq!(status, 200);
    let (_, export) = server.get("/v1/subjects/ada/export").await;
    assert_eq!(export["events"].as_array().unwrap().len(), 2, "{export}");
}

#[tokio::test]
async fn retried_batches_are_idempotent_on_sqlite() {
    retried_batches_are_idempotent_and_answer_alike(Server::start().await).await;
}

#[tokio::test]
async fn retried_batches_are_idempotent_on_postgres() {
    retried_batches_are_idempotent_and_answer_alike(Server::start_on_postgres(ServeConfig::default()).await).await;
}

#[tokio::test]
async fn a_grant_names_its_notice_and_a_withdrawal_need_not() {
    let server = Server::start().await;
    let put = |body: Value| server.send(reqwest::Method::PUT, "/v1/subjects/ada/consent", Some(body));
    let (status, body) = put(json!({ "purpose": "training", "granted": true })).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_field")), "{body}");
    assert!(body["message"].as_str().unwrap().contains("notice_version"), "{body}");
    let (status, _) = put(json!({ "purpose": "training", "granted": true, "notice_version": "2025-04" })).await;
    assert_eq!(status, 200);
    let (status, body) = put(json!({ "purpose": "training", "granted": false })).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["recorded"]["notice_version"], "none");
}

/// Checks `body`, the answer `status` of `method template`, against the
/// schema the OpenAPI document gives for it (the document's components
/// resolve `$ref`s); panics naming the route, status and every mismatch.
fn check_against_document(document: &Value, method: &str, template: &str, status: u16, body: &Value) {
    let response = &document["paths"][template][method]["responses"][status.to_string()];
    assert!(!response.is_null(), "{method} {template} answered {status}, which /openapi.json does not list: {body}");
    let schema = &response["content"]["application/json"]["schema"];
    assert!(schema.is_object(), "{method} {template} {status}: no JSON schema in /openapi.json");
    let root = json!({ "components": document["components"], "allOf": [schema] });
    let validator = jsonschema::validator_for(&root)
        .unwrap_or_else(|e| panic!("{method} {template} {status}: the document's schema does not compile: {e}"));
    let errors: Vec<String> = validator.iter_errors(body).map(|e| e.to_string()).collect();
    assert!(
        errors.is_empty(),
        "{method} {template} {status}: the answer does not match the document: {errors:?}\n{body}"
    );
}

/// Every route's real answers, successes and errors, from a real server
/// over HTTP, match the response schemas of its own /openapi.json: a
/// client generated from the document can trust it.
#[tokio::test]
async fn real_answers_match_the_openapi_response_schemas() {
    let server = Server::start().await;
    let (status, document) = server.get("/openapi.json").await;
    assert_eq!(status, 200);
    let item = server.get("/v1/recommendations/popular?k=1").await.1["items"][0]["item"].as_str().unwrap().to_string();
    let event = json!({ "events": [{ "event_id": "e-1", "subject_id": "ada", "item_id": item, "kind": "purchase", "timestamp": 1_735_689_600 }] });
    let grant = json!({ "purpose": "personalization", "granted": true, "notice_version": "v1", "proof_ref": "b-1" });
    let no_notice = json!({ "purpose": "personalization", "granted": true });
    let withdraw = json!({ "purpose": "personalization", "granted": false });
    let similar = format!("/v1/items/{item}/similar?k=3");
    // (method, template, path, body); order matters: grant, ingest, recommend, withdraw, erase.
    let calls: Vec<(&str, &str, String, Option<Value>)> = vec![
        ("get", "/healthz", "/healthz".into(), None),
        ("get", "/readyz", "/readyz".into(), None),
        ("get", "/v1/model", "/v1/model".into(), None),
        ("get", "/v1/model", "/v1/model?format=pdf".into(), None),
        ("get", "/v1/recommendations/popular", "/v1/recommendations/popular?k=3".into(), None),
        ("get", "/v1/recommendations/popular", "/v1/recommendations/popular?k=0".into(), None),
        ("get", "/v1/items/{id}/similar", similar, None),
        ("get", "/v1/items/{id}/similar", "/v1/items/no-such-item/similar".into(), None),
        ("get", "/v1/subjects/{id}/recommendations", "/v1/subjects/ada/recommendations".into(), None),
        ("get", "/v1/subjects/{id}/export", "/v1/subjects/ada/export".into(), None),
        ("put", "/v1/subjects/{id}/consent", "/v1/subjects/ada/consent".into(), Some(no_notice)),
        ("put", "/v1/subjects/{id}/consent", "/v1/subjects/ada/consent".into(), Some(grant)),
        ("post", "/v1/events", "/v1/events".into(), Some(event)),
        ("post", "/v1/events", "/v1/events".into(), Some(json!({ "events": [{ "subject_id": "ada" }] }))),
        ("get", "/v1/subjects/{id}/recommendations", "/v1/subjects/ada/recommendations?k=3".into(), None),
        ("get", "/v1/subjects/{id}/consent", "/v1/subjects/ada/consent".into(), None),
        ("get", "/v1/subjects/{id}/export", "/v1/subjects/ada/export".into(), None),
        ("put", "/v1/subjects/{id}/consent", "/v1/subjects/ada/consent".into(), Some(withdraw)),
        ("get", "/v1/subjects/{id}/recommendations", "/v1/subjects/ada/recommendations".into(), None),
        ("delete", "/v1/subjects/{id}", "/v1/subjects/ada".into(), None),
        ("delete", "/v1/subjects/{id}", "/v1/subjects/never-seen".into(), None),
        ("post", "/v1/admin/model/reload", "/v1/admin/model/reload".into(), None),
    ];
    let mut statuses = std::collections::BTreeSet::new();
    for (method, template, path, body) in calls {
        let verb = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let (status, answer) = server.send(verb, &path, body).await;
        assert!(!answer.is_null(), "{method} {path} answered {status} without a JSON body");
        check_against_document(&document, method, template, status, &answer);
        statuses.insert(status);
    }
    // Successes and the documented client errors were all exercised.
    for expected in [200, 400, 403, 404] {
        assert!(statuses.contains(&expected), "no call answered {expected}: {statuses:?}");
    }
    // A key without the scope, and no key at all: the error bodies of every protected route.
    let (status, answer) = server.get_as("recommend", "/v1/subjects/ada/export").await;
    check_against_document(&document, "get", "/v1/subjects/{id}/export", status, &answer);
    assert_eq!(status, 403);
    let r = reqwest::get(format!("{}/v1/model", server.base)).await.unwrap();
    let status = r.status().as_u16();
    check_against_document(&document, "get", "/v1/model", status, &r.json().await.unwrap());
    assert_eq!(status, 401);
}

/// The schema check itself is not vacuous: a wrong answer fails it.
#[tokio::test]
async fn the_schema_check_refuses_answers_that_do_not_match() {
    let server = Server::start().await;
    let (_, document) = server.get("/openapi.json").await;
    for (template, method, status, wrong) in [
        ("/v1/events", "post", 200, json!({ "received": "3", "duplicates": 0 })),
        ("/v1/events", "post", 200, json!({ "received": 3, "duplicates": 0, "stored": 3 })),
        ("/v1/subjects/{id}/consent", "get", 200, json!({ "status": [{ "purpose": "training" }], "history": [] })),
        ("/v1/subjects/{id}/export", "get", 404, json!({ "error": "not_found" })),
        ("/healthz", "get", 418, json!({ "status": "ok" })),
    ] {
        let document = document.clone();
        let caught =
            std::panic::catch_unwind(move || check_against_document(&document, method, template, status, &wrong));
        assert!(caught.is_err(), "{method} {template} {status} accepted a wrong answer");
    }
}

/// The test model's catalogue: sku-0..sku-19 in `garden`, sku-20..sku-38 in
/// `kitchen`, sku-39 absent (no title, no category), and one item the model
/// does not know.
fn test_catalogue() -> Vec<hush_consent::CatalogueItem> {
    (0..39)
        .map(|i| hush_consent::CatalogueItem {
            id: format!("sku-{i}"),
            title: Some(format!("Thing {i}")),
            category: Some(if i < 20 { "garden" } else { "kitchen" }.to_string()),
            attributes: serde_json::Map::new(),
        })
        .chain(std::iter::once(hush_consent::CatalogueItem {
            id: "not-in-the-model".into(),
            title: Some("Ghost".into()),
            category: Some("attic".into()),
            attributes: serde_json::Map::new(),
        }))
        .collect()
}

#[tokio::test]
async fn lists_carry_titles_and_filter_by_category_on_both_backends() {
    for on_postgres in [false, true] {
        let server =
            Server::start_catalogued(model(false), ServeConfig::default(), on_postgres, test_catalogue()).await;
        assert_eq!(server.consent("cat", "personalization", true).await.0, 200);
        assert_eq!(server.events("cat", &["sku-0", "sku-2"]).await.0, 200);
        let items = |body: &Value| -> Vec<(String, Value, Value)> {
            body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| (i["item"].as_str().unwrap().to_string(), i["title"].clone(), i["category"].clone()))
                .collect()
        };
        let path = "/v1/subjects/cat/recommendations?k=40";
        let (status, body) = server.get(path).await;
        assert_eq!(status, 200, "{body}");
        // Every listed item carries what the catalogue says of it: sku-39 is
        // in the model but not in the catalogue, so it has neither.
        let as_catalogued = |listed: &[(String, Value, Value)]| {
            for (item, title, category) in listed {
                let n: usize = item.trim_start_matches("sku-").parse().unwrap();
                if n == 39 {
                    assert_eq!((title, category), (&Value::Null, &Value::Null), "not in the catalogue");
                } else {
                    assert_eq!(title, &json!(format!("Thing {n}")));
                    assert_eq!(category, &json!(if n < 20 { "garden" } else { "kitchen" }));
                }
            }
        };
        let all = items(&body);
        assert_eq!(all.len(), 38, "40 items less the subject's own two: {body}");
        as_catalogued(&all);
        // Which items carry an explanation depends on the model's noise; every
        // explanation names the subject's own (catalogued) items by title.
        let reasons: Vec<&Value> =
            body["items"].as_array().unwrap().iter().flat_map(|i| i["because"].as_array().unwrap()).collect();
        assert!(!reasons.is_empty(), "{body}");
        for because in reasons {
            assert!(because["text"].as_str().unwrap().starts_with("because you bought Thing "), "{body}");
            assert!(because["title"].as_str().unwrap().starts_with("Thing "), "{body}");
        }

        let (_, body) = server.get(&format!("{path}&category=kitchen")).await;
        let kitchen = items(&body);
        assert_eq!(kitchen.len(), 19, "{body}");
        assert!(kitchen.iter().all(|(_, _, c)| c == "kitchen"), "{body}");
        let (_, body) = server.get(&format!("{path}&exclude_categories=kitchen")).await;
        let rest = items(&body);
        assert_eq!(rest.len(), 19, "18 garden items and sku-39, which has no category: {body}");
        assert!(rest.iter().all(|(_, _, c)| c != "kitchen"), "{body}");
        let (_, body) = server.get(&format!("{path}&category=garden,kitchen&exclude_categories=garden")).await;
        assert_eq!(items(&body).len(), 19, "{body}");
        let (status, body) = server.get(&format!("{path}&category=no-such-shelf")).await;
        assert_eq!((status, items(&body).len()), (200, 0), "an unknown category matches nothing: {body}");
        let (_, body) = server.get("/v1/recommendations/popular?k=40&category=garden").await;
        assert_eq!(items(&body).len(), 20, "{body}");
        assert!(items(&body).iter().all(|(_, t, c)| c == "garden" && t.is_string()), "{body}");
        // Which items are nearest depends on the model's noise; whichever
        // they are, each carries its catalogue entry (sku-39 has none).
        // An item whose statistics were all noise has no factors and no
        // neighbours: every item is asked, those with factors are checked.
        let mut asked = 0;
        for n in 0..39 {
            let (_, body) = server.get(&format!("/v1/items/sku-{n}/similar?k=3")).await;
            if body["basis"] == "item_factors" {
                assert_eq!(items(&body).len(), 3, "{body}");
                as_catalogued(&items(&body));
                asked += 1;
            }
        }
        assert!(asked > 20, "most items have factors at ε = 500: {asked}");

        for bad in ["category=", "category=a,,b", "exclude_categories=%01", "category=a%2Cb,"] {
            let (status, body) = server.get(&format!("{path}&{bad}")).await;
            assert_eq!((status, body["error"].as_str()), (400, Some("invalid_category")), "{bad}: {body}");
        }
        // Consent first: a subject without it is refused, whatever the filter.
        let (status, body) = server.get("/v1/subjects/nobody/recommendations?category=garden").await;
        assert_eq!((status, body["reason"].as_str()), (403, Some("not_granted")), "{body}");
    }
}

/// The value of a counter in the `/metrics` text.
async fn counter(server: &Server, name: &str) -> u64 {
    let text = reqwest::get(format!("{}/metrics", server.base)).await.unwrap().text().await.unwrap();
    let line = text.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{name} in {text}"));
    line[name.len() + 1..].trim().parse().unwrap()
}

/// Many clients posting at once: waiting batches commit together (fewer
/// store transactions than requests), yet every batch is answered and
/// stored exactly as if alone, and a withdrawal acknowledged before a burst
/// holds for every batch of it.
async fn concurrent_batches_commit_together_and_each_as_alone(server: Server) {
    let shoppers: Vec<String> = (0..8).map(|s| format!("shopper-{s}")).collect();
    for s in &shoppers {
        assert_eq!(server.consent(s, "personalization", true).await.0, 200);
    }
    // 64 batches, 8 per shopper, each of 20 new items plus one repeat inside it.
    let batch = |s: usize, j: usize| {
        let mut events: Vec<Value> = (0..20)
            .map(|i| json!({ "subject_id": shoppers[s], "item_id": format!("sku-{j}-{i}"), "kind": "view", "timestamp": 1_750_000_000 + i }))
            .collect();
        events.push(events[0].clone());
        json!({ "events": events })
    };
    // Every request of a burst is sent at once, each on a task of its own.
    let burst = |bodies: Vec<Value>| {
        let tasks: Vec<_> = bodies
            .into_iter()
            .map(|body| {
                let (client, url) = (server.client.clone(), format!("{}/v1/events", server.base));
                tokio::spawn(async move {
                    let r = client.post(url).json(&body).send().await.unwrap();
                    (r.status().as_u16(), r.json::<Value>().await.unwrap())
                })
            })
            .collect();
        async move {
            let mut answers = Vec::new();
            for task in tasks {
                answers.push(task.await.unwrap());
            }
            answers
        }
    };
    let answers = burst((0..64).map(|n| batch(n % 8, n / 8)).collect()).await;
    for (status, body) in &answers {
        assert_eq!((*status, body), (200, &json!({ "received": 21, "duplicates": 1 })));
    }
    for s in &shoppers {
        let (_, export) = server.get(&format!("/v1/subjects/{s}/export")).await;
        assert_eq!(export["events"].as_array().unwrap().len(), 8 * 20, "{s}: every batch stored, no repeat");
    }
    let commits = counter(&server, "hush_ingest_commits_total").await;
    assert!((1..64).contains(&commits), "64 concurrent batches took {commits} transactions");
    assert_eq!(counter(&server, "hush_events_received_total").await, 64 * 21);

    // A withdrawal acknowledged, then a burst mixing the withdrawn shopper's
    // new events with everyone else's: none of theirs is stored.
    assert_eq!(server.consent("shopper-0", "personalization", false).await.0, 200);
    let answers = burst((0..32).map(|n| batch(n % 8, 100 + n / 8)).collect()).await;
    assert!(answers.iter().all(|(status, _)| *status == 200), "{answers:?}");
    let (_, export) = server.get("/v1/subjects/shopper-0/export").await;
    assert_eq!(export["events"].as_array().unwrap().len(), 8 * 20, "nothing stored after the withdrawal");
    let (_, export) = server.get("/v1/subjects/shopper-1/export").await;
    assert_eq!(export["events"].as_array().unwrap().len(), 12 * 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_batches_commit_together_on_sqlite() {
    concurrent_batches_commit_together_and_each_as_alone(Server::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_batches_commit_together_on_postgres() {
    concurrent_batches_commit_together_and_each_as_alone(Server::start_on_postgres(ServeConfig::default()).await).await;
}

/// Group commit decides each batch at its own arrival time: an event that
/// arrived before a grant took effect is not stored, even when it is
/// committed together with a batch that arrived after (another client's
/// request time must not change this batch's outcome).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grouped_batch_is_gated_at_its_own_arrival_time() {
    let server = Server::start().await;
    let now = hush_consent::Timestamp::now().as_unix_millis();
    let effective = hush_consent::Timestamp::from_unix_millis(now + 3_000).to_rfc3339();
    let body =
        json!({ "purpose": "personalization", "granted": true, "notice_version": "v1", "effective_at": effective });
    assert_eq!(server.send(reqwest::Method::PUT, "/v1/subjects/late/consent", Some(body)).await.0, 200);
    assert_eq!(server.consent("other", "personalization", true).await.0, 200);
    // Control: alone, an event of `late` now is dropped (the grant is not in force yet).
    assert_eq!(server.events("late", &["sku-0"]).await.0, 200);
    let (_, export) = server.get("/v1/subjects/late/export").await;
    assert_eq!(export["events"].as_array().unwrap().len(), 0, "{export}");

    // Hold SQLite's write lock from another connection, so batches queue.
    let (release, released) = std::sync::mpsc::channel::<()>();
    let (locked, is_locked) = std::sync::mpsc::channel::<()>();
    let db = server.db.clone();
    let holder = std::thread::spawn(move || {
        let mut ledger = Ledger::open(&db).unwrap();
        let batch = ledger.batch().unwrap();
        locked.send(()).unwrap();
        released.recv().unwrap();
        drop(batch);
    });
    is_locked.recv().unwrap();
    let post = |subject: &'static str, item: &'static str| {
        let (client, url) = (server.client.clone(), format!("{}/v1/events", server.base));
        tokio::spawn(async move {
            let body = json!({ "events": [{ "subject_id": subject, "item_id": item, "kind": "view" }] });
            client.post(url).json(&body).send().await.unwrap().status().as_u16()
        })
    };
    let blocker = post("other", "sku-1"); // group 1: waits for the lock
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let a = post("late", "sku-2"); // arrives before the grant takes effect
    tokio::time::sleep(std::time::Duration::from_millis(3_500)).await;
    let b = post("other", "sku-3"); // arrives after
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    release.send(()).unwrap();
    holder.join().unwrap();
    assert_eq!((blocker.await.unwrap(), a.await.unwrap(), b.await.unwrap()), (200, 200, 200));
    let (_, export) = server.get("/v1/subjects/late/export").await;
    assert_eq!(
        export["events"].as_array().unwrap().len(),
        0,
        "an event received before the grant took effect was stored: {export}"
    );
}
