//! The item catalogue on both backends: upserts count what changed, and
//! what is stored reads back exactly.

use hush_consent::catalogue::{read_catalogue_file, CatalogueFormat};
use hush_consent::{CatalogueItem, Error, ItemUpsertReport, Timestamp};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

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

fn arb_text() -> impl Strategy<Value = String> {
    // Printable text with the characters CSV must quote.
    "[a-zA-Z0-9 ,\"'é;|-]{1,20}".prop_filter("trimmed", |s| s.trim() == s)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Rows written as CSV or JSONL read back as the same items.
    #[test]
    fn csv_and_jsonl_rows_round_trip(rows in prop::collection::btree_map(
        "[a-z0-9-]{1,12}",
        (prop::option::of(arb_text()), prop::option::of("[a-z ]{1,10}".prop_filter("trimmed", |s| s.trim() == s)),
         prop::option::of(arb_text())),
        1..20,
    )) {
        let dir = tempfile::tempdir().unwrap();
        let items: Vec<CatalogueItem> = rows.iter().map(|(id, (title, category, colour))| {
            let mut attributes = Map::new();
            attributes.insert("colour".into(), Value::String(colour.clone().unwrap_or_default()));
            CatalogueItem { id: id.clone(), title: title.clone(), category: category.clone(), attributes }
        }).collect();
        let csv_path = dir.path().join("items.csv");
        let mut writer = csv::Writer::from_path(&csv_path).unwrap();
        writer.write_record(["item_id", "title", "category", "colour"]).unwrap();
        for i in &items {
            let colour = i.attributes["colour"].as_str().unwrap();
            writer.write_record([i.id.as_str(), i.title.as_deref().unwrap_or(""), i.category.as_deref().unwrap_or(""), colour]).unwrap();
        }
        writer.flush().unwrap();
        prop_assert_eq!(&read_catalogue_file(&csv_path, CatalogueFormat::Csv).unwrap(), &items);
        let jsonl_path = dir.path().join("items.jsonl");
        let lines: Vec<String> = items.iter().map(|i| {
            let mut object = i.attributes.clone();
            object.insert("item_id".into(), json!(i.id));
            if let Some(t) = &i.title { object.insert("title".into(), json!(t)); }
            if let Some(c) = &i.category { object.insert("category".into(), json!(c)); }
            Value::Object(object).to_string()
        }).collect();
        std::fs::write(&jsonl_path, lines.join("\n")).unwrap();
        prop_assert_eq!(&read_catalogue_file(&jsonl_path, CatalogueFormat::Jsonl).unwrap(), &items);
    }

    /// Any bytes as a catalogue file: an error or items that all validate, never a panic.
    #[test]
    fn arbitrary_files_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400), jsonl in any::<bool>()) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("items");
        std::fs::write(&path, &bytes).unwrap();
        let format = if jsonl { CatalogueFormat::Jsonl } else { CatalogueFormat::Csv };
        if let Ok(items) = read_catalogue_file(&path, format) {
            for i in items {
                prop_assert!(i.validate().is_ok());
            }
        }
    }
}
