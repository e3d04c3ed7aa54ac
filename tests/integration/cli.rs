//! End-to-end runs of the real `hush` binary on real files.

use std::process::Command;

use crate::common::{hush, json, ok, quickstart, root, sample_store, stderr};
use serde_json::Value;

#[test]
fn synth_reproduces_the_bundled_sample_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    ok(dir.path(), &["synth", "--out", "sample", "-q"]);
    for name in ["events.csv", "consent.csv", "erasure_requests.csv", "items.csv"] {
        let fresh = std::fs::read(dir.path().join("sample").join(name)).unwrap();
        let bundled = std::fs::read(root().join("data/sample").join(name)).unwrap();
        assert!(fresh == bundled, "data/sample/{name} is not what `hush synth` generates");
    }
}

#[test]
fn the_whole_pipeline_on_a_synthetic_storefront() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(d, &["synth", "--out", "shop", "--subjects", "400", "--items", "80", "--seed", "11", "-q"]);
    let mut logs = stderr(&ok(d, &["init"]));

    let out = ok(d, &["consent", "import", "shop/consent.csv", "--json"]);
    logs += &stderr(&out);
    let consent = json(&out);
    assert!(consent["stored"].as_u64().unwrap() > 400);
    assert_eq!(consent["malformed"], 0);

    let out = ok(d, &["events", "import", "shop/events.csv", "--json"]);
    logs += &stderr(&out);
    let events = json(&out);
    let rows = events["rows"].as_u64().unwrap();
    assert!(events["dropped_no_consent"].as_u64().unwrap() > 0, "some subjects never consent to anything");
    assert_eq!(events["stored"].as_u64().unwrap() + events["dropped_no_consent"].as_u64().unwrap(), rows);

    let out = ok(d, &["erase", "--requests", "shop/erasure_requests.csv", "--json"]);
    logs += &stderr(&out);
    let erased = json(&out);
    let requests = std::fs::read_to_string(d.join("shop/erasure_requests.csv")).unwrap();
    let first_erased =
        requests.lines().nth(1).expect("the generator asks for some erasures").split(',').next().unwrap().to_string();
    assert_eq!(erased["subjects"].as_u64().unwrap() as usize, requests.lines().count() - 1);

    let out = ok(
        d,
        &[
            "extract",
            "--input",
            "shop/events.csv",
            "--out",
            "f.hfs",
            "--split",
            "holdout:0.2:42",
            "--max-events-per-subject",
            "20",
            "--json",
        ],
    );
    logs += &stderr(&out);
    let result = json(&out);
    let report = &result["report"];
    let dropped: u64 = report["dropped_events"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(report["rows_in"].as_u64().unwrap(), report["events_kept"].as_u64().unwrap() + dropped);
    assert!(report["dropped_events"]["erased"].as_u64().unwrap() > 0);
    assert!(report["dropped_events"]["no_consent"].as_u64().unwrap() > 0);
    for file in ["f.hfs", "f.report.json", "f.train.hfs", "f.test.hfs"] {
        assert!(d.join(file).exists(), "{file} was not written");
    }
    let set = hush_features::FeatureSet::load(&d.join("f.hfs")).unwrap();
    assert_eq!(set.n_subjects() as u64, report["subjects"].as_u64().unwrap());
    assert!((0..set.n_subjects()).all(|s| set.by_subject.range(s).len() <= 20));

    // No raw subject id leaves the extractor: not in the feature set, not in the report, not in any log line.
    let feature_bytes = std::fs::read(d.join("f.hfs")).unwrap();
    let report_text = std::fs::read_to_string(d.join("f.report.json")).unwrap();
    assert!(!feature_bytes.windows(5).any(|w| w == b"cust-"));
    assert!(!report_text.contains("cust-"));
    assert!(logs.contains("applied ledger schema migration"), "debug logs were captured");
    assert!(!logs.contains("cust-"), "a raw subject id appeared in the logs");

    // The erased subject: export finds nothing, and the key file is owner-only.
    let out = hush(d, &["export", "--subject", &first_erased]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no data is held about this subject"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(d.join("hush.key")).unwrap().permissions().mode() & 0o777, 0o600);
    }
}

#[test]
fn consent_commands_record_and_answer() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(d, &["init"]);
    ok(
        d,
        &[
            "consent",
            "grant",
            "--subject",
            "ada@example.org",
            "--purpose",
            "training",
            "--notice-version",
            "v3",
            "--proof",
            "rcpt-9",
            "--effective-at",
            "2025-01-01T00:00:00Z",
        ],
    );
    ok(
        d,
        &[
            "consent",
            "withdraw",
            "--subject",
            "ada@example.org",
            "--purpose",
            "training",
            "--effective-at",
            "2025-06-01T00:00:00Z",
        ],
    );
    let status = json(&ok(
        d,
        &[
            "consent",
            "status",
            "--subject",
            "ada@example.org",
            "--purpose",
            "training",
            "--as-of",
            "2025-03-01T00:00:00Z",
            "--json",
        ],
    ));
    assert_eq!(status[0]["state"], "granted");
    assert_eq!(status[0]["decided_by"]["proof_ref"], "rcpt-9");
    let status = json(&ok(d, &["consent", "status", "--subject", "ada@example.org", "--json"]));
    assert_eq!(status[0]["state"], "no_record");
    assert_eq!(status[1]["state"], "withdrawn");
    let history = json(&ok(d, &["consent", "history", "--subject", "ada@example.org", "--json"]));
    assert_eq!(history.as_array().unwrap().len(), 2);
    assert_eq!(history[0]["source"], "cli");

    let out = hush(d, &["consent", "grant", "--subject", "ada@example.org", "--purpose", "marketing"]);
    assert!(!out.status.success());
    assert_eq!(
        stderr(&out).trim_end().lines().last().unwrap(),
        "error: unknown purpose `marketing`: expected one of personalization, training"
    );

    ok(d, &["erase", "--subject", "ada@example.org"]);
    let out = hush(
        d,
        &["consent", "grant", "--subject", "ada@example.org", "--purpose", "training", "--notice-version", "v1"],
    );
    assert!(stderr(&out).contains("pass --after-erasure"), "{}", stderr(&out));
    ok(
        d,
        &[
            "consent",
            "grant",
            "--subject",
            "ada@example.org",
            "--purpose",
            "training",
            "--notice-version",
            "v1",
            "--after-erasure",
        ],
    );
    let db = std::fs::read(d.join("hush.db")).unwrap();
    assert!(!db.windows(15).any(|w| w == b"ada@example.org"));
}

