//! `hush sweep` end to end: the real binary on the bundled sample, the report
//! checked against results.json, resumption, and the page rendered in a real
//! headless Chromium that must make no network request.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use crate::common::{hush, json, ok, root, sample_store};
use serde_json::Value;

fn sweep(dir: &Path, epsilons: &str, extra: &[&str]) -> Output {
    let config = root().join("models/sample.toml");
    let mut args = vec![
        "--db",
        "qs/hush.db",
        "--key-file",
        "qs/hush.key",
        "sweep",
        "--config",
        config.to_str().unwrap(),
        "--features",
        "qs/features.hfs",
        "--extraction-report",
        "qs/extraction-report.json",
        "--epsilons",
        epsilons,
        "--seeds",
        "2",
        "--out",
        "report",
        "--json",
        "-q",
    ];
    args.extend(extra);
    hush(dir, &args)
}

fn cell_mtimes(dir: &Path) -> BTreeMap<String, std::time::SystemTime> {
    std::fs::read_dir(dir.join("report/cells"))
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.metadata().unwrap().modified().unwrap()))
        .collect()
}

/// The `data-mean` of the results table cell of `arm`, `epsilon`, `metric`.
fn table_mean(html: &str, arm: &str, epsilon: &str, metric: &str) -> f64 {
    let needle = format!("data-arm=\"{arm}\" data-epsilon=\"{epsilon}\" data-metric=\"{metric}\" data-mean=\"");
    let start =
        html.find(&needle).unwrap_or_else(|| panic!("no table cell for {arm} {epsilon} {metric}")) + needle.len();
    let end = start + html[start..].find('"').unwrap();
    html[start..end].parse().unwrap()
}

#[test]
fn a_sweep_reports_what_results_json_holds_and_resumes_without_recomputing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sample_store(d);
    // Exploring epsilons up to 8 on the store's own data is charged to its
    // lifetime budget: this storefront allows for it.
    for purpose in ["release", "evaluation"] {
        let store = ["--db", "qs/hush.db", "--key-file", "qs/hush.key", "-q"];
        let mut args = store.to_vec();
        args.extend(["budget", "set-cap", "--epsilon", "60", "--purpose", purpose, "--force"]);
        ok(d, &args);
    }

    let first = sweep(d, "1,4", &[]);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let first = json(&first);
    // Baseline + 2 twins + 2 epsilons x 2 seeds.
    assert_eq!((first["computed"].as_u64(), first["reused"].as_u64()), (Some(7), Some(0)));

    let results: Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("report/results.json")).unwrap()).unwrap();
    let html = std::fs::read_to_string(d.join("report/report.html")).unwrap();
    let cells = results["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 7);

    // Every number in the report's table is the mean of results.json's cells.
    for (arm, epsilon) in [("dp", Some(1.0)), ("dp", Some(4.0)), ("non_private", None), ("baseline", None)] {
        for metric in ["ndcg_at_10", "recall_at_10", "coverage", "popularity_bias"] {
            let values: Vec<f64> = cells
                .iter()
                .filter(|c| c["arm"] == arm && c["epsilon"].as_f64() == epsilon)
                .map(|c| c["metrics"][metric].as_f64().unwrap())
                .collect();
            let mean = values.iter().sum::<f64>() / values.len() as f64;
            let shown = table_mean(&html, arm, &epsilon.map(|e| e.to_string()).unwrap_or_default(), metric);
            assert!((shown - mean).abs() < 1e-12, "{arm} {epsilon:?} {metric}: report {shown}, cells {mean}");
        }
    }
    // The recommendation in the report is the one in results.json, and every
    // DP cell's achieved epsilon is within its target.
    let sentence = results["recommendation"]["sentence"].as_str().unwrap();
    assert!(html.contains(&sentence.replace('\'', "&#39;")), "the recommendation is in the report");
    for c in cells.iter().filter(|c| c["arm"] == "dp") {
        assert!(c["achieved_epsilon"].as_f64().unwrap() <= c["epsilon"].as_f64().unwrap());
    }
    // results.csv holds the same values, one row per cell and metric.
    let csv = std::fs::read_to_string(d.join("report/results.csv")).unwrap();
    assert!(csv.starts_with("arm,epsilon,seed,metric,value\n"));
    let dp1 = cells.iter().find(|c| c["arm"] == "dp" && c["epsilon"] == 1.0).unwrap();
    let row = format!("dp,1,{},ndcg_at_10,{}\n", dp1["seed"], dp1["metrics"]["ndcg_at_10"].as_f64().unwrap());
    assert!(csv.contains(&row), "{row} not in results.csv");
    // The data story comes from the extraction report.
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("qs/extraction-report.json")).unwrap()).unwrap();
    assert!(html.contains(&format!("kept <strong>{} of ", report["subjects"])), "the consent story is told");

    // Resuming recomputes nothing and rewrites no cell.
    let before = cell_mtimes(d);
    let again = json(&ok(d, &["--db", "qs/hush.db", "--key-file", "qs/hush.key", "budget", "show", "--json"]));
    let spent_before = again.as_array().unwrap().iter().find(|r| r["purpose"] == "evaluation").unwrap().clone();
    let resumed = json(&sweep(d, "1,4", &[]));
    assert_eq!((resumed["computed"].as_u64(), resumed["reused"].as_u64()), (Some(0), Some(7)));
    assert_eq!(cell_mtimes(d), before);
    let resumed_results: Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("report/results.json")).unwrap()).unwrap();
    assert_eq!(resumed_results["cells"], results["cells"]);

    // Only a missing cell is recomputed, and a new epsilon adds its cells.
    std::fs::remove_file(d.join("report/cells/dp_eps4_seed43.json")).unwrap();
    let extended = json(&sweep(d, "1,4,8", &[]));
    assert_eq!((extended["computed"].as_u64(), extended["reused"].as_u64()), (Some(3), Some(6)));

    // The sweep spent the evaluation budget once per DP cell, resumption included,
    // and never the release budget.
    let budget = json(&ok(d, &["--db", "qs/hush.db", "--key-file", "qs/hush.key", "budget", "show", "--json"]));
    let rows = budget.as_array().unwrap();
    let evaluation = rows.iter().find(|r| r["purpose"] == "evaluation").unwrap();
    // The quickstart recorded its DP evaluation run and its twin; the first
    // sweep its 4 DP cells and 2 twins.
    assert_eq!((spent_before["private_runs"].as_u64(), spent_before["non_private_runs"].as_u64()), (Some(5), Some(3)));
    // The recomputed cell did not pay again; epsilon 8 added two runs.
    assert_eq!((evaluation["private_runs"].as_u64(), evaluation["non_private_runs"].as_u64()), (Some(7), Some(3)));
    let release = rows.iter().find(|r| r["purpose"] == "release").unwrap();
    assert_eq!(release["private_runs"], 1, "only the quickstart's DP model is on the release budget");

    // Other settings in the same directory are refused, not mixed in.
    let out = sweep(d, "1,4", &["--delta", "1e-7"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("holds cells of a sweep with other settings"));
}

