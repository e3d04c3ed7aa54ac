//! `hush items`: the storefront's catalogue in the store (the public item
//! universe released models use, and the titles and categories serving shows).

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand, ValueEnum};
use hush_consent::Timestamp;
use hush_formats::catalogue::{read_catalogue_file, CatalogueFormat};

use super::{open_ledger, print_json};
use crate::cli::Global;
use crate::out;

#[derive(Debug, Subcommand)]
pub enum ItemsCommand {
    /// Import a catalogue file into the store, upserting by item id: new items
    /// are inserted, changed ones replaced, identical ones left alone (so an
    /// import can be repeated). Items missing from the file are kept. The
    /// whole file is checked first: a bad row names file, line and column and
    /// nothing is written.
    Import(ItemsImportArgs),
    /// Print the catalogue the store holds (JSON lines with --json).
    List,
}

#[derive(Debug, Args)]
pub struct ItemsImportArgs {
    /// The catalogue file: CSV with a header (id column `item_id`, `id`,
    /// `item` or `movieId`, else the first; `title`; `category` or `genres`;
    /// every other column an attribute) or JSONL (`item_id` or `id`, `title`,
    /// `category`, any other keys as attributes) or Parquet (columns named as
    /// in CSV; other columns become attributes as text).
    pub file: PathBuf,
    /// File format (default: from the extension; .jsonl is JSONL, .parquet
    /// Parquet, anything else CSV).
    #[arg(long, value_enum)]
    pub format: Option<ItemsFormat>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ItemsFormat {
    Csv,
    Jsonl,
    Parquet,
}

pub fn run(g: &Global, command: &ItemsCommand) -> Result<()> {
    match command {
        ItemsCommand::Import(args) => import(g, args),
        ItemsCommand::List => list(g),
    }
}

fn import(g: &Global, args: &ItemsImportArgs) -> Result<()> {
    // `None`: Parquet.
    let format = match args.format {
        Some(ItemsFormat::Csv) => Some(CatalogueFormat::Csv),
        Some(ItemsFormat::Jsonl) => Some(CatalogueFormat::Jsonl),
        Some(ItemsFormat::Parquet) => None,
        None if args.file.extension().is_some_and(|e| e.eq_ignore_ascii_case("parquet")) => None,
        None => Some(CatalogueFormat::from_path(&args.file)),
    };
    let items = match format {
        Some(format) => read_catalogue_file(&args.file, format)?,
        None => crate::parquet_io::read_catalogue(&args.file)?,
    };
    let mut ledger = open_ledger(g)?;
    let report = ledger.upsert_items(&items, Timestamp::now())?;
    if g.json {
        return print_json(&serde_json::json!({ "file": args.file, "rows": items.len(), "report": report }));
    }
    out!(
        "{}: {} items: {} inserted, {} updated, {} unchanged",
        args.file.display(),
        items.len(),
        report.inserted,
        report.updated,
        report.unchanged
    );
    Ok(())
}

fn list(g: &Global) -> Result<()> {
    let items = open_ledger(g)?.catalogue_items()?;
    for item in &items {
        if g.json {
            out!("{}", serde_json::to_string(item)?);
        } else {
            out!("{}\t{}\t{}", item.id, item.category.as_deref().unwrap_or("-"), item.title.as_deref().unwrap_or("-"));
        }
    }
    Ok(())
}
