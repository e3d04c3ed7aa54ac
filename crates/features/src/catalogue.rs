//! The storefront's public item universe.
//!
//! # Privacy
//! A released model's item list must not come from private rows: the list
//! of items some consenting subject touched, in the order they first
//! appeared, is itself a release (one subject's rare item enters or leaves
//! it). A catalogue is public, so models carry it in canonical (sorted)
//! order, items nobody touched included, and events about items outside it
//! are dropped with the reason `unknown_item`.

use std::path::Path;

use hush_vocab::ItemId;

use crate::{Error, Result};

/// The item universe: catalogue ids in canonical (byte-wise sorted) order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Catalogue {
    /// Where it came from (a file path or `config`), for the card.
    pub source: String,
    /// Distinct ids, sorted.
    pub items: Vec<String>,
}

impl Catalogue {
    /// A catalogue from a list of ids (e.g. a config's `catalogue_items`).
    ///
    /// # Errors
    /// [`Error::InvalidParam`] for an empty list or an empty or over-long id.
    pub fn from_ids(source: &str, ids: impl IntoIterator<Item = String>) -> Result<Self> {
        let mut items = ids
            .into_iter()
            .enumerate()
            .map(|(i, id)| {
                checked_id(id).map_err(|message| Error::InvalidParam {
                    field: "catalogue",
                    message: format!("{source}: entry {}: {message}", i + 1),
                })
            })
            .collect::<Result<Vec<String>>>()?;
        items.sort_unstable();
        items.dedup();
        if items.is_empty() {
            return Err(Error::InvalidParam { field: "catalogue", message: format!("{source}: no items") });
        }
        Ok(Catalogue { source: source.to_string(), items })
    }

    /// Reads a CSV item file with a header; the item id is the column named
    /// `item_id`, `item` or `movieId`, else the first column. Other columns
    /// (titles, categories) are ignored.
    ///
    /// # Errors
    /// [`Error::InvalidParam`] naming `file:line` for an unreadable file, a
    /// row without an id, or an empty file.
    pub fn load(path: &Path) -> Result<Self> {
        let bad = |message: String| Error::InvalidParam { field: "catalogue", message };
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(true)
            .from_path(path)
            .map_err(|e| bad(format!("{}: {e}", path.display())))?;
        let headers = reader.headers().map_err(|e| bad(format!("{}:1: {e}", path.display())))?.clone();
        let column = headers.iter().position(|h| matches!(h.trim(), "item_id" | "item" | "movieId")).unwrap_or(0);
        let mut ids = Vec::new();
        for (row, record) in reader.records().enumerate() {
            let line = row + 2;
            let record = record.map_err(|e| bad(format!("{}:{line}: {e}", path.display())))?;
            let id = checked_id(record.get(column).unwrap_or("").trim().to_string()).map_err(|message| {
                bad(format!("{}:{line}: column `{}`: {message}", path.display(), &headers[column]))
            })?;
            ids.push(id);
        }
        Catalogue::from_ids(&path.display().to_string(), ids)
    }
}

impl Catalogue {
    /// The catalogue imported into the store (`hush items import`), if it
    /// holds one: the item universe when no catalogue file is given.
    ///
    /// # Errors
    /// [`Error::Consent`] if the store fails.
    pub fn from_store(ledger: &hush_consent::Ledger) -> Result<Option<Self>> {
        let items = ledger.catalogue_items()?;
        if items.is_empty() {
            return Ok(None);
        }
        let source = format!("the store's catalogue ({} items)", items.len());
        Catalogue::from_ids(&source, items.into_iter().map(|i| i.id)).map(Some)
    }
}

/// `id`, checked as an [`ItemId`] (the ingest rule for item ids), so a
/// catalogue cannot hold an id no event could name.
fn checked_id(id: String) -> std::result::Result<String, String> {
    ItemId::try_from(id).map(ItemId::into_string).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_sorted_distinct_ids_and_names_bad_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("items.csv");
        std::fs::write(&path, "item_id,category\nsku-2,books\nsku-1,music\nsku-2,books\n").unwrap();
        let c = Catalogue::load(&path).unwrap();
        assert_eq!(c.items, ["sku-1", "sku-2"]);
        std::fs::write(&path, "movieId,title\n10,A\n2,B\n").unwrap();
        assert_eq!(Catalogue::load(&path).unwrap().items, ["10", "2"]);
        std::fs::write(&path, "item_id,category\nsku-1,a\n,b\n").unwrap();
        let e = Catalogue::load(&path).unwrap_err().to_string();
        assert!(e.contains("items.csv:3") && e.contains("expected 1 to 128 bytes"), "{e}");
        // Longer than any event's item id may be.
        std::fs::write(&path, format!("item_id\n{}\n", "x".repeat(129))).unwrap();
        let e = Catalogue::load(&path).unwrap_err().to_string();
        assert!(e.contains("items.csv:2") && e.contains("found 129 bytes"), "{e}");
        std::fs::write(&path, "item_id\n").unwrap();
        assert!(Catalogue::load(&path).unwrap_err().to_string().contains("no items"));
    }
}