fn chromium_args(profile: &Path, proxy_port: u16) -> Vec<String> {
    [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--disable-extensions",
        "--no-pings",
        "--disable-domain-reliability",
        "--disable-client-side-phishing-detection",
        "--disable-breakpad",
        "--bwsi",
        "--dns-prefetch-disable",
        "--disable-features=NetworkTimeServiceQuerying,Translate,OptimizationHints,MediaRouter,\
         AutofillServerCommunication,CertificateTransparencyComponentUpdater,NetworkPrediction,PreconnectToSearch",
        "--enable-logging=stderr",
        "--v=0",
    ]
    .into_iter()
    .map(String::from)
    .chain([
        format!("--user-data-dir={}", profile.display()),
        // Every request the page makes, loopback included, would reach this
        // listener; the test asserts that none does.
        format!("--proxy-server=http://127.0.0.1:{proxy_port}"),
        "--proxy-bypass-list=<-loopback>".into(),
    ])
    .collect()
}

#[test]
fn the_report_renders_in_headless_chromium_with_no_network_request() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sample_store(d);
    assert!(sweep(d, "1,4", &[]).status.success());
    let report = d.join("report/report.html");
    let html = std::fs::read_to_string(&report).unwrap();
    // The only URL in the page is the SVG namespace, which names and fetches nothing.
    let without_namespace = html.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
    assert!(!without_namespace.contains("http://") && !without_namespace.contains("https://"), "nothing external");
    assert!(!html.contains("src=") && !html.contains("@import") && !html.contains("url("), "nothing to load");

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // The first line of every request that reached the proxy.
    let requests = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = requests.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut buf = [0u8; 1024];
            let n = (&stream).read(&mut buf).unwrap_or(0);
            let text = String::from_utf8_lossy(&buf[..n]);
            seen.lock().unwrap().push(text.lines().next().unwrap_or_default().to_string());
        }
    });

    // A probe appended to a copy of the page: after layout, it records every
    // figure's size and legend, and every resource the page fetched.
    let probe = r#"<script>
