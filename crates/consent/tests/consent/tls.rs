//! TLS to PostgreSQL against a real server with a certificate made here:
//! `verify-full` connects when the certificate names the host, and refuses
//! a certificate of another CA or for another host; without `sslrootcert`
//! nothing is trusted by default; a server without TLS is refused when TLS
//! is required.

use std::sync::OnceLock;

use hush_consent::{ConnectOptions, Error, Ledger};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

/// A CA that can sign server certificates, with its certificate as PEM.
fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// The TLS server (started once for this test binary): its port, and files
/// holding its CA's certificate and another CA's.
struct TlsServer {
    port: u16,
    ca_file: String,
    other_ca_file: String,
    _dir: tempfile::TempDir,
}

fn server() -> &'static TlsServer {
    static SERVER: OnceLock<TlsServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        let authority = ca("hush test CA");
        let server_key = KeyPair::generate().unwrap();
        // Named for `localhost` only: 127.0.0.1 is the same server under a name
        // the certificate does not carry.
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, "localhost");
        let cert = params.signed_by(&server_key, &authority).unwrap();
        let port = hush_testkit::postgres_tls_port(&cert.pem(), &server_key.serialize_pem());
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, pem: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, pem).unwrap();
            path.display().to_string()
        };
        let ca_file = write("ca.pem", authority.pem());
        let other_ca_file = write("other-ca.pem", ca("someone else's CA").pem());
        TlsServer { port, ca_file, other_ca_file, _dir: dir }
    })
}

/// A URL to the TLS server; `application_name` tells this connection from
/// those of the tests running beside it.
fn url(host: &str, query: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let name = format!("tls-test-{}", NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst));
    format!("postgres://postgres@{host}:{}/postgres?application_name={name}&{query}", server().port)
}

/// Whether the server sees `ledger`'s connection (opened from `url`) as
/// TLS: asked over a connection of its own, while `ledger` is open.
fn server_sees_tls(ledger: &Ledger, url: &str) -> bool {
    assert!(ledger.schema_version().is_ok());
    let (connections, encrypted) = connections_of(url);
    assert_eq!(connections, 1, "one connection opened from {url}");
    encrypted == 1
}

/// How many connections opened from `url` (named by its `application_name`)
/// the server sees, and how many of them are TLS.
fn connections_of(url: &str) -> (i64, i64) {
    let name = url.split("application_name=").nth(1).unwrap().split('&').next().unwrap();
    let admin = format!("postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable", server().port);
    let mut client = postgres::Client::connect(&admin, postgres::NoTls).unwrap();
    let row = client
        .query_one(
            "SELECT COUNT(*), COUNT(*) FILTER (WHERE s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a ON a.pid = s.pid
             WHERE a.application_name = $1",
            &[&name],
        )
        .unwrap();
    (row.get(0), row.get(1))
}

/// Opens a ledger at `url` and says whether its connection is encrypted.
fn connects_over_tls(url: &str) -> bool {
    let ledger = Ledger::connect(url).unwrap();
    server_sees_tls(&ledger, url)
}

fn connect_error(url: &str) -> String {
    match Ledger::connect(url) {
        Ok(_) => panic!("{url} connected"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn verify_full_connects_over_tls_when_the_certificate_names_the_host() {
    let s = server();
    let url = url("localhost", &format!("sslmode=verify-full&sslrootcert={}", s.ca_file));
    let ledger = Ledger::connect(&url).unwrap();
    assert!(server_sees_tls(&ledger, &url), "the connection is not encrypted");
    // The store works over it.
    assert_eq!(ledger.stats().unwrap().erasures, 0);
}

/// A server's per-request reader (`PgReader`) opens its connections with
/// the ledger's TLS settings: every one of them is encrypted.
#[test]
fn the_async_reader_connects_over_tls_as_its_ledger_does() {
    let s = server();
    let url = url("localhost", &format!("sslmode=verify-full&sslrootcert={}", s.ca_file));
    let ledger = Ledger::connect(&url).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let target = hush_consent::PgReaderTarget::of(&ledger).unwrap();
    let reader = runtime.block_on(hush_consent::PgReader::connect(target, 2)).unwrap();
    assert_eq!(reader.state().open, 2);
    // The ledger's connection and the reader's two, all encrypted.
    assert_eq!(connections_of(&url), (3, 3));
}

#[test]
fn a_certificate_from_another_ca_is_refused() {
    let s = server();
    for mode in ["verify-full", "verify-ca", "require"] {
        let message = connect_error(&url("localhost", &format!("sslmode={mode}&sslrootcert={}", s.other_ca_file)));
        assert!(
            message.contains("cannot connect to the store") && message.contains("certificate"),
            "{mode}: {message}"
        );
        assert!(message.contains("UnknownIssuer"), "{mode}: {message}");
    }
}

#[test]
fn verify_full_refuses_a_certificate_for_another_host_and_verify_ca_does_not_check_the_name() {
    let s = server();
    let message = connect_error(&url("127.0.0.1", &format!("sslmode=verify-full&sslrootcert={}", s.ca_file)));
    assert!(message.contains("certificate not valid for name \"127.0.0.1\""), "{message}");
    assert!(connects_over_tls(&url("127.0.0.1", &format!("sslmode=verify-ca&sslrootcert={}", s.ca_file))));
}

#[test]
fn loopback_defaults_to_prefer_and_require_encrypts_without_a_ca() {
    // No sslmode on a loopback host: libpq's `prefer`, so TLS when offered.
    assert!(connects_over_tls(&url("127.0.0.1", "")));
    assert!(connects_over_tls(&url("127.0.0.1", "sslmode=require")));
    // Plain when asked, on loopback.
    assert!(!connects_over_tls(&url("127.0.0.1", "sslmode=disable")));
}

#[test]
fn a_server_without_tls_is_refused_when_tls_is_required() {
    // The shared test server speaks no TLS.
    let plain = hush_testkit::postgres_url();
    for mode in ["require", "verify-full"] {
        let ca = &server().ca_file;
        let message = connect_error(&format!("{plain}?sslmode={mode}&sslrootcert={ca}"));
        assert!(message.contains("cannot connect to the store"), "{mode}: {message}");
    }
    assert!(Ledger::connect(&format!("{plain}?sslmode=prefer")).is_ok());
}

#[test]
fn cleartext_to_a_remote_host_is_refused_before_connecting_unless_allowed() {
    let remote = "postgres://hush:s3cret@db.example.invalid:5432/hush?sslmode=disable";
    let err = Ledger::connect(remote).unwrap_err();
    assert!(matches!(err, Error::CleartextRefused { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains("allow_cleartext") && message.contains("--store-allow-cleartext"), "{message}");
    assert!(!message.contains("s3cret"), "{message}");
    // Allowed: it goes on to connect (and fails only because the host does not exist).
    let err = Ledger::connect_with(remote, ConnectOptions { allow_cleartext: true }).unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err}");
    // A remote host without sslmode gets verify-full, which needs the CA.
    let message = Ledger::connect("postgres://hush@db.example.invalid/hush").unwrap_err().to_string();
    assert!(message.contains("sslmode=verify-full") && message.contains("sslrootcert"), "{message}");
}
