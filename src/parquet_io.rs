//! Parquet files in and out of the binary: catalogues read, batch
//! recommendations written. The `parquet` and `arrow` crates of the Apache
//! Arrow project do the format; this module maps columns by the same names
//! as the CSV forms, and names file, row and column for a malformed value.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use arrow_array::{
    Array, ArrayRef, BooleanArray, Float64Array, RecordBatch, RecordBatchReader, StringArray, UInt32Array,
};
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use arrow_schema::{DataType, Field, Schema};
use hush_consent::CatalogueItem;
use hush_formats::catalogue::{CATEGORY_COLUMNS, ID_COLUMNS};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use serde_json::{Map, Value};

use crate::commands::batch::BatchRow;

/// Rows per record batch written: a few MB of columns at a time.
const WRITE_BATCH_ROWS: usize = 64 * 1024;

/// Reads a catalogue from Parquet: the id column (`item_id`, `id`, `item`
/// or `movieId`; any type, written as text), `title` and `category` (or
/// `genres`) as text, every other column an attribute as text (as in CSV).
///
/// # Errors
/// The file, row and column of a null id, an invalid value or a repeated id.
pub fn read_catalogue(path: &Path) -> Result<Vec<CatalogueItem>> {
    let file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .with_context(|| format!("{}: not a Parquet file", path.display()))?
        .build()?;
    let schema = reader.schema();
    let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let find = |wanted: &[&str]| wanted.iter().find_map(|n| names.iter().position(|h| h == n));
    let id_column = find(&ID_COLUMNS).unwrap_or(0);
    let (title_column, category_column) = (find(&["title"]), find(&CATEGORY_COLUMNS));
    let options = FormatOptions::default();
    let mut items = Vec::new();
    let mut seen = std::collections::HashMap::new();
    let mut row = 0u64;
    for batch in reader {
        let batch = batch.with_context(|| format!("{}: after row {row}", path.display()))?;
        let formatters = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("{}: a column hush cannot read as text", path.display()))?;
        for r in 0..batch.num_rows() {
            row += 1;
            let text = |c: usize| -> Option<String> {
                let column = batch.column(c);
                (!column.is_null(r)).then(|| formatters[c].value(r).to_string())
            };
            let bad = |c: usize, message: String| {
                anyhow::anyhow!("{}: row {row}: column `{}`: {message}", path.display(), names[c])
            };
            let id = text(id_column).ok_or_else(|| bad(id_column, "null; expected the item's id".into()))?;
            let mut attributes = Map::new();
            for (c, name) in names.iter().enumerate() {
                if c != id_column && Some(c) != title_column && Some(c) != category_column {
                    attributes.insert(name.clone(), text(c).map(Value::String).unwrap_or(Value::Null));
                }
            }
            let item = CatalogueItem {
                id,
                title: title_column.and_then(text).filter(|t| !t.is_empty()),
                category: category_column.and_then(text).filter(|t| !t.is_empty()),
                attributes,
            };
            if let Err(e) = item.validate() {
                let column = match &e {
                    hush_vocab::Error::InvalidField { field: "title", .. } => title_column,
                    hush_vocab::Error::InvalidField { field: "category", .. } => category_column,
                    _ => Some(id_column),
                };
                return Err(bad(column.unwrap_or(id_column), e.to_string()));
            }
            if let Some(first) = seen.insert(item.id.clone(), row) {
                return Err(bad(id_column, format!("item id repeated (first at row {first}); ids must be unique")));
            }
            items.push(item);
        }
    }
    if items.is_empty() {
        bail!("{}: no items", path.display());
    }
    Ok(items)
}

/// Writes batch recommendations as Parquet, a record batch at a time.
pub struct BatchWriter {
    writer: ArrowWriter<std::fs::File>,
    schema: Arc<Schema>,
    pending: Vec<BatchRow>,
}

impl BatchWriter {
    /// A writer into `file` (already created, owner-only).
    pub fn new(file: std::fs::File) -> Result<Self> {
        let schema = Arc::new(batch_schema());
        let props = parquet::file::properties::WriterProperties::builder()
            .set_compression(parquet::basic::Compression::SNAPPY)
            .build();
        let writer = ArrowWriter::try_new(file, schema.clone(), Some(props))?;
        Ok(BatchWriter { writer, schema, pending: Vec::new() })
    }