const figures = [...document.querySelectorAll('figure')].map(f => {
  const svg = f.querySelector('svg'); const box = svg.getBBox();
  return { id: f.id, series: Number(f.dataset.series), width: box.width, height: box.height,
           texts: [...svg.querySelectorAll('text')].map(t => t.textContent.trim()) };
});
const out = document.createElement('pre'); out.id = 'probe';
out.textContent = JSON.stringify({ figures, resources: performance.getEntriesByType('resource').map(r => r.name) });
document.body.appendChild(out);
</script></body>"#;
    let probed = d.join("report/probe.html");
    std::fs::write(&probed, html.replace("</body>", probe)).unwrap();
    let dom = Command::new(hush_testkit::chromium())
        .args(chromium_args(&d.join("profile-dom"), port))
        .args(["--virtual-time-budget=3000", "--dump-dom"])
        .arg(format!("file://{}", probed.display()))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&dom.stdout);
    let stderr = String::from_utf8_lossy(&dom.stderr);
    assert!(dom.status.success(), "chromium failed: {stderr}");
    assert!(!stderr.contains("Uncaught") && !stderr.contains("CONSOLE"), "console errors: {stderr}");
    let start = stdout.find("<pre id=\"probe\">").expect("the probe ran") + "<pre id=\"probe\">".len();
    let end = start + stdout[start..].find("</pre>").unwrap();
    let probe: Value = serde_json::from_str(
        &stdout[start..end].replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\""),
    )
    .unwrap();
    assert_eq!(probe["resources"], serde_json::json!([]), "the page fetched something");

    // Implicit feedback: NDCG and Recall curves (band, mean, twin, baseline),
    // who pays by activity (3 groups + reference) and by item popularity
    // (2 + reference), coverage and popularity bias (DP, twin, baseline).
    let expected = [
        ("fig-utility-ndcg_at_10", 4),
        ("fig-utility-recall_at_10", 4),
        ("fig-who-pays-activity", 4),
        ("fig-who-pays-items", 3),
        ("fig-coverage", 3),
        ("fig-popularity-bias", 3),
    ];
    let figures = probe["figures"].as_array().unwrap();
    assert_eq!(figures.len(), expected.len());
    for (figure, (id, series)) in figures.iter().zip(expected) {
        assert_eq!(figure["id"], id);
        assert_eq!(figure["series"], series, "{id}");
        assert!(
            figure["width"].as_f64().unwrap() > 300.0 && figure["height"].as_f64().unwrap() > 200.0,
            "{id} laid out"
        );
        let texts: Vec<&str> = figure["texts"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
        let legend = match id {
            "fig-who-pays-activity" => vec!["light", "medium", "heavy", "non-private twin (= 1)"],
            "fig-who-pays-items" => vec!["head", "tail", "non-private twin (= 1)"],
            "fig-coverage" | "fig-popularity-bias" => {
                vec!["DP: mean over seeds", "non-private twin", "popularity baseline"]
            }
            _ => vec!["DP: range over 2 seeds", "DP: mean of 2 seeds", "non-private twin", "popularity baseline"],
        };
        assert_eq!(legend.len(), series);
        for label in legend {
            assert!(texts.contains(&label), "{id}: legend entry {label} missing from {texts:?}");
        }
    }

    let shot = d.join("report.png");
    let out = Command::new(hush_testkit::chromium())
        .args(chromium_args(&d.join("profile-shot"), port))
        .args(["--window-size=1000,4000", "--hide-scrollbars"])
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", report.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 50_000, "a real screenshot ({} bytes)", png.len());
    // Chromium itself still contacts some of its own services at start,
    // whatever the page (seen on an empty page too): sign-in, search, time,
    // updates, safe browsing. Those hosts are the browser's; anything else is
    // the page's, and there must be none: no font (fonts.googleapis.com and
    // fonts.gstatic.com are not on this list), script, image or stylesheet.
    let browser_own = [
        "accounts.google.com",
        "www.google.com",
        "clients1.google.com",
        "clients2.google.com",
        "update.googleapis.com",
        "safebrowsing.googleapis.com",
        "optimizationguide-pa.googleapis.com",
    ];
    let host = |request: &str| {
        let target = request.split_whitespace().nth(1).unwrap_or_default();
        let target = target.trim_start_matches("http://").trim_start_matches("https://");
        target.split(['/', ':']).next().unwrap_or_default().to_string()
    };
    let requests = requests.lock().unwrap().clone();
    let page_requests: Vec<&String> = requests.iter().filter(|r| !browser_own.contains(&host(r).as_str())).collect();
    assert!(page_requests.is_empty(), "requests that are not Chromium's own: {page_requests:?}");
}