#[test]
fn a_backdated_withdrawal_wins_and_the_future_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(d, &["init"]);
    let subject = ["--subject", "grace@example.org", "--purpose", "training"];
    let with = |command: &'static str, extra: &[&'static str]| {
        let mut args = vec!["consent", command];
        args.extend(subject);
        args.extend(extra);
        args
    };
    // A grant names the notice the subject saw (as the API requires); a withdrawal needs none.
    let out = hush(d, &with("grant", &[]));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("notice_version") && stderr(&out).contains("--notice-version"), "{}", stderr(&out));
    ok(d, &with("grant", &["--notice-version", "2025-04"]));
    let out = ok(d, &with("withdraw", &["--effective-at", "2024-06-01T00:00:00Z"]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("recorded"));
    let status = json(&ok(d, &["consent", "status", "--subject", "grace@example.org", "--json"]));
    assert_eq!(status[1]["state"], "withdrawn", "{status}");
    let status = json(&ok(d, &with("status", &["--as-of", "2025-01-01T00:00:00Z", "--json"])));
    assert_eq!(status[0]["state"], "withdrawn", "the withdrawal widens back to its effective time: {status}");

    let out = hush(d, &with("grant", &["--notice-version", "2025-04", "--effective-at", "2999-01-01T00:00:00Z"]));
    assert!(!out.status.success());
    let message = stderr(&out);
    assert!(message.contains("invalid effective_at: 2999-01-01T00:00:00Z is in the future"), "{message}");
    let history = json(&ok(d, &["consent", "history", "--subject", "grace@example.org", "--json"]));
    assert_eq!(history.as_array().unwrap().len(), 2);

    // The CLI takes the same subject ids as the API and the importers.
    let out = hush(d, &["consent", "grant", "--subject", "a\nb", "--purpose", "training"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("expected a subject id of 1 to 256 bytes without control characters"),
        "{}",
        stderr(&out)
    );

    // An erasure of an id never seen says so and changes nothing.
    let out = hush(d, &["erase", "--subject", "grace@example.org "]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("hush has never seen this subject id"), "{}", stderr(&out));
    let out = ok(d, &["consent", "withdraw", "--subject", "gracie@example.org", "--purpose", "training"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("never seen this subject id"));

    // The store and an export of personal data are readable by their owner only.
    ok(d, &["export", "--subject", "grace@example.org", "--out", "grace.json"]);
    #[cfg(unix)]
    for file in ["hush.db", "grace.json"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.join(file)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{file}");
    }
    // An export to a stream is written into it, not over it.
    let piped = ok(d, &["export", "--subject", "grace@example.org", "--out", "/dev/stdout"]);
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(d.join("grace.json")).unwrap()).unwrap();
    let streamed: serde_json::Value = serde_json::from_slice(&piped.stdout).expect("the export, on standard output");
    assert_eq!(streamed["consent_history"], saved["consent_history"]);
    assert!(std::fs::symlink_metadata("/dev/stdout").unwrap().file_type().is_symlink(), "/dev/stdout is left alone");
    // Standard output appended to a log: the export is added, nothing the
    // log held is lost.
    let log = d.join("app.log");
    std::fs::write(&log, "an earlier line\n").unwrap();
    let appending = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_hush"))
        // Spelled through /proc, it is still this process's standard output.
        .args(["--json", "export", "--subject", "grace@example.org", "--out", "/proc/self/root/dev/stdout"])
        .current_dir(d)
        .env_remove("HUSH_PSEUDONYM_KEY")
        .env_remove("HUSH_DB")
        .env_remove("HUSH_KEY_FILE")
        .stdout(appending)
        .status()
        .unwrap();
    assert!(status.success());
    let logged = std::fs::read_to_string(&log).unwrap();
    let appended = logged.strip_prefix("an earlier line\n").expect("the log keeps its earlier line");
    let appended: serde_json::Value = serde_json::from_str(appended).expect("then the export");
    assert_eq!(appended["consent_history"], saved["consent_history"]);
    assert!(logged.ends_with("}\n"), "a line of its own");
    assert!(std::fs::symlink_metadata("/dev/stdout").unwrap().file_type().is_symlink(), "/dev/stdout is left alone");
}

#[test]
fn malformed_input_names_file_line_and_field_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(d, &["init"]);
    ok(d, &["consent", "grant", "--subject", "u1", "--purpose", "personalization", "--notice-version", "v1"]);
    std::fs::write(
        d.join("bad.csv"),
        "subject_id,item_id,kind,value,timestamp\nu1,a,view,1,1700000000\nu1,b,view,1,17000x\n",
    )
    .unwrap();
    let out = hush(d, &["events", "import", "bad.csv", "--strict"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains(
        "error: bad.csv:3: field `timestamp`: invalid timestamp `17000x`: expected RFC 3339 (e.g. 2026-01-31T12:00:00Z) or integer unix seconds"
    ), "{}", stderr(&out));
    let out = hush(d, &["events", "import", "bad.csv"]);
    assert!(
        stderr(&out).contains("1 of 2 rows are malformed, more than the allowed fraction 0.01; nothing was imported"),
        "{}",
        stderr(&out)
    );
    let export = json(&ok(d, &["export", "--subject", "u1", "--json"]));
    assert_eq!(export["events"].as_array().unwrap().len(), 0, "a failed import stored nothing");
    let out = ok(d, &["events", "import", "bad.csv", "--max-malformed", "0.5", "--json"]);
    assert_eq!(json(&out)["stored"], 1);

    // An explicit flag wins over the config even when it equals the default.
    std::fs::write(d.join("lenient.toml"), "[extract]\nmax_malformed_fraction = 0.5\n").unwrap();
    let extract = ["extract", "--research-data", "--input", "bad.csv", "--config", "lenient.toml", "--out", "f.hfs"];
    ok(d, &extract);
    let out = hush(d, &[&extract[..], &["--max-malformed", "0.01"]].concat());
    assert!(!out.status.success(), "--max-malformed 0.01 overrides the config's 0.5");
    assert!(stderr(&out).contains("more than the allowed fraction 0.01"), "{}", stderr(&out));

    std::fs::write(d.join("bad.toml"), "[extract]\nmax_events_per_subject = 10\npolicy = \"sometimes\"\n").unwrap();
    let out = hush(d, &["extract", "--config", "bad.toml"]);
    let err = stderr(&out);
    assert!(
        err.contains("config bad.toml:3: unknown variant `sometimes`, expected `as-of-snapshot` or `since-grant`"),
        "{err}"
    );
}

/// The MovieLens-shaped fixture the tests use in place of ml-latest-small
/// (whose real checks are `cargo bench --bench movielens`): `hush synth`
/// writes it into `dir/ml`; returns the generator's JSON summary.
fn movielens_shaped(dir: &std::path::Path) -> Value {
    let args = ["--subjects", "610", "--items", "1000", "--mean-events", "25", "--seed", "1"];
    let mut full = vec!["synth", "--out", "ml", "--format", "movielens-csv", "--json", "-q"];
    full.extend(args);
    json(&ok(dir, &full))
}

#[test]
fn synth_writes_movielens_csv_with_the_library_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let summary = movielens_shaped(d);
    assert_eq!(summary["subjects"], 610);
    assert_eq!(summary["items"], 1000);
    assert_eq!(summary["consent_records"], 0);
    let files: Vec<&str> = summary["files"].as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect();
    assert!(files[0].ends_with("ratings.csv") && files[1].ends_with("movies.csv"), "{files:?}");
    // The flags given are the movielens-csv defaults: the same bytes without them.
    let out = ok(d, &["synth", "--out", "ml-defaults", "--format", "movielens-csv", "-q"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("wrote 610 users, 1000 movies,") && text.contains("ratings (MovieLens layout"), "{text}");
    for name in ["ratings.csv", "movies.csv"] {
        let read = |sub: &str| std::fs::read(d.join(sub).join(name)).unwrap();
        assert!(read("ml") == read("ml-defaults"), "{name} differs");
    }
    let ratings = std::fs::read_to_string(d.join("ml/ratings.csv")).unwrap();
    assert_eq!(ratings.lines().next(), Some("userId,movieId,rating,timestamp"));
    assert_eq!(ratings.lines().count() as u64 - 1, summary["events"].as_u64().unwrap());
}

#[test]
fn research_data_extraction_of_movielens_shaped_data() {
    let dir = tempfile::tempdir().unwrap();
    let summary = movielens_shaped(dir.path());
    // What the extraction must report, read from the file itself.
    let ratings = std::fs::read_to_string(dir.path().join("ml/ratings.csv")).unwrap();
    let rows: Vec<Vec<&str>> = ratings.lines().skip(1).map(|l| l.split(',').collect()).collect();
    let users: std::collections::BTreeSet<&str> = rows.iter().map(|r| r[0]).collect();
    let movies: std::collections::BTreeSet<&str> = rows.iter().map(|r| r[1]).collect();
    assert_eq!(rows.len() as u64, summary["events"].as_u64().unwrap());
    let out = ok(
        dir.path(),
        &[
            "extract",
            "--research-data",
            "--input",
            "ml/ratings.csv",
            "--format",
            "movielens-csv",
            "--feedback",
            "explicit",
            "--unbounded",
            "--out",
            "ml.hfs",
            "--json",
        ],
    );
    let report = &json(&out)["report"];
    assert_eq!(report["rows_in"].as_u64().unwrap(), rows.len() as u64);
    assert_eq!(report["subjects"], 610);
    assert_eq!(report["subjects"].as_u64().unwrap(), users.len() as u64);
    assert_eq!(report["items"].as_u64().unwrap(), movies.len() as u64);
    assert_eq!(report["research_data"], true);
    assert!(!dir.path().join("hush.key").exists(), "research extraction needs no key file");
}

#[test]
fn quickstart_runs_the_main_job() {
    let dir = tempfile::tempdir().unwrap();
    let sample = root().join("data/sample");
    let quickstart = || crate::common::sample_store(dir.path());
    let out = quickstart();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("== 4/6 consent-filtered extraction"), "{text}");
    assert!(text.contains("(DP epsilon 4.000, delta 1e-6)") && text.contains("(NON-PRIVATE twin)"), "{text}");
    // The evaluation run (epsilon 4) and the release (epsilon 4) both spent from the store's lifetime cap.
    assert!(text.contains("privacy budget of this store (store-"), "{text}");
    assert!(text.contains("of a lifetime 10 spent by releases and evaluations together"), "{text}");
    for file in ["model.hmdl", "model.card.md", "eval-dp.hmdl", "eval-dp.evaluation.md", "eval-nonprivate.hmdl"] {
        assert!(dir.path().join("qs").join(file).exists(), "{file}");
    }
    // Everything derived from personal data is readable by its owner only.
    #[cfg(unix)]
    for file in [
        "features.hfs",
        "features.train.hfs",
        "extraction-report.json",
        "eval-dp.evaluation.md",
        "eval-nonprivate.evaluation.json",
        "eval-nonprivate.hmdl",
    ] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("qs").join(file)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }
    // The release is servable; the evaluation models are not, and the
    // release's card holds no evaluation.
    let inspect = |m: &str| String::from_utf8_lossy(&ok(dir.path(), &["model", "inspect", m]).stdout).into_owned();
    assert!(inspect("qs/model.hmdl").contains("release: may be served"));
    assert!(inspect("qs/eval-dp.hmdl").contains("NOT servable: it was trained for evaluation"));
    assert!(inspect("qs/eval-nonprivate.hmdl").contains("NOT servable: it is the non-private twin"));
    let card = std::fs::read_to_string(dir.path().join("qs/model.card.md")).unwrap();
    assert!(!card.contains("Recall@") && !card.contains("Customers in training"), "{card}");
    // What the release contains, exactly: the catalogue in sorted order and
    // item-side arrays only, with integer (discrete-noise) counts.
    let dump = json(&ok(dir.path(), &["model", "dump", "qs/model.hmdl", "--json"]));
    let mut catalogue: Vec<String> = std::fs::read_to_string(sample.join("items.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().to_string())
        .collect();
    catalogue.sort();
    let items: Vec<String> =
        dump["items"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
    assert_eq!(items, catalogue);
    let rank = dump["rank"].as_u64().unwrap() as usize;
    let factors = dump["item_factors"].as_array().unwrap();
    assert_eq!(factors.len(), items.len());
    assert!(factors.iter().all(|row| row.as_array().unwrap().len() == rank));
    assert!(dump["popularity"].as_array().unwrap().iter().all(|p| p.as_f64().unwrap().fract() == 0.0));
    let keys: Vec<&String> = dump.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["global_mean", "item_bias", "item_factors", "items", "meta", "popularity", "rank"]);
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("qs/extraction-report.json")).unwrap()).unwrap();
    assert!(report["subjects"].as_u64().unwrap() > 1000);
    assert_eq!(
        report["dropped_subjects"]["erased"].as_u64().unwrap() as usize,
        std::fs::read_to_string(sample.join("erasure_requests.csv")).unwrap().lines().count() - 1
    );
    // Running it again starts from a fresh store and gives the same training set.
    quickstart();
    let again: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("qs/extraction-report.json")).unwrap()).unwrap();
    assert_eq!(report["interactions"], again["interactions"]);
}