    /// Adds rows; a full record batch is written out.
    pub fn write(&mut self, rows: &[BatchRow]) -> Result<()> {
        self.pending.extend_from_slice(rows);
        if self.pending.len() >= WRITE_BATCH_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let rows = std::mem::take(&mut self.pending);
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.subject_pseudonym.as_str()))),
            Arc::new(UInt32Array::from_iter_values(rows.iter().map(|r| r.rank))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.item.as_str()))),
            Arc::new(StringArray::from_iter(rows.iter().map(|r| r.title.as_deref()))),
            Arc::new(StringArray::from_iter(rows.iter().map(|r| r.category.as_deref()))),
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.score))),
            Arc::new(BooleanArray::from_iter(rows.iter().map(|r| Some(r.personalized)))),
        ];
        self.writer.write(&RecordBatch::try_new(self.schema.clone(), columns)?)?;
        Ok(())
    }

    /// Writes what is pending and the file footer.
    pub fn finish(mut self) -> Result<()> {
        self.flush()?;
        self.writer.close()?;
        Ok(())
    }
}

/// The columns of batch recommendations, as in the CSV form.
pub fn batch_schema() -> Schema {
    Schema::new(vec![
        Field::new("subject_pseudonym", DataType::Utf8, false),
        Field::new("rank", DataType::UInt32, false),
        Field::new("item", DataType::Utf8, false),
        Field::new("title", DataType::Utf8, true),
        Field::new("category", DataType::Utf8, true),
        Field::new("score", DataType::Float64, false),
        Field::new("personalized", DataType::Boolean, false),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Writes a catalogue as Parquet with the columns of its CSV form.
    fn write_catalogue(path: &Path, items: &[CatalogueItem]) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("item_id", DataType::Utf8, false),
            Field::new("title", DataType::Utf8, true),
            Field::new("category", DataType::Utf8, true),
            Field::new("colour", DataType::Utf8, true),
        ]));
        let colour = |i: &CatalogueItem| i.attributes.get("colour").and_then(Value::as_str).map(str::to_string);
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(items.iter().map(|i| i.id.as_str()))),
            Arc::new(StringArray::from_iter(items.iter().map(|i| i.title.as_deref()))),
            Arc::new(StringArray::from_iter(items.iter().map(|i| i.category.as_deref()))),
            Arc::new(StringArray::from_iter(items.iter().map(colour))),
        ];
        let file = std::fs::File::create(path).unwrap();
        let mut writer = ArrowWriter::try_new(file, schema.clone(), None).unwrap();
        writer.write(&RecordBatch::try_new(schema, columns).unwrap()).unwrap();
        writer.close().unwrap();
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        /// Catalogue rows written as Parquet read back as the same items.
        #[test]
        fn parquet_catalogue_rows_round_trip(rows in prop::collection::btree_map(
            "[a-z0-9-]{1,12}",
            (prop::option::of("[a-zA-Z0-9 ,\"é|-]{1,20}"), prop::option::of("[a-z]{1,10}"), prop::option::of("[a-z ]{0,8}")),
            1..30,
        )) {
            let dir = tempfile::tempdir().unwrap();
            let items: Vec<CatalogueItem> = rows.into_iter().map(|(id, (title, category, colour))| {
                let mut attributes = Map::new();
                attributes.insert("colour".into(), colour.map(Value::String).unwrap_or(Value::Null));
                CatalogueItem { id, title, category, attributes }
            }).collect();
            let path = dir.path().join("items.parquet");
            write_catalogue(&path, &items);
            prop_assert_eq!(read_catalogue(&path).unwrap(), items);
        }

        /// Any bytes as a Parquet catalogue: an error, never a panic.
        #[test]
        fn arbitrary_bytes_are_an_error_not_a_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("items.parquet");
            std::fs::write(&path, &bytes).unwrap();
            prop_assert!(read_catalogue(&path).is_err());
        }
    }

    #[test]
    fn a_bad_value_names_file_row_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("items.parquet");
        let item = |id: &str, category: Option<&str>| CatalogueItem {
            id: id.into(),
            title: None,
            category: category.map(Into::into),
            attributes: [("colour".to_string(), Value::Null)].into_iter().collect(),
        };
        write_catalogue(&path, &[item("a", Some("x")), item("b", Some("x,y"))]);
        let e = read_catalogue(&path).unwrap_err().to_string();
        assert!(e.contains("items.parquet: row 2: column `category`") && e.contains("commas"), "{e}");
        write_catalogue(&path, &[item("a", None), item("a", None)]);
        let e = read_catalogue(&path).unwrap_err().to_string();
        assert!(e.contains("row 2: column `item_id`: item id repeated (first at row 1)"), "{e}");
    }
}
