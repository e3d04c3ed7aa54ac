//! Catalogue files read back exactly as they were written, and any bytes
//! read without a panic.

use hush_formats::catalogue::{read_catalogue_file, CatalogueFormat};
use hush_vocab::CatalogueItem;
use proptest::prelude::*;
use serde_json::{json, Map, Value};

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