#[test]
fn train_evaluate_recommend_and_inspect_on_movielens_shaped_files() {
    let config = root().join("models/movielens.toml");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    movielens_shaped(d);
    let ratings = "ml/ratings.csv";
    let config = config.to_str().unwrap();
    // A fast configuration for the test; the quality bars use models/movielens.toml as it is.
    std::fs::write(
        d.join("fast.toml"),
        std::fs::read_to_string(config)
            .unwrap()
            .replace("rank = 64", "rank = 8")
            .replace("iterations = 15", "iterations = 4"),
    )
    .unwrap();
    let common =
        ["--research-data", "--input", ratings, "--format", "movielens-csv", "--config", "fast.toml", "--json"];

    let mut args = vec!["evaluate"];
    args.extend(common);
    args.extend(["--split", "holdout:0.2:42", "--non-private"]);
    let twin = json(&ok(d, &args));
    for key in ["rmse", "mae", "recall_at_10", "ndcg_at_10", "coverage", "train_seconds"] {
        assert!(twin[key].is_number(), "missing {key} in {twin}");
    }
    assert!(twin["epsilon"].is_null() && twin["private"] == false);
    assert!(twin["baselines"]["dp_popularity_recall_at_10"].is_null(), "no DP baseline for the twin");
    assert!(twin["rmse"].as_f64().unwrap() < twin["baselines"]["item_mean_rmse"].as_f64().unwrap());
    assert!(twin["by_activity"]["light"]["rmse"].is_number());

    let mut args = vec!["train"];
    args.extend(common);
    args.extend(["--split", "holdout:0.2:42", "--epsilon", "8", "--delta", "1e-6", "--out", "dp.hmdl"]);
    let trained = json(&ok(d, &args));
    assert!(trained["privacy"]["dp"]["epsilon"].as_f64().unwrap() <= 8.0);
    // A DP model is compared with DP popularity at its own ε as well.
    let baselines = &trained["metrics"]["baselines"];
    for key in ["dp_popularity_recall_at_10", "dp_popularity_ndcg_at_10"] {
        assert!((0.0..=1.0).contains(&baselines[key].as_f64().unwrap()), "{key} in {baselines}");
    }
    assert!(
        trained["metrics"]["rmse"].as_f64().unwrap()
            < trained["metrics"]["baselines"]["global_mean_rmse"].as_f64().unwrap()
    );

    let card = json(&ok(d, &["model", "inspect", "dp.hmdl", "--json"]));
    assert_eq!(card["meta"]["data"]["research_only"], true);
    assert_eq!(card["meta"]["privacy"]["dp"]["noise_seeded"], false);
    assert!(card["meta"].get("evaluation").is_none(), "evaluation stays out of the model: {card}");
    let evaluation: Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("dp.evaluation.json")).unwrap()).unwrap();
    assert!(evaluation["rating"]["rmse"].is_number());
    let text = String::from_utf8_lossy(&ok(d, &["model", "inspect", "dp.hmdl"]).stdout).into_owned();
    assert!(text.contains("NOT servable: it was trained on research data"), "{text}");
    // The card beside the model: intended use, guarantee in numbers and words, fairness breakdown.
    let card = std::fs::read_to_string(d.join("dp.card.md")).unwrap();
    assert_eq!(trained["card"][0], "dp.card.md");
    for part in [
        "**Research only.** Trained on research data",
        "| ε (achieved; target 8) |",
        "| Contribution bound | at most",
        "**In plain words.** For any set of possible models",
        "## Outside the guarantee",
        "## Known limitations",
    ] {
        assert!(card.contains(part), "{part} missing from the card:\n{card}");
    }
    // The evaluation, with its fairness breakdown, is a private report beside the model.
    let private = std::fs::read_to_string(d.join("dp.evaluation.md")).unwrap();
    for part in ["| customers: light |", "| items: tail |", "not covered by the model's privacy guarantee"] {
        assert!(private.contains(part), "{part} missing from the evaluation report:\n{private}");
    }
    let rmse = trained["metrics"]["rmse"].as_f64().unwrap();
    assert!(private.contains(&format!("| RMSE | {rmse:.4} |")), "the report's RMSE is the evaluation's");
    assert!(!card.contains("| RMSE |"), "the card holds no evaluation");
    let html = String::from_utf8_lossy(&ok(d, &["model", "card", "dp.hmdl", "--html"]).stdout).into_owned();
    assert!(html.starts_with("<!DOCTYPE html>") && html.contains("<h2>Privacy guarantee</h2>"));
    assert_eq!(html, std::fs::read_to_string(d.join("dp.card.html")).unwrap());

    let recs = json(&ok(
        d,
        &[
            "recommend",
            "--model",
            "dp.hmdl",
            "--items",
            "1,2,3,no-such-movie",
            "--values",
            "5,5,5,5",
            "--k",
            "5",
            "--json",
        ],
    ));
    let list = recs["recommendations"].as_array().unwrap();
    assert_eq!(list.len(), 5);
    assert!(list.iter().all(|r| !["1", "2", "3"].contains(&r["item"].as_str().unwrap())));
    assert_eq!(recs["unknown_items"][0], "no-such-movie");

    // Similar items: the model's cosine neighbours, never the item itself or an excluded one.
    let similar =
        json(&ok(d, &["similar", "--model", "dp.hmdl", "--item", "1", "--k", "4", "--exclude", "2", "--json"]));
    let list: Vec<&str> = similar["items"].as_array().unwrap().iter().map(|i| i["item"].as_str().unwrap()).collect();
    assert_eq!(list.len(), 4, "{similar}");
    assert!(!list.contains(&"1") && !list.contains(&"2"), "{list:?}");
    let scores: Vec<f64> =
        similar["items"].as_array().unwrap().iter().map(|i| i["similarity"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    let card = json(&ok(d, &["model", "card", "dp.hmdl", "--json"]));
    assert_eq!(card["model_id"].as_str().map(str::len), Some(16), "{card}");
    assert!(card["card_markdown"].as_str().unwrap().starts_with("# Model card"), "{card}");
    assert_eq!(card["feedback"], "explicit");
    let out = hush(d, &["similar", "--model", "dp.hmdl", "--item", "no-such-movie"]);
    assert!(stderr(&out).contains("--item no-such-movie: the model's catalogue has no such item"), "{}", stderr(&out));

    // Bad input: no privacy choice, a corrupt model file.
    let mut args = vec!["evaluate"];
    args.extend(common);
    let out = hush(d, &args);
    assert!(
        stderr(&out).contains("choose a privacy budget with --epsilon E [--delta D], or --non-private"),
        "{}",
        stderr(&out)
    );
    std::fs::write(d.join("bad.hmdl"), b"HUSHMODL\x01\x00\x00\x00 garbage").unwrap();
    let out = hush(d, &["model", "inspect", "bad.hmdl"]);
    assert!(stderr(&out).contains("truncated hush model file"), "{}", stderr(&out));
}

/// One raw HTTP/1.1 request to 127.0.0.1; returns (status, body).
fn http(port: u16, request: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
    (status, body)
}

#[test]
fn quickstart_ends_by_serving_the_trained_model() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let bind = format!("127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_hush"))
        .args(["quickstart", "--sample", root().join("data/sample").to_str().unwrap()])
        .args(["--config", root().join("models/sample.toml").to_str().unwrap(), "--dir", "qs", "-q", "--bind", &bind])
        .current_dir(dir.path())
        .env_remove("HUSH_PSEUDONYM_KEY")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut key = None;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(start) = line.find("Bearer hush_") {
            key = Some(line[start + 7..].split('\'').next().unwrap().to_string());
            break;
        }
        assert!(std::time::Instant::now() < deadline, "quickstart did not start serving");
    }
    let key = key.expect("the quickstart prints an API key for its curl examples");
    let (status, _) = http(port, "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let (popular_status, body) = http(
        port,
        &format!("GET /v1/recommendations/popular?k=3 HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n"),
    );
    let (refused, _) = http(port, "GET /v1/recommendations/popular HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(status, 200);
    assert_eq!(popular_status, 200, "{body}");
    assert!(body.contains("sku-"), "{body}");
    assert_eq!(refused, 401);
}

