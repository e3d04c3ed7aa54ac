//! Helpers the end-to-end test files share: running the real binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// The project root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs hush with `args` in a clean environment (no key in the environment).
pub fn hush(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hush"))
        .args(args)
        .current_dir(dir)
        .env_remove("HUSH_PSEUDONYM_KEY")
        .env_remove("HUSH_DB")
        .env_remove("HUSH_KEY_FILE")
        .env("RUST_LOG", "debug")
        .output()
        .expect("the hush binary runs")
}

/// Runs hush and insists that it succeeds.
pub fn ok(dir: &Path, args: &[&str]) -> Output {
    let out = hush(dir, args);
    assert!(
        out.status.success(),
        "hush {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The JSON a `--json` run printed.
pub fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).expect("--json prints JSON")
}

/// What a run wrote to stderr.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The quickstart on the bundled sample into `dir/qs` (store, key, feature
/// sets, extraction report, DP model and twin), without serving.
pub fn sample_store(dir: &Path) -> Output {
    quickstart(dir, &[])
}

/// [`sample_store`] with `extra` arguments (e.g. `--json`).
pub fn quickstart(dir: &Path, extra: &[&str]) -> Output {
    let sample = root().join("data/sample");
    let config = root().join("models/sample.toml");
    let args = [
        "quickstart",
        "--sample",
        sample.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "--dir",
        "qs",
        "-q",
        "--no-serve",
    ];
    ok(dir, &[&args[..], extra].concat())
}

/// A `hush serve` process on a free 127.0.0.1 port, on `store` with the
/// quickstart's key (run from `dir`); killed when dropped.
pub struct Server {
    /// The process.
    pub child: std::process::Child,
    /// Its port.
    pub port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `hush serve` and waits until it accepts connections.
pub fn start_server(dir: &Path, store: &str, model: &str) -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(env!("CARGO_BIN_EXE_hush"))
        .args(["--db", store, "--key-file", "qs/hush.key", "serve", "--model", model])
        .args(["--bind", &format!("127.0.0.1:{port}")])
        .current_dir(dir)
        .env_remove("HUSH_PSEUDONYM_KEY")
        .env_remove("HUSH_DB")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "the server on port {port} did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Server { child, port }
}

/// Trains a release of the quickstart's features on `store` (which must
/// hold the quickstart's key, `qs/hush.key`): `hush serve` on a store admits
/// only that store's own recorded, signed releases. Returns the model path.
#[allow(dead_code)]
pub fn release_on(dir: &Path, store: &str) -> String {
    let out = "qs/store-release.hmdl";
    let config = root().join("models/sample.toml");
    ok(
        dir,
        &[
            "--db",
            store,
            "--key-file",
            "qs/hush.key",
            "train",
            "--features",
            "qs/features.hfs",
            "--config",
            config.to_str().unwrap(),
            "--epsilon",
            "4",
            "--out",
            out,
            "-q",
        ],
    );
    out.to_string()
}
