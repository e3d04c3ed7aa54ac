//! `hush init`: creates the store and the pseudonymization key.

use crate::out;

use anyhow::Result;

use super::{key_path, load_key, open_ledger, print_json};
use crate::cli::*;

/// `hush init`: the store and its key, made once, on purpose.
pub fn run(g: &Global) -> Result<()> {
    let creating = Global { create: true, ..g.clone() };
    let existed = match hush_consent::StoreUrl::parse(&g.db)? {
        hush_consent::StoreUrl::Sqlite(path) => path.exists(),
        hush_consent::StoreUrl::Postgres(_) => false,
    };
    let ledger = open_ledger(&creating)?;
    let key_existed = key_path(g).exists() || std::env::var_os(hush_consent::KEY_ENV_VAR).is_some();
    load_key(&creating)?;
    if g.json {
        return print_json(&serde_json::json!({
            "store": ledger.location(),
            "store_created": !existed,
            "key_file": key_path(g),
            "key_created": !key_existed,
        }));
    }
    let said = |created: bool| if created { "created" } else { "already exists" };
    out!("store {}: {}", ledger.location(), said(!existed));
    out!("key file {}: {}", key_path(g).display(), said(!key_existed));
    Ok(())
}
