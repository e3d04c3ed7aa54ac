//! Catalogue files: the storefront's items read from CSV or JSONL, every
//! row checked ([`CatalogueItem::validate`]) and every id unique, so the
//! store (`hush_consent::Ledger::upsert_items`) receives a whole, valid
//! catalogue or nothing.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::Path;

use hush_vocab::{CatalogueItem, RowError};
use serde_json::{Map, Value};

use crate::{Error, Result};

/// The file formats a catalogue is read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CatalogueFormat {
    /// CSV with a header: the id column (`item_id`, `id`, `item` or
    /// `movieId`, else the first), `title`, `category` (or `genres`), and
    /// any other columns as string attributes.
    Csv,
    /// One JSON object per line with `item_id` (or `id`), optional `title`
    /// and `category` strings, and any other keys as attributes.
    Jsonl,
}

impl CatalogueFormat {
    /// The format a file's extension names: `.jsonl`/`.ndjson` are JSONL, anything else CSV.
    pub fn from_path(path: &Path) -> Self {
        match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("jsonl" | "ndjson") => CatalogueFormat::Jsonl,
            _ => CatalogueFormat::Csv,
        }
    }
}

/// Column names that hold the item id, in order of preference.
pub const ID_COLUMNS: [&str; 4] = ["item_id", "id", "item", "movieId"];
/// Column names that hold the category, in order of preference.
pub const CATEGORY_COLUMNS: [&str; 2] = ["category", "genres"];

/// Reads a whole catalogue file. Every row must be well formed and every id
/// appear once: a catalogue is small and its import all or nothing, so the
/// first bad row stops the read.
///
/// # Errors
/// [`Error::Io`] if the file cannot be read; [`Error::Row`] naming file,
/// line and column for a malformed row or a repeated id;
/// [`Error::InvalidField`] for a file without items.
pub fn read_catalogue_file(path: &Path, format: CatalogueFormat) -> Result<Vec<CatalogueItem>> {
    let label = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    let items = match format {
        CatalogueFormat::Csv => read_csv(&label, file)?,
        CatalogueFormat::Jsonl => read_jsonl(&label, file)?,
    };
    if items.is_empty() {
        return Err(Error::InvalidField { field: "catalogue", message: format!("{label}: no items") });
    }
    Ok(items)
}

/// Checks a parsed row and that its id is new, remembering it.
pub(crate) fn accept_row(
    label: &str,
    line: u64,
    item: CatalogueItem,
    seen: &mut HashMap<String, u64>,
    items: &mut Vec<CatalogueItem>,
) -> Result<()> {
    let row_error = |field: Option<&str>, message: String| {
        Error::Row(RowError { path: label.to_string(), line, field: field.map(str::to_string), message })
    };
    if let Err(e) = item.validate() {
        let (field, message) = match e {
            hush_vocab::Error::InvalidField { field, message } => (Some(field), message),
            other => (None, other.to_string()),
        };
        return Err(row_error(field, message));
    }
    if let Some(first) = seen.insert(item.id.clone(), line) {
        return Err(row_error(
            Some("item_id"),
            format!("item id repeated (first at line {first}); ids must be unique"),
        ));
    }
    items.push(item);
    Ok(())
}

fn read_csv(label: &str, input: impl std::io::Read) -> Result<Vec<CatalogueItem>> {
    let fatal = |line: u64, message: String| Error::Row(RowError { path: label.into(), line, field: None, message });
    let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(input);
    let headers: Vec<String> =
        reader.headers().map_err(|e| fatal(1, e.to_string()))?.iter().map(|h| h.trim().to_string()).collect();
    let find = |names: &[&str]| names.iter().find_map(|n| headers.iter().position(|h| h == n));
    let id_column = find(&ID_COLUMNS).unwrap_or(0);
    let title_column = find(&["title"]);
    let category_column = find(&CATEGORY_COLUMNS);
    let mut items = Vec::new();
    let mut seen = HashMap::new();
    for (row, record) in reader.records().enumerate() {
        let line = row as u64 + 2;
        let record = record.map_err(|e| fatal(line, e.to_string()))?;
        let text = |column: Option<usize>| {
            column.and_then(|c| record.get(c)).map(str::trim).filter(|v| !v.is_empty()).map(str::to_string)
        };
        let mut attributes = Map::new();
        for (c, value) in record.iter().enumerate() {
            if c != id_column && Some(c) != title_column && Some(c) != category_column {
                let name = headers.get(c).cloned().unwrap_or_else(|| format!("column_{}", c + 1));
                attributes.insert(name, Value::String(value.to_string()));
            }
        }
        let item = CatalogueItem {
            id: record.get(id_column).unwrap_or("").trim().to_string(),
            title: text(title_column),
            category: text(category_column),
            attributes,
        };
        accept_row(label, line, item, &mut seen, &mut items)?;
    }
    Ok(items)
}

