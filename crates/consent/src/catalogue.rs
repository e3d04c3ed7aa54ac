//! The storefront's item catalogue: the public item universe released
//! models use, with the titles and categories that serving shows.
//!
//! The catalogue is public by nature (it is what the storefront shows
//! everyone), so it is stored in plain text beside the ledger. It is read
//! from CSV or JSONL files by `hush-formats` (`hush_formats::catalogue`) and
//! upserted by item id ([`crate::Ledger::upsert_items`]), so importing the
//! same file again changes nothing and reports every row unchanged.

use std::collections::HashMap;

use serde::Serialize;

pub use hush_vocab::catalogue::{validate_category, CatalogueItem, MAX_CATEGORY_BYTES, MAX_TITLE_BYTES};

/// What an upsert of catalogue items did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ItemUpsertReport {
    /// Items the store did not hold before.
    pub inserted: u64,
    /// Items the store held with another title, category or attributes.
    pub updated: u64,
    /// Items the store already held exactly so.
    pub unchanged: u64,
}

/// How an item compares with what the store holds, given the stored
/// `(title, category, attributes JSON)` of every item.
pub(crate) fn classify(
    stored: &HashMap<String, (Option<String>, Option<String>, String)>,
    item: &CatalogueItem,
) -> Change {
    match stored.get(&item.id) {
        None => Change::Insert,
        Some((title, category, attributes))
            if *title == item.title && *category == item.category && *attributes == item.attributes_json() =>
        {
            Change::Unchanged
        }
        Some(_) => Change::Update,
    }
}

/// What an upsert does with one item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Change {
    Insert,
    Update,
    Unchanged,
}
