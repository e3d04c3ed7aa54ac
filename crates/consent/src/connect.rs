//! How hush reaches a PostgreSQL server: the connection URL as libpq reads
//! it, including its TLS settings, and the TLS connector built from them.
//!
//! # TLS
//!
//! `sslmode` and `sslrootcert` are read from the URL's query string with
//! libpq's meanings:
//!
//! | `sslmode` | encrypted | server certificate checked |
//! |---|---|---|
//! | `disable` | no | – |
//! | `prefer` | if the server offers TLS | no (chain checked against `sslrootcert` when given) |
//! | `require` | yes | no (chain checked against `sslrootcert` when given) |
//! | `verify-ca` | yes | chain up to a CA in `sslrootcert` |
//! | `verify-full` | yes | chain up to a CA in `sslrootcert`, and the host name or IP address |
//!
//! `sslrootcert` is a PEM file of CA certificates, or `system` for the
//! operating system's CAs; without it, `~/.postgresql/root.crt` as in libpq.
//!
//! Unlike libpq, the default is not `prefer` everywhere: it is `prefer` for
//! loopback hosts (`localhost`, `127.0.0.0/8`, `::1`, Unix sockets) and
//! `verify-full` for every other host, because consent records, pseudonymous
//! events and API key digests cross that connection. `sslmode=disable` to a
//! host that is not loopback is refused unless
//! [`ConnectOptions::allow_cleartext`] says otherwise.
//!
//! The connector is rustls (through `tokio-postgres-rustls`, which plugs it
//! into the `postgres` client): no system OpenSSL to build against or keep
//! patched, and the same verifier everywhere. The connector itself is in the
//! PostgreSQL backend (`store::postgres::tls`), behind the `postgres` feature.

/// Settings for reaching a store that are not part of its URL.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnectOptions {
    /// Allow `sslmode=disable` to a PostgreSQL host that is not a loopback
    /// address: everything the store holds then crosses the network in
    /// clear. Off by default; for a network the operator trusts (the CLI's
    /// `--store-allow-cleartext`).
    pub allow_cleartext: bool,
}

/// libpq's `sslmode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    /// No TLS.
    Disable,
    /// TLS when the server offers it, plain otherwise.
    Prefer,
    /// TLS, without checking who the server is.
    Require,
    /// TLS, with a server certificate issued by a trusted CA.
    VerifyCa,
    /// TLS, with a server certificate issued by a trusted CA for the host connected to.
    VerifyFull,
}

impl SslMode {
    /// The name in a URL.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}