fn read_jsonl(label: &str, input: impl std::io::Read) -> Result<Vec<CatalogueItem>> {
    let reader = std::io::BufReader::new(input);
    let mut items = Vec::new();
    let mut seen = HashMap::new();
    for (row, line_text) in reader.lines().enumerate() {
        let line = row as u64 + 1;
        let row_error = |field: Option<&str>, message: String| {
            Error::Row(RowError { path: label.into(), line, field: field.map(str::to_string), message })
        };
        let text = line_text.map_err(|e| row_error(None, e.to_string()))?;
        if text.trim().is_empty() {
            continue;
        }
        let mut object = match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(object)) => object,
            Ok(_) => return Err(row_error(None, "expected a JSON object".into())),
            Err(e) => return Err(row_error(None, format!("not JSON: {e}"))),
        };
        // An id may be a JSON number (MovieLens ids are); the other fields are strings.
        let mut take_text = |names: &[&str], numbers: bool| -> Result<Option<String>> {
            for name in names {
                match object.remove(*name) {
                    None | Some(Value::Null) => {}
                    Some(Value::String(s)) => return Ok(Some(s)),
                    Some(Value::Number(n)) if numbers => return Ok(Some(n.to_string())),
                    Some(_) => return Err(row_error(Some(name), "expected a string".into())),
                }
            }
            Ok(None)
        };
        let id = take_text(&ID_COLUMNS, true)?.ok_or_else(|| {
            row_error(Some("item_id"), "missing; expected `item_id` (or `id`) with the item's id".into())
        })?;
        let title = take_text(&["title"], false)?;
        let category = take_text(&CATEGORY_COLUMNS, false)?;
        let item = CatalogueItem { id, title, category, attributes: object };
        accept_row(label, line, item, &mut seen, &mut items)?;
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> std::path::PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn csv_rows_keep_title_category_and_other_columns_as_attributes() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "items.csv", "item_id,title,category,price\nsku-1,A lamp,home,9.5\nsku-2,,,\n");
        let items = read_catalogue_file(&path, CatalogueFormat::Csv).unwrap();
        assert_eq!(items[0].title.as_deref(), Some("A lamp"));
        assert_eq!(items[0].category.as_deref(), Some("home"));
        assert_eq!(items[0].attributes_json(), r#"{"price":"9.5"}"#);
        assert_eq!((items[1].title.as_ref(), items[1].category.as_ref()), (None, None));
    }

    #[test]
    fn bad_rows_name_file_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "items.csv", "item_id,category\nsku-1,a\nsku-2,b,c\n");
        let e = read_catalogue_file(&path, CatalogueFormat::Csv).unwrap_err().to_string();
        assert!(e.contains("items.csv:3"), "{e}");
        let path = write(&dir, "items.csv", "item_id,category\nsku-1,a\nsku-1,b\n");
        let e = read_catalogue_file(&path, CatalogueFormat::Csv).unwrap_err().to_string();
        assert!(e.contains("items.csv:3: field `item_id`: item id repeated (first at line 2)"), "{e}");
        let path = write(&dir, "items.csv", "item_id,category\n,a\n");
        let e = read_catalogue_file(&path, CatalogueFormat::Csv).unwrap_err().to_string();
        assert!(e.contains("items.csv:2: field `item_id`"), "{e}");
        let path = write(&dir, "items.jsonl", "{\"item_id\":\"a\",\"category\":\"x,y\"}\n");
        let e = read_catalogue_file(&path, CatalogueFormat::Jsonl).unwrap_err().to_string();
        assert!(e.contains("items.jsonl:1: field `category`") && e.contains("commas"), "{e}");
        let path = write(&dir, "items.jsonl", "{\"item_id\":\"a\",\"title\":3}\n");
        let e = read_catalogue_file(&path, CatalogueFormat::Jsonl).unwrap_err().to_string();
        assert!(e.contains("items.jsonl:1: field `title`: expected a string"), "{e}");
        let path = write(&dir, "items.csv", "item_id\n");
        assert!(read_catalogue_file(&path, CatalogueFormat::Csv).unwrap_err().to_string().contains("no items"));
    }

    #[test]
    fn jsonl_rows_keep_json_attributes() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "items.jsonl", "{\"id\":7,\"title\":\"T\",\"tags\":[\"a\"],\"price\":2}\n\n");
        let items = read_catalogue_file(&path, CatalogueFormat::Jsonl).unwrap();
        assert_eq!(items[0].id, "7");
        assert_eq!(items[0].attributes_json(), r#"{"price":2,"tags":["a"]}"#);
    }
}
