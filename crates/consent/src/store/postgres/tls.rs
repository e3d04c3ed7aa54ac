//! TLS to PostgreSQL: a URL's `sslmode` and `sslrootcert` read as libpq
//! reads them, and the rustls connector set up for them (see
//! [`crate::connect`] for the settings and why rustls).

use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::connect::{ConnectOptions, SslMode};
use crate::ledger::redact;
use crate::{Error, Result};

/// The mode a URL names.
fn parse_sslmode(text: &str) -> Result<SslMode> {
    Ok(match text {
        "disable" => SslMode::Disable,
        "prefer" => SslMode::Prefer,
        "require" => SslMode::Require,
        "verify-ca" => SslMode::VerifyCa,
        "verify-full" => SslMode::VerifyFull,
        // libpq's `allow` (plain first, TLS if refused) protects nothing hush needs.
        other => {
            return Err(Error::InvalidField {
                field: "sslmode",
                message: format!("`{other}` is not one of disable, prefer, require, verify-ca, verify-full"),
            })
        }
    })
}

/// Where the CA certificates of `sslrootcert` come from.
#[derive(Clone, Debug, PartialEq, Eq)]
enum RootCert {
    /// A PEM file.
    File(PathBuf),
    /// The operating system's CAs (`sslrootcert=system`).
    System,
}

/// A PostgreSQL URL taken apart: the client's settings, and the TLS settings
/// the client does not read itself.
pub(crate) struct PgTarget {
    /// Everything but the TLS settings: the asynchronous client's form,
    /// which the blocking client's [`PgTarget::blocking_config`] wraps.
    pub config: tokio_postgres::Config,
    /// The TLS mode in force (given or defaulted).
    pub mode: SslMode,
    /// The connector, set up for `mode`.
    pub tls: MakeRustlsConnect,
}

impl std::fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTarget").field("mode", &self.mode).finish_non_exhaustive()
    }
}

/// The `sslmode` and `sslrootcert` of a URL, and the URL without them.
#[derive(Debug, PartialEq, Eq)]
struct SplitUrl {
    rest: String,
    mode: Option<SslMode>,
    root_cert: Option<RootCert>,
}

fn split_tls_params(url: &str) -> Result<SplitUrl> {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, query),
        None => return Ok(SplitUrl { rest: url.to_string(), mode: None, root_cert: None }),
    };
    let (mut mode, mut root_cert, mut kept) = (None, None, Vec::new());
    for param in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = param.split_once('=').unwrap_or((param, ""));
        match name {
            "sslmode" => mode = Some(parse_sslmode(&percent_decode(value))?),
            "sslrootcert" => {
                let value = percent_decode(value);
                root_cert = Some(if value == "system" { RootCert::System } else { RootCert::File(value.into()) });
            }
            _ => kept.push(param),
        }
    }
    let rest = if kept.is_empty() { base.to_string() } else { format!("{base}?{}", kept.join("&")) };
    Ok(SplitUrl { rest, mode, root_cert })
}

/// `%XX` escapes of a URL query value (a path in `sslrootcert` may carry them).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether every host of `config` is on this machine: a Unix socket, `localhost`, or a loopback address.
fn is_loopback(config: &tokio_postgres::Config) -> bool {
    use postgres::config::Host;
    let hosts_local = config.get_hosts().iter().all(|host| match host {
        Host::Tcp(name) => {
            name.eq_ignore_ascii_case("localhost") || IpAddr::from_str(name).is_ok_and(|ip| ip.is_loopback())
        }
        #[cfg(unix)]
        Host::Unix(_) => true,
    });
    hosts_local && config.get_hostaddrs().iter().all(IpAddr::is_loopback)
}

impl PgTarget {
    /// Takes a PostgreSQL URL apart and sets up TLS as it asks.
    ///
    /// # Errors
    /// [`Error::InvalidField`] for a URL the client cannot read, an unknown
    /// `sslmode`, or an unreadable `sslrootcert`; [`Error::CleartextRefused`]
    /// for `sslmode=disable` to a host that is not loopback without
    /// [`ConnectOptions::allow_cleartext`].
    pub(crate) fn parse(url: &str, options: ConnectOptions) -> Result<Self> {
        let split = split_tls_params(url)?;
        let mut config = tokio_postgres::Config::from_str(&split.rest)
            .map_err(|e| Error::InvalidField { field: "store URL", message: format!("`{}`: {e}", redact(url)) })?;
        let loopback = is_loopback(&config);
        let mode = split.mode.unwrap_or(if loopback { SslMode::Prefer } else { SslMode::VerifyFull });
        if mode == SslMode::Disable && !loopback && !options.allow_cleartext {
            return Err(Error::CleartextRefused { location: redact(url) });
        }
        config.ssl_mode(match mode {
            SslMode::Disable => postgres::config::SslMode::Disable,
            SslMode::Prefer => postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => postgres::config::SslMode::Require,
        });
        let tls = MakeRustlsConnect::new(client_config(mode, split.root_cert.as_ref())?);
        Ok(PgTarget { config, mode, tls })
    }

    /// The settings for the blocking `postgres` client.
    pub(crate) fn blocking_config(&self) -> postgres::Config {
        postgres::Config::from(self.config.clone())
    }
}