#[test]
fn api_keys_are_created_listed_and_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(d, &["init"]);
    let created = json(&ok(d, &["keys", "create", "--name", "shop", "--scopes", "recommend,ingest", "--json"]));
    let key = created["key"].as_str().unwrap().to_string();
    let id = created["record"]["key_id"].as_str().unwrap().to_string();
    assert!(key.starts_with(&format!("hush_{id}_")));
    let listed = json(&ok(d, &["keys", "list", "--json"]));
    assert_eq!(listed[0]["scopes"], serde_json::json!(["recommend", "ingest"]));
    assert!(!String::from_utf8_lossy(&ok(d, &["keys", "list"]).stdout).contains(&key), "list never shows secrets");
    ok(d, &["keys", "revoke", &id]);
    assert!(json(&ok(d, &["keys", "list", "--json"]))[0]["revoked_at"].is_string());
    let out = hush(d, &["keys", "revoke", &id]);
    assert!(stderr(&out).contains(&format!("no active key with id `{id}`")));
    let out = hush(d, &["keys", "create", "--name", "x", "--scopes", "everything"]);
    assert!(stderr(&out).contains("unknown scope `everything`; expected one of recommend, ingest, privacy, admin"));
}

#[test]
fn serve_settings_come_from_flags_env_or_a_checked_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = hush(d, &["serve"]);
    assert!(
        stderr(&out).contains("give the model file with --model, HUSH_MODEL or `model` in the [serve] config"),
        "{}",
        stderr(&out)
    );
    std::fs::write(d.join("serve.toml"), "[serve]\nmodel = \"m.hmdl\"\nmax_k = \"many\"\n").unwrap();
    let out = hush(d, &["serve", "--config", "serve.toml"]);
    assert!(
        stderr(&out).contains("config serve.toml:3: invalid type: string \"many\", expected usize"),
        "{}",
        stderr(&out)
    );
    std::fs::write(d.join("serve.toml"), "[serve]\nmodel = \"missing.hmdl\"\n").unwrap();
    let out = hush(d, &["serve", "--config", "serve.toml"]);
    assert!(stderr(&out).contains("missing.hmdl"), "the model path from the config file is used: {}", stderr(&out));
}

#[test]
fn an_unknown_kernel_switch_is_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let run = |value: &str| {
        Command::new(env!("CARGO_BIN_EXE_hush"))
            .args(["init"])
            .current_dir(dir.path())
            .env_remove("HUSH_DB")
            .env_remove("HUSH_KEY_FILE")
            .env_remove("HUSH_PSEUDONYM_KEY")
            .env("HUSH_KERNEL", value)
            .output()
            .unwrap()
    };
    let out = run("portabel");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(r#"HUSH_KERNEL="portabel": expected `auto` or `portable` (or unset)"#),
        "{}",
        stderr(&out)
    );
    assert!(!dir.path().join("hush.db").exists(), "nothing ran");
    let out = run("portable");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(dir.path().join("hush.db").exists());
}

/// A small synthetic storefront in `d`: consent imported into `hush.db`,
/// events extracted with its catalogue into `f.hfs`.
fn small_store(d: &std::path::Path) {
    ok(d, &["synth", "--out", "shop", "--subjects", "300", "--items", "60", "--seed", "5", "-q"]);
    ok(d, &["init", "-q"]);
    ok(d, &["consent", "import", "shop/consent.csv", "-q"]);
    ok(
        d,
        &["extract", "--input", "shop/events.csv", "--catalogue", "shop/items.csv", "--out", "f.hfs", "-q", "--json"],
    );
}

