//! `hush events import`: imports a storefront's event file into the store.

use anyhow::Result;
use hush_consent::import::{self};
use hush_consent::Timestamp;

use super::{event_format, load_key, open_ledger, options, print_import};
use crate::cli::*;
use crate::progress;

pub fn import(g: &Global, args: &EventsImportArgs) -> Result<()> {
    let key = load_key(g)?;
    let mut ledger = open_ledger(g)?;
    let bar = progress::counter("event rows", g.quiet);
    let report = import::import_events(
        &mut ledger,
        &key,
        &args.file,
        &event_format(&args.format, &args.file)?,
        &options(&args.tolerance)?,
        Timestamp::now(),
        &mut |n| bar.set_position(n),
    )?;
    bar.finish_and_clear();
    print_import(g, "events", &report)
}
