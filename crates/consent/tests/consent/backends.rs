//! Running the same ledger test on both backends: a fresh SQLite file, and a
//! fresh database on a real, throwaway PostgreSQL server.
//!
//! This is the conformance suite of the crate's storage seam (`store::Store`
//! and `store::Tx`): the rules are written once in the ledger, and every
//! `on_both_backends!` test checks that a backend's primitives let them hold
//! (the ingest gate, suppression, erasure, budget reservation, concurrency).
//! A new backend passes these before it is wired in.

/// A fresh, empty store of one backend.
pub struct Fresh {
    url: String,
    _dir: Option<tempfile::TempDir>,
}

/// Which backend a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Fresh {
    pub fn new(backend: Backend) -> Fresh {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}", dir.path().join("hush.db").display());
                Fresh { url, _dir: Some(dir) }
            }
            Backend::Postgres => Fresh { url: hush_testkit::postgres_url(), _dir: None },
        }
    }

    /// A new connection to the store (a store can be opened many times).
    pub fn open(&self) -> hush_consent::Ledger {
        hush_consent::Ledger::connect(&self.url).unwrap()
    }

    /// The store URL.
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// Defines a test twice, as `name::sqlite` and `name::postgres`, with
/// `$store` bound to a fresh store of that backend.
macro_rules! on_both_backends {
    (fn $name:ident($store:ident) $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[test]
            fn sqlite() {
                let $store = crate::backends::Fresh::new(crate::backends::Backend::Sqlite);
                $body
            }

            #[test]
            fn postgres() {
                let $store = crate::backends::Fresh::new(crate::backends::Backend::Postgres);
                $body
            }
        }
    };
}
pub(crate) use on_both_backends;