#[test]
fn the_budget_ledger_caps_what_training_may_spend() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    small_store(d);
    std::fs::write(
        d.join("fast.toml"),
        "[train]\nrank = 4\niterations = 2\nlambda = 5.0\nmax_items_per_subject = 10\n\n[train_dp]\nrank = 2\n",
    )
    .unwrap();
    let train = |epsilon: &str, out: &str, extra: &[&str]| {
        let mut args = vec!["train", "--features", "f.hfs", "--config", "fast.toml", "--out", out, "-q"];
        if epsilon == "non-private" {
            args.push("--non-private");
        } else {
            args.extend(["--epsilon", epsilon]);
        }
        args.extend(extra);
        hush(d, &args)
    };
    ok(d, &["budget", "set-cap", "--epsilon", "3"]);

    // zCDP composes by adding rho: one run of epsilon 2.5 fits under a
    // lifetime cap of 3, a second does not, and nothing is written for it.
    assert!(train("2.5", "a.hmdl", &[]).status.success());
    // A model file is replaced only with --force, checked before any budget is spent.
    let before = std::fs::read(d.join("a.hmdl")).unwrap();
    let kept = train("0.1", "a.hmdl", &[]);
    assert!(
        stderr(&kept).contains("a.hmdl exists (it may be the model being served): pass --force"),
        "{}",
        stderr(&kept)
    );
    assert_eq!(std::fs::read(d.join("a.hmdl")).unwrap(), before);
    let refused = train("2.5", "b.hmdl", &[]);
    assert!(!refused.status.success());
    let message = stderr(&refused);
    assert!(message.contains("would exceed the lifetime budget of this store (store-"), "{message}");
    assert!(!d.join("b.hmdl").exists());
    // A larger delta cannot buy a smaller epsilon.
    let refused = train("0.5", "x.hmdl", &["--delta", "1e-3"]);
    assert!(stderr(&refused).contains("larger than this store's lifetime delta"), "{}", stderr(&refused));
    // Raising the cap lets every model reveal more: it takes --force.
    let out = hush(d, &["budget", "set-cap", "--epsilon", "5"]);
    assert!(stderr(&out).contains("pass --force to do it"), "{}", stderr(&out));
    // Evaluations spend from the same lifetime cap: an evaluation run cannot sidestep it.
    let refused = train("2.5", "e.hmdl", &["--purpose", "evaluation"]);
    assert!(stderr(&refused).contains("would exceed the lifetime budget of this store"), "{}", stderr(&refused));
    // The non-private twin is recorded, on the evaluation budget only.
    assert!(train("non-private", "twin.hmdl", &[]).status.success());
    let out = train("non-private", "c.hmdl", &["--purpose", "release"]);
    assert!(stderr(&out).contains("can never be released (it is non-private)"), "{}", stderr(&out));

    let budget = json(&ok(d, &["budget", "show", "--json"]));
    let rows = budget.as_array().unwrap();
    let release = rows.iter().find(|r| r["purpose"] == "release").unwrap();
    assert!(release["dataset"].as_str().unwrap().starts_with("store-"), "the budget is the store's: {release}");
    assert_eq!(release["private_runs"], 1);
    let spent = release["spent_epsilon"].as_f64().unwrap();
    assert!(spent > 2.4 && spent <= 2.5, "one run of epsilon 2.5 is spent: {spent}");
    assert!(release["remaining_rho"].as_f64().unwrap() > 0.0);
    let evaluation = rows.iter().find(|r| r["purpose"] == "evaluation").unwrap();
    assert_eq!(evaluation["non_private_runs"], 1);

    let runs = json(&ok(d, &["budget", "runs", "--json"]));
    let committed = &runs.as_array().unwrap()[0];
    assert_eq!(committed["state"], "committed");
    let card = json(&ok(d, &["model", "inspect", "a.hmdl", "--json"]));
    assert_eq!(committed["model_id"], card["meta"]["model_id"]);
    // DP runs take [train_dp] over [train]; the twin keeps [train].
    assert_eq!(card["rank"], 2);
    assert_eq!(json(&ok(d, &["model", "inspect", "twin.hmdl", "--json"]))["rank"], 4);
    std::fs::write(d.join("typo.toml"), "[train_dp]\nrnak = 3\n").unwrap();
    let out = hush(d, &["train", "--features", "f.hfs", "--config", "typo.toml", "--epsilon", "1", "--out", "t.hmdl"]);
    assert!(stderr(&out).contains("[train_dp]: unknown field `rnak`"), "{}", stderr(&out));

    // A smaller run still fits in what is left; lowering the cap below the
    // spent amount needs --force.
    assert!(train("1", "d.hmdl", &[]).status.success());
    let out = hush(d, &["budget", "set-cap", "--epsilon", "1"]);
    assert!(stderr(&out).contains("pass --force"), "{}", stderr(&out));
    // `hush evaluate` on the store's data is recorded on its evaluation budget.
    let before = json(&ok(d, &["budget", "runs", "--json"])).as_array().unwrap().len();
    let out = ok(
        d,
        &[
            "evaluate",
            "--features",
            "f.hfs",
            "--config",
            "fast.toml",
            "--split",
            "holdout:0.2:1",
            "--non-private",
            "--k",
            "5",
            "-q",
        ],
    );
    // Text output names the metrics at the k asked for.
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("recall_at_5") && text.contains("popularity recall@5") && !text.contains("@10"), "{text}");
    let runs = json(&ok(d, &["budget", "runs", "--json"]));
    let last = runs.as_array().unwrap().last().unwrap().clone();
    assert_eq!((runs.as_array().unwrap().len(), last["purpose"].as_str()), (before + 1, Some("evaluation")));
}

/// Sends `signal` (e.g. `-HUP`) to a process with the system's `kill`.
fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill").args([signal, &pid.to_string()]).status().unwrap();
    assert!(status.success(), "kill {signal} {pid}");
}

/// The model id the server at `port` serves now.
fn served_model_id(port: u16, key: &str) -> String {
    let request =
        format!("GET /v1/model HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n");
    let (status, body) = http(port, &request);
    assert_eq!(status, 200, "{body}");
    let json: Value = serde_json::from_str(body.split("\r\n\r\n").last().unwrap()).unwrap();
    json["model_id"].as_str().unwrap().to_string()
}

#[test]
fn serve_reloads_on_sighup_refuses_bad_files_and_stops_gracefully_on_sigterm() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    crate::common::sample_store(d);
    let root_config = root().join("models/sample.toml").display().to_string();
    let store = ["--db", "qs/hush.db", "--key-file", "qs/hush.key"];
    let mut args = store.to_vec();
    args.extend(["keys", "create", "--name", "ops", "--scopes", "admin"]);
    let key = String::from_utf8(ok(d, &args).stdout).unwrap().trim().to_string();
    // A second release to reload to, from the same store and its budget.
    let mut args = store.to_vec();
    args.extend(["train", "--features", "qs/features.hfs", "--epsilon", "2", "--out", "qs/model2.hmdl", "-q"]);
    args.extend(["--config", root_config.as_str()]);
    ok(d, &args);
    let ids: Vec<String> = ["qs/model.hmdl", "qs/model2.hmdl"]
        .iter()
        .map(|m| json(&ok(d, &["model", "inspect", m, "--json"]))["meta"]["model_id"].as_str().unwrap().to_string())
        .collect();
    std::fs::copy(d.join("qs/model.hmdl"), d.join("serving.hmdl")).unwrap();

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let bind = format!("127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_hush"))
        .args(store)
        .args(["serve", "--model", "serving.hmdl", "--bind", &bind])
        .current_dir(d)
        .env_remove("HUSH_PSEUDONYM_KEY")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let wait_until = |what: &str, ready: &dyn Fn() -> bool| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !ready() {
            assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };
    wait_until("the server", &|| std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    assert_eq!(served_model_id(port, &key), ids[0]);

    // SIGHUP reloads the file: the new model is served.
    std::fs::copy(d.join("qs/model2.hmdl"), d.join("serving.hmdl")).unwrap();
    signal(pid, "-HUP");
    wait_until("the reload", &|| served_model_id(port, &key) == ids[1]);
    // A model that is not a release (the non-private twin) is refused; the current one keeps serving.
    std::fs::copy(d.join("qs/eval-nonprivate.hmdl"), d.join("serving.hmdl")).unwrap();
    signal(pid, "-HUP");
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(served_model_id(port, &key), ids[1]);
    // A corrupt file is refused and the current model keeps serving.
    std::fs::write(d.join("serving.hmdl"), b"HUSHMODL not a model").unwrap();
    signal(pid, "-HUP");
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(served_model_id(port, &key), ids[1]);

    // SIGTERM with a request in flight: it is answered, then the server exits.
    let body = r#"{"events":[{"subject_id":"late","item_id":"sku-000001","kind":"view"}]}"#;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let head = format!(
        "POST /v1/events HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&body.as_bytes()[..10]).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    signal(pid, "-TERM");
    std::thread::sleep(std::time::Duration::from_millis(300));
    stream.write_all(&body.as_bytes()[10..]).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "the request in flight was answered: {response}");
    let status = child.wait().unwrap();
    assert!(status.success(), "the server exits cleanly on SIGTERM: {status:?}");
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(stderr.contains(&format!("SIGHUP: now serving model {}", ids[1])), "{stderr}");
    assert!(stderr.contains("SIGHUP: model refused, the previous one keeps serving"), "{stderr}");
    assert!(stderr.contains("stopped: the requests in flight were answered"), "{stderr}");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "nothing listens after shutdown");
}