fn crypto() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls settings for `mode`: which server certificates are accepted.
fn client_config(mode: SslMode, root_cert: Option<&RootCert>) -> Result<rustls::ClientConfig> {
    let builder = rustls::ClientConfig::builder_with_provider(crypto())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::InvalidField { field: "sslmode", message: format!("TLS set-up: {e}") })?;
    let verifier: Arc<dyn ServerCertVerifier> = match (mode, root_cert) {
        // No verification asked for: encryption against passive eavesdroppers only, as in libpq.
        (SslMode::Disable, _) | (SslMode::Prefer | SslMode::Require, None) => Arc::new(AnyCertificate(crypto())),
        // libpq checks the chain in these modes too when a root certificate is given.
        (SslMode::Prefer | SslMode::Require | SslMode::VerifyCa, root) => Arc::new(ChainOnly(webpki(mode, root)?)),
        (SslMode::VerifyFull, root) => webpki(mode, root)?,
    };
    Ok(builder.dangerous().with_custom_certificate_verifier(verifier).with_no_client_auth())
}

/// The standard verifier (chain and name) over the CAs `root` names.
fn webpki(mode: SslMode, root: Option<&RootCert>) -> Result<Arc<WebPkiServerVerifier>> {
    let bad = |message: String| Error::InvalidField { field: "sslrootcert", message };
    let default_file =
        || std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".postgresql/root.crt")).filter(|p| p.exists());
    let root = match root {
        Some(root) => root.clone(),
        None => RootCert::File(default_file().ok_or_else(|| {
            bad(format!(
                "sslmode={} checks the server's certificate and needs the CAs that issue it: add \
                 sslrootcert=/path/to/ca.pem (or sslrootcert=system for the operating system's CAs) to the \
                 store URL, or put them in ~/.postgresql/root.crt",
                mode.as_str()
            ))
        })?),
    };
    let mut store = RootCertStore::empty();
    match &root {
        RootCert::File(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<std::result::Result<Vec<_>, _>>())
                .map_err(|e| bad(format!("cannot read CA certificates from {}: {e}", path.display())))?;
            let (added, _) = store.add_parsable_certificates(certs);
            if added == 0 {
                return Err(bad(format!("{} holds no usable PEM CA certificate", path.display())));
            }
        }
        RootCert::System => {
            let found = rustls_native_certs::load_native_certs();
            store.add_parsable_certificates(found.certs);
            if store.is_empty() {
                return Err(bad("sslrootcert=system, but the operating system offers no CA certificates".into()));
            }
        }
    }
    WebPkiServerVerifier::builder_with_provider(Arc::new(store), crypto())
        .build()
        .map_err(|e| bad(format!("cannot use the CA certificates: {e}")))
}

/// `verify-ca`: the chain must lead to a trusted CA; the name is not checked.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        // webpki checks the chain before the name: a name error means the chain held.
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `prefer` and `require` without `sslrootcert`: any certificate, but the
/// handshake's signatures are still checked (the session key is the server's).
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(url: &str) -> Result<SslMode> {
        PgTarget::parse(url, ConnectOptions::default()).map(|t| t.mode)
    }

    #[test]
    fn tls_is_on_by_default_off_the_machine_and_prefer_on_it() {
        for local in [
            "postgres://u@127.0.0.1:5432/db",
            "postgres://u@localhost/db",
            "postgres://u@[::1]:5432/db",
            "postgres://u@127.0.0.2/db",
        ] {
            assert_eq!(mode(local).unwrap(), SslMode::Prefer, "{local}");
        }
        // A remote host without sslrootcert: verify-full, which needs the CA.
        let err = mode("postgres://u:pw@db.example:5432/hush").unwrap_err().to_string();
        assert!(err.contains("sslrootcert"), "{err}");
        let err = mode("postgres://u@10.0.0.5/hush?sslmode=verify-ca").unwrap_err().to_string();
        assert!(err.contains("sslmode=verify-ca") && err.contains("sslrootcert"), "{err}");
        assert_eq!(mode("postgres://u@db.example/hush?sslmode=require").unwrap(), SslMode::Require);
        assert_eq!(mode("postgres://u@localhost/hush?sslmode=disable").unwrap(), SslMode::Disable);
    }

    #[test]
    fn cleartext_to_a_remote_host_is_refused_unless_allowed() {
        let url = "postgres://u:s3cret@db.example:5432/hush?sslmode=disable";
        let err = mode(url).unwrap_err();
        assert!(matches!(err, Error::CleartextRefused { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains("sslmode=disable") && text.contains("allow_cleartext"), "{text}");
        assert!(!text.contains("s3cret"), "{text}");
        let allowed = PgTarget::parse(url, ConnectOptions { allow_cleartext: true }).unwrap();
        assert_eq!(allowed.mode, SslMode::Disable);
        // Every host counts: one remote host among local ones is remote.
        let err = mode("postgres://u@localhost,db.example/hush?sslmode=disable").unwrap_err();
        assert!(matches!(err, Error::CleartextRefused { .. }), "{err}");
    }

    #[test]
    fn tls_parameters_are_taken_out_of_the_url_and_checked() {
        let split = split_tls_params("postgres://h/db?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&user=x").unwrap();
        assert_eq!(split.rest, "postgres://h/db?user=x");
        assert_eq!(split.mode, Some(SslMode::VerifyFull));
        assert_eq!(split.root_cert, Some(RootCert::File("/etc/ca.pem".into())));
        assert_eq!(split_tls_params("postgres://h/db?sslrootcert=system").unwrap().root_cert, Some(RootCert::System));
        let err = mode("postgres://h/db?sslmode=allow").unwrap_err().to_string();
        assert!(err.contains("sslmode") && err.contains("verify-full"), "{err}");
        let err = mode("postgres://h/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem").unwrap_err().to_string();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    }
}
