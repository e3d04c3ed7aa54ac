//! Reaching a store and its key: an SQLite store must exist unless it is
//! created on purpose, and the key file sits beside it (or is named).

use std::path::{Path, PathBuf};

use hush_consent::{ConnectOptions, Ledger, PseudonymKey, StoreUrl};

use crate::{Error, Result};

/// The key file: `key_file`, or `hush.key` beside an SQLite store (in the
/// working directory for a PostgreSQL store).
pub fn key_path(db: &str, key_file: Option<&Path>) -> PathBuf {
    if let Some(path) = key_file {
        return path.to_path_buf();
    }
    match StoreUrl::parse(db) {
        Ok(StoreUrl::Sqlite(path)) => path.with_file_name("hush.key"),
        _ => PathBuf::from("hush.key"),
    }
}

/// An SQLite store must exist unless the caller creates it on purpose
/// (`hush init`, `--create`): a mistyped `--db` is an error, not a new store.
///
/// # Errors
/// [`Error::Store`] naming the missing store.
pub fn require_store(db: &str, create: bool) -> Result<()> {
    if let StoreUrl::Sqlite(path) = StoreUrl::parse(db)? {
        if !create && !path.exists() {
            return Err(Error::Store(format!(
                "store {} does not exist: check --db, or create it with `hush init` (or --create)",
                path.display()
            )));
        }
    }
    Ok(())
}

/// The store's pseudonym key (from the environment or the key file).
///
/// # Errors
/// [`Error::Store`] if neither exists and `create` is false.
pub fn load_key(db: &str, key_file: Option<&Path>, create: bool) -> Result<PseudonymKey> {
    require_store(db, create)?;
    let path = key_path(db, key_file);
    if !create && std::env::var_os(hush_consent::KEY_ENV_VAR).is_none() && !path.exists() {
        return Err(Error::Store(format!(
            "key file {} does not exist: pass the store's key with --key-file (or {}), or create a new store \
             with `hush init` (or --create)",
            path.display(),
            hush_consent::KEY_ENV_VAR
        )));
    }
    Ok(PseudonymKey::from_env_or_file(&path)?)
}

/// Opens the ledger of `db`.
///
/// # Errors
/// [`Error::Store`] for a missing SQLite store; the ledger's error otherwise.
pub fn open_ledger(db: &str, options: ConnectOptions, create: bool) -> Result<Ledger> {
    require_store(db, create)?;
    Ok(Ledger::connect_with(db, options)?)
}

/// A store whose key has been loaded: what extraction with consent and
/// budget claims need.
#[derive(Clone)]
pub struct Store {
    db: String,
    options: ConnectOptions,
    key: PseudonymKey,
}

impl Store {
    /// Reaches the existing store `db` and loads its key (`key_file`, or
    /// `hush.key` beside an SQLite store).
    ///
    /// # Errors
    /// [`Error::Store`] if the store or its key is missing.
    pub fn open(db: &str, key_file: Option<&Path>, options: ConnectOptions) -> Result<Self> {
        Self::open_with(db, key_file, options, false)
    }

    /// As [`Store::open`]; with `create`, a missing key is made (and a
    /// missing SQLite store when its ledger is first opened).
    ///
    /// # Errors
    /// [`Error::Store`] if the store or its key is missing and `create` is false.
    pub fn open_with(db: &str, key_file: Option<&Path>, options: ConnectOptions, create: bool) -> Result<Self> {
        let key = load_key(db, key_file, create)?;
        Ok(Store { db: db.to_string(), options, key })
    }

    /// A new connection to the store's ledger.
    ///
    /// # Errors
    /// The ledger's error if it cannot be reached.
    pub fn ledger(&self) -> Result<Ledger> {
        Ok(Ledger::connect_with(&self.db, self.options)?)
    }

    /// The store's pseudonym key.
    pub fn key(&self) -> &PseudonymKey {
        &self.key
    }

    /// The budget's name for this store: `store-` and the first 16 hex
    /// digits of its model-signing public key. Derived from the store's key,
    /// not chosen.
    pub fn dataset(&self) -> String {
        let identity = hush_mf::Model::store_identity(&self.key.derive(hush_mf::SIGNING_PURPOSE));
        format!("store-{}", &identity[..16])
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("db", &hush_consent::ledger::redact(&self.db)).finish_non_exhaustive()
    }
}