#[test]
fn audit_bounds_epsilon_below_the_claim_and_has_power_without_privacy() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    small_store(d);
    std::fs::write(
        d.join("fast.toml"),
        "[train]\nrank = 4\niterations = 2\nlambda = 5.0\nmax_items_per_subject = 10\n",
    )
    .unwrap();
    let audit = |privacy: &[&str], extra: &[&str]| {
        let mut args =
            vec!["audit", "--features", "f.hfs", "--config", "fast.toml", "--canaries", "200", "-q", "--json"];
        args.extend(privacy);
        args.extend(extra);
        json(&ok(d, &args))
    };

    for epsilon in ["1", "8"] {
        let result = audit(&["--epsilon", epsilon, "--seed", "3", "--noise-seed", "4"], &["--out", "audit.json"]);
        let claimed = result["claimed_epsilon"].as_f64().unwrap();
        let bound = result["empirical_epsilon_lower_bound"].as_f64().unwrap();
        assert!(claimed > 0.0 && claimed <= epsilon.parse::<f64>().unwrap(), "{result}");
        assert!(bound >= 0.0 && bound <= claimed, "the audit contradicts the guarantee: {result}");
        assert_eq!(result["delta"], 1e-6);
        assert_eq!(result["confidence"], 0.95);
        assert_eq!(result["canaries"], 200);
        assert_eq!(result["guesses"], 100);
        assert!(result["correct"].as_u64().unwrap() <= 100);
        let written: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(d.join("audit.json")).unwrap()).unwrap();
        assert_eq!(written, result);
    }

    // Without noise the canaries' counts give them away: 100 correct of 100
    // guesses proves epsilon > 3.4 at 95% confidence, far beyond what an
    // epsilon-1 model could let anyone show (at most 1).
    let twin = audit(&["--non-private", "--seed", "3"], &["--guesses", "100"]);
    assert_eq!(twin["claimed_epsilon"], serde_json::Value::Null);
    assert_eq!(twin["correct"], 100, "{twin}");
    assert!(twin["empirical_epsilon_lower_bound"].as_f64().unwrap() > 3.0, "{twin}");

    // The runs trained on store data: recorded on its evaluation budget only.
    let budget = json(&ok(d, &["budget", "show", "--json"]));
    let rows = budget.as_array().unwrap();
    assert!(
        rows.iter().filter(|r| r["purpose"] == "release").all(|r| r["private_runs"] == 0 && r["spent_rho"] == 0.0),
        "{budget}"
    );
    let evaluation = rows.iter().find(|r| r["purpose"] == "evaluation").unwrap();
    assert_eq!(evaluation["private_runs"], 2);
    assert_eq!(evaluation["non_private_runs"], 1);

    let out = hush(d, &["audit", "--features", "f.hfs", "--config", "fast.toml", "--epsilon", "1", "--guesses", "7"]);
    assert!(stderr(&out).contains("--guesses 7: must be even"), "{}", stderr(&out));
    let out =
        hush(d, &["audit", "--features", "f.hfs", "--config", "fast.toml", "--epsilon", "1", "--canary-items", "11"]);
    assert!(stderr(&out).contains("max_items_per_subject (10)"), "{}", stderr(&out));
}

/// Text output speaks the JSON's names, each OS error is said once, a reader
/// that closes the pipe ends the command quietly, and `--help` lists the
/// global options apart.
#[test]
fn text_output_is_plain_and_pipes_close_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // No store is created by accident: a mistyped --db is an error.
    let out = hush(d, &["consent", "status", "--subject", "nobody@example.org"]);
    assert!(
        stderr(&out).contains("store hush.db does not exist: check --db, or create it with `hush init` (or --create)"),
        "{}",
        stderr(&out)
    );
    assert!(!d.join("hush.db").exists() && !d.join("hush.key").exists());
    let init = json(&ok(d, &["init", "--json"]));
    assert_eq!((&init["store_created"], &init["key_created"]), (&Value::Bool(true), &Value::Bool(true)), "{init}");
    let again = json(&ok(d, &["init", "--json"]));
    assert_eq!(again["store_created"], false, "init is idempotent: {again}");
    let out = ok(d, &["consent", "status", "--subject", "nobody@example.org"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("personalization: no_record") && !text.contains("NoRecord"), "{text}");

    let out = hush(d, &["consent", "import", "missing.csv"]);
    let err = stderr(&out);
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");

    // The reader is gone before hush writes a byte: the write fails with EPIPE.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_hush"))
        .args(["consent", "status", "--subject", "nobody@example.org"])
        .current_dir(d)
        .env_remove("HUSH_DB")
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    assert!(!String::from_utf8_lossy(&status.stderr).contains("panicked"));

    let help = String::from_utf8_lossy(&ok(d, &["consent", "status", "--help"]).stdout).to_string();
    let global = help.find("Global options:").expect("a Global options section");
    assert!(help[global..].contains("--db") && !help[..global].contains("--db"), "{help}");
}

/// Issue 17: re-importing an events file stores nothing twice, and the
/// summary says how many rows were already held.
#[test]
fn reimporting_events_is_idempotent_and_counts_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(d, &["init"]);
    ok(d, &["consent", "grant", "--subject", "u1", "--purpose", "training", "--notice-version", "v1"]);
    std::fs::write(
        d.join("events.csv"),
        "subject_id,item_id,kind,value,timestamp\nu1,a,view,1,1700000000\nu1,b,view,1,1700000001\nu1,b,view,1,1700000001\nu2,a,view,1,1700000000\n",
    )
    .unwrap();
    let first = json(&ok(d, &["events", "import", "events.csv", "--json"]));
    assert_eq!((first["stored"].as_u64(), first["duplicates"].as_u64()), (Some(2), Some(1)), "{first}");
    assert_eq!(first["dropped_no_consent"].as_u64(), Some(1));
    let again = json(&ok(d, &["events", "import", "events.csv", "--json"]));
    assert_eq!((again["stored"].as_u64(), again["duplicates"].as_u64()), (Some(0), Some(3)), "{again}");
    let text = String::from_utf8(ok(d, &["events", "import", "events.csv"]).stdout).unwrap();
    assert!(text.contains("0 events stored, 3 already held"), "{text}");
    let export = json(&ok(d, &["export", "--subject", "u1"]));
    assert_eq!(export["events"].as_array().unwrap().len(), 2, "{export}");
}

/// A Parquet file of text columns.
fn write_parquet(path: &std::path::Path, columns: &[(&str, Vec<Option<&str>>)]) {
    use std::sync::Arc;
    let batch = arrow_array::RecordBatch::try_from_iter(columns.iter().map(|(name, values)| {
        (name.to_string(), Arc::new(arrow_array::StringArray::from(values.clone())) as arrow_array::ArrayRef)
    }))
    .unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

/// Issue 17: consent records and events import from Parquet (known by the
/// extension), and a source's event ids make a retry store nothing twice,
/// whatever the format of the retry.
#[test]
fn parquet_imports_and_event_ids_make_retries_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(d, &["init"]);
    write_parquet(
        &d.join("consent.parquet"),
        &[
            ("subject_id", vec![Some("u1"), Some("u2")]),
            ("purpose", vec![Some("training"), Some("personalization")]),
            ("granted", vec![Some("true"), Some("true")]),
            ("effective_at", vec![Some("2024-01-01T00:00:00Z"), Some("1704067200")]),
            ("notice_version", vec![Some("v1"), Some("v1")]),
        ],
    );
    let consent = json(&ok(d, &["consent", "import", "consent.parquet", "--json"]));
    assert_eq!((consent["rows"].as_u64(), consent["stored"].as_u64()), (Some(2), Some(2)), "{consent}");
    let again = json(&ok(d, &["consent", "import", "consent.parquet", "--json"]));
    assert_eq!((again["stored"].as_u64(), again["duplicates"].as_u64()), (Some(0), Some(2)), "{again}");

    // Two events of u1 with the same content but their own order lines are
    // two events; u3 has no consent.
    write_parquet(
        &d.join("events.parquet"),
        &[
            ("subject_id", vec![Some("u1"), Some("u1"), Some("u2"), Some("u3")]),
            ("item_id", vec![Some("a"), Some("a"), Some("b"), Some("a")]),
            ("kind", vec![Some("purchase"), Some("purchase"), Some("view"), Some("view")]),
            ("timestamp", vec![Some("1700000000"), Some("1700000000"), Some("1700000001"), Some("1700000002")]),
            ("event_id", vec![Some("order-1/1"), Some("order-1/2"), None, Some("x")]),
        ],
    );
    let first = json(&ok(d, &["events", "import", "events.parquet", "--json"]));
    assert_eq!(
        (first["stored"].as_u64(), first["duplicates"].as_u64(), first["dropped_no_consent"].as_u64()),
        (Some(3), Some(0), Some(1)),
        "{first}"
    );
    // The storefront retries from its CSV export: the same ids, one of them
    // now with other content (a conflict: the stored event stands).
    std::fs::write(
        d.join("retry.csv"),
        "subject_id,item_id,kind,value,timestamp,event_id\n\
         u1,a,purchase,1,1700000000,order-1/1\n\
         u1,z,purchase,1,1700000000,order-1/2\n\
         u2,b,view,1,1700000001,\n",
    )
    .unwrap();
    let retry = json(&ok(d, &["events", "import", "retry.csv", "--max-malformed", "0.5", "--json"]));
    assert_eq!(
        (retry["stored"].as_u64(), retry["duplicates"].as_u64(), retry["malformed"].as_u64()),
        (Some(0), Some(2), Some(1)),
        "{retry}"
    );
    let error = &retry["errors"][0];
    assert_eq!(
        (error["line"].as_u64(), error["field"].as_str()),
        (Some(3), Some("event_id")),
        "the file's line: {error}"
    );
    assert!(error["message"].as_str().unwrap().contains("other content"), "{error}");
    let export = json(&ok(d, &["export", "--subject", "u1"]));
    let items: Vec<&str> = export["events"].as_array().unwrap().iter().map(|e| e["item"].as_str().unwrap()).collect();
    assert_eq!(items, ["a", "a"], "{export}");

    // --format overrides the extension; a Parquet file is no CSV.
    let out = hush(d, &["events", "import", "events.parquet", "--format", "csv", "--strict"]);
    assert!(!out.status.success());
    let out = hush(d, &["events", "import", "retry.csv", "--format", "parquet"]);
    let message = stderr(&out);
    assert!(message.contains("retry.csv:0: not a readable Parquet file"), "{message}");
}

