//! Test support: a real, throwaway PostgreSQL server for the tests of every
//! crate that talks to one.
//!
//! The first call to [`postgres_url`] in a test process creates a cluster
//! with Debian's `initdb` in a temporary directory, starts it on a free
//! 127.0.0.1 port (and a socket inside that directory), and returns a URL to
//! a fresh database; later calls create further fresh databases on the same
//! server. A watchdog stops the server when the test process ends. When the
//! process runs as root, the server runs as the unprivileged `postgres` user
//! (PostgreSQL refuses to run as root).
//!
//! There is no skipping: a test that needs PostgreSQL fails with the reason
//! when the server cannot be started. Nothing is installed from inside the
//! tests: when Debian's `postgresql` (or `chromium`, for the report tests) is
//! missing, the test fails with the command that installs it
//! (`.ci/install-test-deps`, which `.ci/run` runs first).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

struct Cluster {
    port: u16,
}

static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();
static NEXT_DATABASE: AtomicU32 = AtomicU32::new(0);

/// How to install what the tests need, named in every "missing" failure.
const INSTALL_HINT: &str = "run `.ci/install-test-deps` from the repository root \
     (it runs `sudo apt-get install chromium postgresql python3-venv` for what is missing)";

/// Headless Chromium for the report tests: `chromium` or `chromium-browser`
/// on the `PATH` (where `.ci/install-test-deps` looks for it too), else in
/// `/usr/bin`.
///
/// # Panics
/// When Chromium is missing: the test fails, saying how to install it.
pub fn chromium() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = std::env::split_paths(&path).chain([PathBuf::from("/usr/bin")]).collect();
    ["chromium", "chromium-browser"]
        .iter()
        .flat_map(|name| dirs.iter().map(move |dir| dir.join(name)))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("headless Chromium is needed for this test and is not installed: {INSTALL_HINT}"))
}

/// The directory of PostgreSQL's server programs: `HUSH_PG_BIN`, or the
/// newest `/usr/lib/postgresql/<version>/bin`, or wherever `initdb` is on PATH.
fn server_bin() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("HUSH_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| entries.flatten().map(|e| e.path().join("bin")).filter(|p| p.join("initdb").exists()).collect())
        .unwrap_or_default();
    versions.sort();
    if let Some(newest) = versions.pop() {
        return Ok(newest);
    }
    let on_path = Command::new("sh").args(["-c", "command -v initdb"]).output().ok().filter(|o| o.status.success());
    match on_path {
        Some(out) => Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).parent().unwrap().to_path_buf()),
        None => Err(format!(
            "PostgreSQL's server programs (initdb, postgres) were not found: {INSTALL_HINT}; \
             or point HUSH_PG_BIN at their directory"
        )),
    }
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

