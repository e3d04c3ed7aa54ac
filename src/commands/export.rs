//! `hush export`: everything the store holds about one subject.

use crate::out;

use anyhow::{Context, Result};
use hush_consent::Timestamp;

use super::{load_key, open_ledger};
use crate::cli::*;

pub fn run(g: &Global, args: &ExportArgs) -> Result<()> {
    let key = load_key(g)?;
    let ledger = open_ledger(g)?;
    let export = ledger.export(&args.subject.subject.pseudonymize(&key), Timestamp::now())?;
    let json = serde_json::to_string_pretty(&export)?;
    match &args.out {
        Some(path) => {
            hush_consent::files::write_owner_only(path, format!("{json}\n").as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
            // On standard error: `--out /dev/stdout` must print the export alone.
            if !g.json {
                eprintln!(
                    "wrote {} consent records and {} events to {}",
                    export.consent_history.len(),
                    export.events.len(),
                    path.display()
                );
            }
        }
        None => out!("{json}"),
    }
    Ok(())
}
