//! What each command does: parse, call the libraries, print.
//! One module per command; this one dispatches and holds what several share.

mod audit;
pub mod batch;
mod budget;
mod consent;
mod erase;
mod evaluate;
mod events;
mod export;
mod extract;
mod init;
pub mod items;
mod keys;
mod learn;
mod model;
mod quickstart;
mod recommend;
mod serve;
mod sweep;
mod synth;
mod train;

use crate::out;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use hush_consent::import::{ImportOptions, ImportReport};
use hush_consent::{Ledger, PseudonymKey, Timestamp};
use hush_formats::{CsvMapping, EventFormat};
use serde::Serialize;
use serde_json::Value;

use crate::cli::*;

pub fn run(cli: Cli) -> Result<()> {
    // The kernel crates ignore a value they do not know; a command refuses
    // it, so a typo cannot leave the SIMD kernels on unnoticed.
    if hush_privacy::KernelSwitch::from_env() == hush_privacy::KernelSwitch::Unknown {
        bail!(
            "{}={:?}: expected `auto` or `portable` (or unset)",
            hush_privacy::KERNEL_SWITCH_VAR,
            std::env::var_os(hush_privacy::KERNEL_SWITCH_VAR).unwrap_or_default()
        );
    }
    let g = &cli.global;
    match &cli.command {
        Command::Init => init::run(g),
        Command::Synth(args) => synth::run(g, args),
        Command::Consent(command) => consent::run(g, command),
        Command::Events(EventsCommand::Import(args)) => events::import(g, args),
        Command::Items(command) => items::run(g, command),
        Command::Export(args) => export::run(g, args),
        Command::Erase(args) => erase::run(g, args),
        Command::Extract(args) => extract::run(g, args).map(|_| ()),
        Command::Train(args) => train::run(g, args),
        Command::Evaluate(args) => evaluate::run(g, args),
        Command::Sweep(args) => sweep::run(g, args),
        Command::Audit(args) => audit::run(g, args),
        Command::Recommend(args) if args.all => batch::run(g, args),
        Command::Recommend(args) => recommend::run(g, args),
        Command::Similar(args) => recommend::similar(g, args),
        Command::Model(ModelCommand::Inspect(args)) => model::inspect(g, args),
        Command::Model(ModelCommand::Card(args)) => model::card(g, args),
        Command::Model(ModelCommand::Dump(args)) => model::dump(args),
        Command::Serve(args) => serve::run(g, args),
        Command::Budget(command) => budget::run(g, command),
        Command::Keys(command) => keys::run(g, command),
        Command::Quickstart(args) => quickstart::run(g, args),
    }
}

/// The key file: --key-file, or `hush.key` beside an SQLite store (in the
/// working directory for a PostgreSQL store).
fn key_path(g: &Global) -> PathBuf {
    hush_pipeline::store::key_path(&g.db, g.key_file.as_deref())
}

fn connect_options(g: &Global) -> hush_consent::ConnectOptions {
    hush_consent::ConnectOptions { allow_cleartext: g.store_allow_cleartext }
}

pub fn load_key(g: &Global) -> Result<PseudonymKey> {
    Ok(hush_pipeline::store::load_key(&g.db, g.key_file.as_deref(), g.create)?)
}

pub fn open_ledger(g: &Global) -> Result<Ledger> {
    Ok(hush_pipeline::store::open_ledger(&g.db, connect_options(g), g.create)?)
}

/// The store and its key, for the offline flows of `hush-pipeline`.
pub fn store(g: &Global) -> Result<hush_pipeline::store::Store> {
    Ok(hush_pipeline::store::Store::open_with(&g.db, g.key_file.as_deref(), connect_options(g), g.create)?)
}

fn parse_time(text: Option<&str>, what: &str) -> Result<Timestamp> {
    match text {
        Some(t) => Timestamp::parse(t).with_context(|| format!("--{what}")),
        None => Ok(Timestamp::now()),
    }
}

/// The name a value has in JSON output (`no_record`, `as-of-snapshot`,
/// `committed`), for text output: the two never disagree.
pub fn wire_name<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(Value::String(name)) => name,
        Ok(other) => other.to_string(),
        Err(_) => "?".into(),
    }
}

pub fn print_json<T: Serialize>(value: &T) -> Result<()> {
    out!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn options(t: &ImportTolerance) -> Result<ImportOptions> {
    let max_malformed_fraction = t.max_malformed.unwrap_or(ImportOptions::default().max_malformed_fraction);
    if !(0.0..=1.0).contains(&max_malformed_fraction) {
        bail!("--max-malformed must be within 0..=1, found {max_malformed_fraction}");
    }
    Ok(ImportOptions { strict: t.strict, max_malformed_fraction })
}

fn print_import(g: &Global, what: &str, report: &ImportReport) -> Result<()> {
    if g.json {
        return print_json(report);
    }
    out!(
        "{}: {} rows, {} {what} stored, {} already held, {} refused (no consent), {} refused (erased), {} malformed",
        report.path,
        report.rows,
        report.stored,
        report.duplicates,
        report.dropped_no_consent,
        report.dropped_suppressed,
        report.malformed
    );
    for e in &report.errors {
        out!("  {e}");
    }
    Ok(())
}

/// The format `path` is read in: `--format`, or else its extension; with
/// `--mapping`'s columns (CSV and Parquet only).
pub fn event_format(args: &FormatArgs, path: &Path) -> Result<EventFormat> {
    let format = match &args.format {
        Some(name) => EventFormat::from_name(name)?,
        None => EventFormat::from_path(path),
    };
    Ok(match &args.mapping {
        Some(mapping) => format
            .with_mapping(mapping.parse::<CsvMapping>()?)
            .with_context(|| format!("--mapping for {}", path.display()))?,
        None => format,
    })
}

pub use hush_pipeline::config::{read_config, ConfigFile};
