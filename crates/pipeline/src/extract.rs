//! Consent-filtered extraction from event files and in-memory rows, with
//! the store's consent ledger, or as research data without one.

use std::path::PathBuf;

use hush_consent::{PseudonymKey, Timestamp};
use hush_features::{ConsentView, ExtractConfig, ExtractionReport, Extractor, FeatureSet};
use hush_formats::{CsvMapping, EventFormat, FieldContext, RawFields};

use crate::store::Store;
use crate::{Error, Result};

/// Event rows held in memory (a notebook's DataFrame or Arrow table), as
/// text columns named as in a CSV file with a header.
#[derive(Clone, Debug)]
pub struct EventRows {
    /// What the rows are called in errors and the report (`<DataFrame>`).
    pub label: String,
    /// Column name and its values, one text per row; an empty text is an
    /// empty field (a missing kind or value), as in a CSV file.
    pub columns: Vec<(String, Vec<String>)>,
    /// Which column holds which field, as `--mapping` for a CSV file.
    pub mapping: CsvMapping,
}

/// The field columns of a table (subject, item, kind, value, timestamp,
/// event id); `None` for an absent optional column.
type FieldColumns<'a> = [Option<&'a [String]>; 6];

impl EventRows {
    /// The field columns (subject, item, kind, value, timestamp, event id)
    /// and the context that parses them: a missing required column is an
    /// error naming it; an absent kind, value or event id column is empty,
    /// as in a CSV file.
    fn fields(&self) -> Result<(FieldContext, FieldColumns<'_>, usize)> {
        let find = |name: &str| self.columns.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_slice());
        let header: Vec<&str> = self.columns.iter().map(|(n, _)| n.as_str()).collect();
        let missing = |name: &str| {
            Error::Formats(hush_formats::Error::Row(hush_vocab::RowError {
                path: self.label.clone(),
                line: 0,
                field: Some(name.to_string()),
                message: format!("column is missing; the columns are `{}`", header.join(",")),
            }))
        };
        let required = |name: &str| find(name).ok_or_else(|| missing(name));
        // A mapped optional column must exist unless it keeps its default name.
        let optional = |name: Option<&str>, default: &str| match name {
            None => Ok(None),
            Some(n) if n == default && find(n).is_none() => Ok(None),
            Some(n) => required(n).map(Some),
        };
        let m = &self.mapping;
        let columns = [
            Some(required(&m.subject)?),
            Some(required(&m.item)?),
            optional(m.kind.as_deref(), "kind")?,
            optional(m.value.as_deref(), "value")?,
            Some(required(&m.timestamp)?),
            optional(m.event_id.as_deref(), "event_id")?,
        ];
        let rows = self.columns.first().map_or(0, |(_, v)| v.len());
        if let Some((name, values)) = self.columns.iter().find(|(_, v)| v.len() != rows) {
            return Err(Error::Invalid(format!(
                "{}: column `{name}` has {} values but the first column has {rows}",
                self.label,
                values.len()
            )));
        }
        let kind_name = if columns[2].is_some() { m.kind.as_deref().unwrap_or("kind") } else { "kind" };
        let value_name = if columns[3].is_some() { m.value.as_deref().unwrap_or("value") } else { "value" };
        let context = FieldContext::new(
            &self.label,
            [&m.subject, &m.item, kind_name, value_name, &m.timestamp],
            m.default_kind.clone(),
        )
        .with_event_id_name(m.event_id.as_deref().unwrap_or("event_id"));
        Ok((context, columns, rows))
    }
}

/// One input of an extraction.
#[derive(Clone, Debug)]
pub enum Input {
    /// An event file in a format.
    File {
        /// The file.
        path: PathBuf,
        /// Its format.
        format: EventFormat,
    },
    /// Rows held in memory.
    Rows(EventRows),
}

/// Extracts a feature set from inputs (with the store's consent, or as
/// research data) and/or the store's event store (`use_store`).
///
/// `progress` receives the rows read so far, every 100,000 rows.
///
/// # Privacy
/// With a store, every row passes the ledger's consent view as of the
/// snapshot; research data has no ledger, is pseudonymized under a throwaway
/// (or seeded) key, and its feature set is marked research-only, so no model
/// trained on it can ever be released.
///
/// # Errors
/// [`Error::Invalid`] for research data with the event store, [`Error::Store`]
/// for consented data without a store; extraction errors (malformed rows
/// named by file or label, row number and field).
pub fn extract(
    store: Option<&Store>,
    config: &ExtractConfig,
    inputs: &[Input],
    use_store: bool,
    now: Timestamp,
    progress: &mut dyn FnMut(u64),
) -> Result<(FeatureSet, ExtractionReport)> {
    if config.research_data && use_store {
        return Err(Error::Invalid(
            "--research-data reads files only: give --input (research data has no consent ledger)".into(),
        ));
    }
    // Research data has no ledger, and its output holds no pseudonyms, so a
    // throwaway key serves; otherwise the store's key must be used.
    let (ledger, key, view) = if config.research_data {
        // With a sampling seed the key comes from it too, so a seeded research
        // run is reproducible end to end (subject keys hang off pseudonyms).
        let key = match config.sampling_seed {
            Some(seed) => PseudonymKey::from_bytes(
                hush_features::SubjectSecret::seeded(seed).derive_bytes(b"research pseudonyms"),
            ),
            None => PseudonymKey::generate()?,
        };
        (None, key, ConsentView::research(config))
    } else {
        let Some(store) = store else {
            return Err(Error::Store(
                "data with consent needs the store's consent ledger: give the store, or mark the files as \
                 research data (no ledger, never released)"
                    .into(),
            ));
        };
        let ledger = store.ledger()?;
        let view = ConsentView::from_ledger(&ledger, config)?;
        (Some(ledger), store.key().clone(), view)
    };
    // Without a catalogue file, the store's catalogue (`hush items import`)
    // is the public item universe.
    let with_store_catalogue;
    let config = match (&config.catalogue, &ledger) {
        (None, Some(ledger)) => match hush_features::Catalogue::from_store(ledger)? {
            Some(catalogue) => {
                with_store_catalogue = ExtractConfig { catalogue: Some(catalogue), ..config.clone() };
                &with_store_catalogue
            }
            None => config,
        },
        _ => config,
    };
    let mut extractor = Extractor::new(config, &view, &key);
    for input in inputs {
        match input {
            Input::File { path, format } => extractor.add_file(path, format, progress)?,
            Input::Rows(rows) => {
                let (context, columns, n) = rows.fields()?;
                let text = |field: usize, row: usize| columns[field].map_or("", |c| c[row].as_str());
                // Rows are numbered from 1, as the data rows of a table.
                let fields = (0..n).map(|row| RawFields {
                    texts: [text(0, row), text(1, row), text(2, row), text(3, row), text(4, row)],
                    event_id: text(5, row),
                    line: row as u64 + 1,
                });
                extractor.add_rows(&rows.label, &context, fields, progress)?;
            }
        }
    }
    if let (true, Some(ledger)) = (use_store, &ledger) {
        extractor.add_store(ledger, progress)?;
    }
    Ok(extractor.finish(now)?)
}