/// A command run as the cluster's owner: `postgres` when we are root.
fn as_owner(program: &Path, root: bool) -> Command {
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// The cluster directory, with `path()` like a `TempDir`'s.
struct Dir(PathBuf);

impl Dir {
    fn path(&self) -> &Path {
        &self.0
    }
}

/// Starts a cluster; with `tls` (certificate and key, PEM) it speaks TLS
/// with them as well as plain connections.
fn start(tls: Option<(&str, &str)>) -> Result<Cluster, String> {
    let bin = server_bin()?;
    let root = is_root();
    // Kept (not deleted on drop): the watchdog removes it after the server stops.
    let dir = tempfile::Builder::new().prefix("hush-pg-").tempdir().map_err(|e| e.to_string())?.keep();
    let dir = Dir(dir);
    let data = dir.path().join("data");
    let mut tls_settings = String::new();
    if let Some((cert, key)) = tls {
        let (cert_path, key_path) = (dir.path().join("server.crt"), dir.path().join("server.key"));
        std::fs::write(&cert_path, cert).map_err(|e| e.to_string())?;
        std::fs::write(&key_path, key).map_err(|e| e.to_string())?;
        // PostgreSQL refuses a key file others can read.
        let status = Command::new("chmod").arg("600").arg(&key_path).status();
        if !status.map(|s| s.success()).unwrap_or(false) {
            return Err("cannot make the server key private".into());
        }
        tls_settings =
            format!("-c ssl=on -c ssl_cert_file='{}' -c ssl_key_file='{}'", cert_path.display(), key_path.display());
    }
    if root {
        let status = Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()).status();
        if !status.map(|s| s.success()).unwrap_or(false) {
            return Err("running as root, but cannot hand the cluster directory to the `postgres` user".into());
        }
    }
    let init = as_owner(&bin.join("initdb"), root)
        .args(["-D"])
        .arg(&data)
        .args(["--auth=trust", "--username=postgres", "--encoding=UTF8", "--no-instructions"])
        .output()
        .map_err(|e| format!("running initdb: {e}"))?;
    if !init.status.success() {
        return Err(format!("initdb failed: {}", String::from_utf8_lossy(&init.stderr)));
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?.local_addr().unwrap().port();
    // The server runs under a watchdog shell that stops it (fast shutdown)
    // once this test process is gone, so no server outlives its tests. It
    // looks in /proc rather than signalling: as `postgres` it may not signal
    // us. Then it removes the cluster's directory (the process that made it
    // is gone and cannot).
    let script = format!(
        "{postgres} -D '{data}' -p {port} -k '{socket}' -c listen_addresses=127.0.0.1 -c fsync=on \
         -c max_connections=200 {tls_settings} >'{log}' 2>&1 & server=$!; \
         while [ -d /proc/{parent} ] && kill -0 $server 2>/dev/null; do sleep 0.5; done; \
         kill -INT $server 2>/dev/null; wait $server; rm -rf '{dir}'",
        postgres = bin.join("postgres").display(),
        dir = dir.path().display(),
        data = data.display(),
        socket = dir.path().display(),
        log = dir.path().join("server.log").display(),
        parent = std::process::id(),
    );
    as_owner(Path::new("/bin/sh"), root)
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting postgres: {e}"))?;
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match postgres::Client::connect(&url, postgres::NoTls) {
            Ok(_) => break,
            Err(e) if std::time::Instant::now() > deadline => {
                let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
                return Err(format!("PostgreSQL did not accept connections within 30 s: {e}\n{log}"));
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(100)),
        }
    }
    Ok(Cluster { port })
}

/// A URL to a fresh, empty database on the test cluster (started on first use).
///
/// # Panics
/// When no PostgreSQL server can be started, with the reason: the tests that
/// need one fail rather than skip.
pub fn postgres_url() -> String {
    let cluster = match CLUSTER.get_or_init(|| start(None)) {
        Ok(c) => c,
        Err(reason) => panic!("a throwaway PostgreSQL server is needed for this test: {reason}"),
    };
    let n = NEXT_DATABASE.fetch_add(1, Ordering::SeqCst);
    let name = format!("hush_test_{}_{n}", std::process::id());
    let admin = format!("postgres://postgres@127.0.0.1:{}/postgres", cluster.port);
    let mut client = postgres::Client::connect(&admin, postgres::NoTls).expect("the test cluster accepts connections");
    client.batch_execute(&format!("CREATE DATABASE {name}")).expect("a fresh test database");
    format!("postgres://postgres@127.0.0.1:{}/{name}", cluster.port)
}

/// Ends every connection to the database of `url` (one of
/// [`postgres_url`]'s), as a restart of the server would end them, and says
/// how many there were. Call it on a thread that drives no async runtime.
///
/// # Panics
/// When the test cluster cannot be reached.
pub fn end_connections(url: &str) -> i64 {
    let (server, database) = url.rsplit_once('/').expect("a database URL");
    let mut client = postgres::Client::connect(&format!("{server}/postgres"), postgres::NoTls)
        .expect("the test cluster accepts connections");
    let row = client
        .query_one(
            "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            &[&database],
        )
        .expect("ending the connections");
    row.get(0)
}

/// The port of a throwaway PostgreSQL server of its own (not the shared
/// one of [`postgres_url`]) that offers TLS with `cert_pem` and `key_pem`
/// (the server's certificate chain and private key, PEM) and accepts user
/// `postgres` without a password from 127.0.0.1, with or without TLS.
///
/// # Panics
/// When the server cannot be started, with the reason.
pub fn postgres_tls_port(cert_pem: &str, key_pem: &str) -> u16 {
    match start(Some((cert_pem, key_pem))) {
        Ok(cluster) => cluster.port,
        Err(reason) => panic!("a throwaway PostgreSQL server with TLS is needed for this test: {reason}"),
    }
}
