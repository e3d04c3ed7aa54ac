//! `hush keys`: API keys of the serving API.

use crate::out;

use anyhow::{bail, Result};
use hush_consent::Timestamp;

use super::{open_ledger, print_json};
use crate::cli::*;

pub fn run(g: &Global, command: &KeysCommand) -> Result<()> {
    let mut ledger = open_ledger(g)?;
    match command {
        KeysCommand::Create(args) => {
            let (key, record) = hush_consent::keys::create(&mut ledger, &args.name, &args.scopes, Timestamp::now())?;
            if g.json {
                return print_json(&serde_json::json!({ "key": key, "record": record }));
            }
            out!("{key}");
            eprintln!(
                "key {} for {} with scopes {}: store it now, it is not shown again",
                record.key_id,
                record.name,
                record.scopes.join(",")
            );
        }
        KeysCommand::List => {
            let keys = ledger.api_keys()?;
            if g.json {
                return print_json(&keys);
            }
            for k in keys {
                let state = k.revoked_at.map(|t| format!("revoked {t}")).unwrap_or_else(|| "active".into());
                out!("{}  {:<20} {:<32} created {}  {state}", k.key_id, k.name, k.scopes.join(","), k.created_at);
            }
        }
        KeysCommand::Revoke(args) => {
            if !ledger.revoke_api_key(&args.key_id, Timestamp::now())? {
                bail!("no active key with id `{}` (see hush keys list)", args.key_id);
            }
            out!("revoked {}; requests with it are refused from now on", args.key_id);
        }
    }
    Ok(())
}