/// The pseudonym a subject id has in the store of `d` (its hush.key).
fn pseudonym_in(d: &std::path::Path, id: &str) -> String {
    hush_consent::PseudonymKey::from_env_or_file(&d.join("hush.key")).unwrap().pseudonymize(id).to_hex()
}

/// Rows of a batch CSV as (subject, rank, item, title, category).
fn batch_rows(path: &std::path::Path) -> Vec<(String, u32, String, String, String)> {
    let mut reader = csv::Reader::from_path(path).unwrap();
    let headers = reader.headers().unwrap().clone();
    assert_eq!(
        headers.iter().collect::<Vec<_>>(),
        ["subject_pseudonym", "rank", "item", "title", "category", "score", "personalized"]
    );
    reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            (r[0].to_string(), r[1].parse().unwrap(), r[2].to_string(), r[3].to_string(), r[4].to_string())
        })
        .collect()
}

#[test]
fn a_catalogue_in_the_store_titles_batch_recommendations_of_consenting_subjects_only() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(d, &["synth", "--out", "shop", "--subjects", "300", "--items", "60", "--seed", "5", "-q"]);
    ok(d, &["init", "-q"]);
    ok(d, &["consent", "import", "shop/consent.csv", "-q"]);
    ok(d, &["events", "import", "shop/events.csv", "-q"]);
    ok(d, &["erase", "--requests", "shop/erasure_requests.csv", "-q"]);

    // A catalogue with titles, imported twice (nothing changes), then with one title changed.
    let synth_items = std::fs::read_to_string(d.join("shop/items.csv")).unwrap();
    let titled = |changed: &str| -> String {
        let mut text = String::from("item_id,title,category,colour\n");
        for line in synth_items.lines().skip(1) {
            let (id, category) = line.split_once(',').unwrap();
            let title = if id == changed { "Renamed \"thing\", new".to_string() } else { format!("Title of {id}") };
            text += &format!("{id},\"{}\",{category},blue\n", title.replace('"', "\"\""));
        }
        text
    };
    std::fs::write(d.join("items.csv"), titled("")).unwrap();
    let first = json(&ok(d, &["items", "import", "items.csv", "--json"]));
    assert_eq!(first["report"], serde_json::json!({ "inserted": 60, "updated": 0, "unchanged": 0 }), "{first}");
    let again = json(&ok(d, &["items", "import", "items.csv", "--json"]));
    assert_eq!(again["report"], serde_json::json!({ "inserted": 0, "updated": 0, "unchanged": 60 }), "{again}");
    std::fs::write(d.join("items.csv"), titled("sku-000003")).unwrap();
    let changed = json(&ok(d, &["items", "import", "items.csv", "--json"]));
    assert_eq!(changed["report"], serde_json::json!({ "inserted": 0, "updated": 1, "unchanged": 59 }), "{changed}");
    // A malformed file names file, line and column, and changes nothing.
    std::fs::write(d.join("bad.csv"), "item_id,title,category\nsku-x,ok,a\nsku-y,bad,\"a,b\"\n").unwrap();
    let out = hush(d, &["items", "import", "bad.csv"]);
    assert!(stderr(&out).contains("bad.csv:3: field `category`"), "{}", stderr(&out));
    let listed = String::from_utf8(ok(d, &["items", "list"]).stdout).unwrap();
    assert_eq!(listed.lines().count(), 60);
    assert!(listed.contains("Renamed \"thing\", new") && !listed.contains("sku-x"), "{listed}");

    // Extraction from the store takes the store's catalogue as the item universe.
    std::fs::write(d.join("events-plus.csv"), {
        let mut text = std::fs::read_to_string(d.join("shop/events.csv")).unwrap();
        let copies: Vec<String> = text
            .lines()
            .skip(1)
            .take(500)
            .map(|event| {
                let (subject, rest) = event.split_once(',').unwrap();
                let (_, rest) = rest.split_once(',').unwrap();
                format!("{subject},not-in-the-catalogue,{rest}\n")
            })
            .collect();
        text += &copies.concat();
        text
    })
    .unwrap();
    let out = ok(d, &["extract", "--input", "events-plus.csv", "--out", "f.hfs", "--json", "-q"]);
    let report = &json(&out)["report"];
    assert_eq!(report["catalogue"], "the store's catalogue (60 items)", "{report}");
    assert_eq!(report["items"], 60, "{report}");
    assert!(report["dropped_events"]["unknown_item"].as_u64().unwrap() >= 1, "{report}");
    std::fs::write(d.join("fast.toml"), "[train]\nrank = 4\niterations = 2\nlambda = 5.0\n").unwrap();
    ok(d, &["train", "--features", "f.hfs", "--config", "fast.toml", "--epsilon", "4", "--out", "m.hmdl", "-q"]);

    // Batch recommendations: the subjects with personalization consent now get rows, titled.
    let batch = |out: &str, extra: &[&str]| -> serde_json::Value {
        let mut args = vec!["recommend", "--all", "--model", "m.hmdl", "--k", "5", "--out", out, "--json", "-q"];
        args.extend(extra);
        json(&ok(d, &args))
    };
    let before = batch("before.csv", &[]);
    let rows = batch_rows(&d.join("before.csv"));
    let refused: u64 = before["refused"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(before["scored"].as_u64().unwrap() + refused, before["subjects"].as_u64().unwrap(), "{before}");
    assert!(before["refused"]["no_record"].as_u64().unwrap() > 0, "some subjects only consented to training: {before}");
    assert_eq!(rows.len() as u64, before["rows"].as_u64().unwrap());
    assert_eq!(rows.len() as u64, 5 * before["scored"].as_u64().unwrap(), "k rows per scored subject");
    for (_, rank, item, title, category) in &rows {
        assert!((1..=5).contains(rank));
        let expected =
            if item == "sku-000003" { "Renamed \"thing\", new".to_string() } else { format!("Title of {item}") };
        assert_eq!(title, &expected);
        assert!(synth_items.contains(&format!("{item},{category}")), "{item} {category}");
    }

    // The same run as Parquet, read back with the parquet crate: the same rows.
    let as_parquet = batch("before.parquet", &[]);
    assert_eq!(as_parquet["format"], "parquet");
    assert_eq!(as_parquet["rows"], before["rows"]);
    let file = std::fs::File::open(d.join("before.parquet")).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap();
    let mut from_parquet = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        let text = |name: &str| {
            batch.column_by_name(name).unwrap().as_any().downcast_ref::<arrow_array::StringArray>().unwrap().clone()
        };
        let (subject, item, title, category) =
            (text("subject_pseudonym"), text("item"), text("title"), text("category"));
        let rank = batch.column_by_name("rank").unwrap();
        let rank = rank.as_any().downcast_ref::<arrow_array::UInt32Array>().unwrap();
        for r in 0..batch.num_rows() {
            let value = |a: &arrow_array::StringArray| a.value(r).to_string();
            from_parquet.push((value(&subject), rank.value(r), value(&item), value(&title), value(&category)));
        }
    }
    assert_eq!(from_parquet, rows);

    // Who has personalization consent now, independently of the batch code.
    let consent = std::fs::read_to_string(d.join("shop/consent.csv")).unwrap();
    let ledger = hush_consent::Ledger::open(d.join("hush.db")).unwrap();
    let now = hush_consent::Timestamp::now();
    let subjects: std::collections::BTreeSet<&str> =
        consent.lines().skip(1).map(|l| l.split(',').next().unwrap()).collect();
    let scored: std::collections::BTreeSet<String> = rows.iter().map(|r| r.0.clone()).collect();
    let mut granted_with_history = None;
    for id in &subjects {
        let pseudonym = hush_consent::PseudonymKey::from_env_or_file(&d.join("hush.key")).unwrap().pseudonymize(id);
        let granted = ledger.status(&pseudonym, hush_consent::Purpose::Personalization, now).unwrap().is_granted();
        assert_eq!(scored.contains(&pseudonym.to_hex()), granted, "subject {id}: granted {granted}");
        if granted && !ledger.events_of(&pseudonym).unwrap().is_empty() {
            granted_with_history.get_or_insert(*id);
        }
    }
    drop(ledger);
    let requests = std::fs::read_to_string(d.join("shop/erasure_requests.csv")).unwrap();
    for id in requests.lines().skip(1).map(|l| l.split(',').next().unwrap()) {
        assert!(!scored.contains(&pseudonym_in(d, id)), "an erased subject was scored");
    }

    // A withdrawal: the subject gets no row the next run, counted as withdrawn.
    let withdrawn = granted_with_history.expect("someone consented and has events");
    ok(d, &["consent", "withdraw", "--subject", withdrawn, "--purpose", "personalization", "-q"]);
    let after = batch("after.csv", &[]);
    let rows_after = batch_rows(&d.join("after.csv"));
    assert_eq!(after["scored"].as_u64().unwrap(), before["scored"].as_u64().unwrap() - 1, "{after}");
    let withdrawals = |report: &serde_json::Value| report["refused"]["withdrawn"].as_u64().unwrap_or(0);
    assert_eq!(withdrawals(&after), withdrawals(&before) + 1, "{after}");
    assert!(!rows_after.iter().any(|r| r.0 == pseudonym_in(d, withdrawn)));
    assert!(rows.iter().any(|r| r.0 == pseudonym_in(d, withdrawn)));

    // A category filter, and no raw subject id in the output or the logs.
    let category = rows[0].4.clone();
    let out = hush(d, &["recommend", "--all", "--model", "m.hmdl", "--out", "cat.csv", "--category", &category]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("cust-"), "a raw subject id appeared in the logs");
    let filtered = batch_rows(&d.join("cat.csv"));
    assert!(!filtered.is_empty() && filtered.iter().all(|r| r.4 == category));
    assert!(!std::fs::read_to_string(d.join("before.csv")).unwrap().contains("cust-"));
    // A catalogue from Parquet with the CSV's columns and values: every item unchanged.
    {
        use std::sync::Arc;
        let mut reader = csv::Reader::from_path(d.join("items.csv")).unwrap();
        let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
        let column = |c: usize| -> arrow_array::ArrayRef {
            Arc::new(arrow_array::StringArray::from_iter_values(records.iter().map(|r| r[c].to_string())))
        };
        let batch = arrow_array::RecordBatch::try_from_iter(
            ["item_id", "title", "category", "colour"].iter().enumerate().map(|(c, name)| (*name, column(c))),
        )
        .unwrap();
        let file = std::fs::File::create(d.join("items.parquet")).unwrap();
        let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
    }
    let from_parquet = json(&ok(d, &["items", "import", "items.parquet", "--json"]));
    assert_eq!(from_parquet["report"], serde_json::json!({ "inserted": 0, "updated": 0, "unchanged": 60 }));
    let out = hush(d, &["recommend", "--all", "--model", "m.hmdl", "--out", "recs.txt"]);
    assert!(stderr(&out).contains("--format csv|parquet"), "{}", stderr(&out));
}

