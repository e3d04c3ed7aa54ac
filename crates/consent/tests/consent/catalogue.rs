//! The item catalogue on both backends: upserts count what changed, and
//! what is stored reads back exactly.

use hush_consent::{CatalogueItem, Error, ItemUpsertReport, Timestamp};
use serde_json::{json, Value};

use crate::backends::on_both_backends;

fn item(id: &str, title: Option<&str>, category: Option<&str>, attributes: Value) -> CatalogueItem {
    let Value::Object(attributes) = attributes else { panic!("attributes must be an object") };
    CatalogueItem { id: id.into(), title: title.map(Into::into), category: category.map(Into::into), attributes }
}

fn report(inserted: u64, updated: u64, unchanged: u64) -> ItemUpsertReport {
    ItemUpsertReport { inserted, updated, unchanged }
}

on_both_backends! {
fn upserts_count_inserted_updated_and_unchanged(store) {
    let mut ledger = store.open();
    let now = Timestamp::from_unix_seconds(1_700_000_000);
    let first = vec![
        item("sku-2", Some("Lamp"), Some("home"), json!({ "price": "9.5" })),
        item("sku-1", None, None, json!({})),
    ];
    assert_eq!(ledger.upsert_items(&first, now).unwrap(), report(2, 0, 0));
    assert_eq!(ledger.upsert_items(&first, now).unwrap(), report(0, 0, 2), "a re-import changes nothing");
    let second = vec![
        item("sku-2", Some("Lamp"), Some("home"), json!({ "price": "8.0" })),
        item("sku-1", None, None, json!({})),
        item("sku-3", Some("Ünïcode title"), Some("toys"), json!({ "tags": ["a", "b"] })),
    ];
    assert_eq!(ledger.upsert_items(&second, now).unwrap(), report(1, 1, 1));
    let stored = store.open().catalogue_items().unwrap();
    let ids: Vec<&str> = stored.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, ["sku-1", "sku-2", "sku-3"], "sorted by id");
    assert_eq!(stored[1], second[0]);
    assert_eq!(stored[2], second[2]);
}
}

on_both_backends! {
fn a_bad_batch_writes_nothing(store) {
    let mut ledger = store.open();
    let now = Timestamp::from_unix_seconds(1_700_000_000);
    ledger.upsert_items(&[item("keep", Some("Kept"), None, json!({}))], now).unwrap();
    let repeated = [item("a", None, None, json!({})), item("a", Some("again"), None, json!({}))];
    let e = ledger.upsert_items(&repeated, now).unwrap_err();
    assert!(matches!(e, Error::InvalidField { .. }) && e.to_string().contains("item 2"), "{e}");
    let bad_category = [item("b", None, Some("x,y"), json!({}))];
    assert!(ledger.upsert_items(&bad_category, now).unwrap_err().to_string().contains("commas"));
    let stored = ledger.catalogue_items().unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].title.as_deref(), Some("Kept"));
}
}