/// Issue 17: `quickstart --json` answers with one JSON document saying what
/// each step did, and prints nothing else on stdout.
#[test]
fn quickstart_json_is_one_document_of_what_it_did() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = quickstart(d, &["--json"]);
    let summary: Value = serde_json::from_slice(&out.stdout).expect("stdout is exactly one JSON document");
    let consent = &summary["consent_import"];
    assert!(consent["stored"].as_u64().unwrap() > 0, "{summary}");
    assert!(summary["event_import"]["stored"].as_u64().unwrap() > 0, "{summary}");
    assert!(summary["erasure"]["subjects"].as_u64().unwrap() > 0, "{summary}");
    // The extraction, as its report file says.
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("qs/extraction-report.json")).unwrap()).unwrap();
    assert_eq!(summary["extraction"], report);
    for arm in ["dp", "non_private"] {
        let recall = summary["evaluation"][arm]["metrics"]["recall_at_10"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&recall), "{arm}: {recall}");
    }
    assert_eq!(summary["evaluation"]["dp"]["metrics"]["private"], true);
    // The release is the model file written, with its guarantee.
    let inspected = json(&ok(d, &["model", "inspect", "qs/model.hmdl", "--json"]));
    assert_eq!(summary["release"]["inspect"]["meta"]["model_id"], inspected["meta"]["model_id"]);
    assert!(summary["release"]["inspect"]["meta"]["privacy"]["dp"]["epsilon"].as_f64().unwrap() <= 4.0 + 1e-9);
}

/// Issue 17: offline recommendations and similar items carry the store's
/// catalogue titles and categories, as the API's do; with no store, none.
#[test]
fn offline_answers_carry_the_store_catalogues_titles() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sample_store(d);
    let store = ["--db", "qs/hush.db", "--key-file", "qs/hush.key"];
    let items = root().join("data/sample/items.csv");
    ok(d, &[&store[..], &["items", "import", items.to_str().unwrap()]].concat());
    let catalogue: std::collections::HashMap<String, String> = csv::Reader::from_path(&items)
        .unwrap()
        .deserialize::<std::collections::HashMap<String, String>>()
        .map(|row| {
            let row = row.unwrap();
            (row["item_id"].clone(), row["category"].clone())
        })
        .collect();
    let recommend = ["recommend", "--model", "qs/model.hmdl", "--items", "sku-000001,sku-000042", "--k", "5", "--json"];
    let answer = json(&ok(d, &[&store[..], &recommend[..]].concat()));
    let list = answer["recommendations"].as_array().unwrap();
    assert_eq!(list.len(), 5, "{answer}");
    // The sample's catalogue has categories and no titles.
    for r in list {
        assert_eq!(r["category"].as_str(), Some(catalogue[r["item"].as_str().unwrap()].as_str()), "{r}");
        assert!(r["title"].is_null(), "{r}");
    }
    let similar = ["similar", "--model", "qs/model.hmdl", "--item", "sku-000001", "--k", "3", "--json"];
    let answer = json(&ok(d, &[&store[..], &similar[..]].concat()));
    for r in answer["items"].as_array().unwrap() {
        assert_eq!(r["category"].as_str(), Some(catalogue[r["item"].as_str().unwrap()].as_str()), "{r}");
    }
    let text = String::from_utf8(ok(d, &[&store[..], &recommend[..recommend.len() - 1]].concat()).stdout).unwrap();
    let first = &list[0];
    assert!(text.contains(&format!("{}  ", first["item"].as_str().unwrap())), "{text}");
    assert!(text.contains(&format!("({})", first["category"].as_str().unwrap())), "{text}");
    // A model file alone (no store here): ids and scores, titles null, no error.
    let bare = json(&ok(
        d,
        &["--db", "nowhere.db", "recommend", "--model", "qs/model.hmdl", "--items", "sku-000001", "--json"],
    ));
    assert!(bare["recommendations"][0]["category"].is_null(), "{bare}");
    assert!(!d.join("nowhere.db").exists(), "looking for titles creates no store");
}
