//! Readers for the file formats hush imports: storefront events in several
//! shapes, and consent records.
//!
//! Every reader yields one result per row. A row that cannot be read is a
//! [`RowError`] naming file, line and field, and reading continues with the
//! next row; problems that make the whole file unreadable (I/O, a header that
//! belongs to another format) are fatal [`Error`]s.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::str::FromStr;

use serde::Deserialize;

use hush_vocab::event::validate_item_id;
use hush_vocab::time::truncate_for_message;
use hush_vocab::{ConsentChange, ConsentSource, Event, EventKind, Purpose, RowError, Timestamp};

use crate::parquet_table::{ParquetTable, Wanted};
use crate::{Error, Result};

/// The event file formats hush reads.
#[derive(Clone, Debug, PartialEq)]
pub enum EventFormat {
    /// MovieLens `ratings.csv`: header `userId,movieId,rating,timestamp`.
    MovielensCsv,
    /// MovieLens 100K `u.data`: tab-separated `user item rating timestamp`, no header.
    Udata,
    /// MovieLens 1M/10M `ratings.dat`: `UserID::MovieID::Rating::Timestamp`, no header.
    MovielensDat,
    /// A CSV file with a header, read through a column mapping.
    Csv(CsvMapping),
    /// One JSON object per line: `subject_id`, `item_id`, `kind`, `value`,
    /// `timestamp`, and optionally `event_id`.
    Jsonl,
    /// A Parquet file whose columns are named by the mapping (the same
    /// names as CSV by default; the delimiter is unused). Text, integer,
    /// float, boolean and dictionary columns are read as their text;
    /// `timestamp` columns may also be Parquet timestamps of any unit.
    Parquet(CsvMapping),
}

impl EventFormat {
    /// The names accepted on the command line.
    pub const NAMES: &'static str = "movielens-csv, udata, dat, csv, jsonl, parquet";

    /// Parses a format name; `csv` uses the default [`CsvMapping`].
    ///
    /// # Errors
    /// [`Error::InvalidField`] naming the accepted formats.
    pub fn from_name(name: &str) -> Result<Self> {
        Ok(match name {
            "movielens-csv" => EventFormat::MovielensCsv,
            "udata" => EventFormat::Udata,
            "dat" => EventFormat::MovielensDat,
            "csv" => EventFormat::Csv(CsvMapping::default()),
            "jsonl" => EventFormat::Jsonl,
            "parquet" => EventFormat::Parquet(CsvMapping::default()),
            other => {
                return Err(Error::InvalidField {
                    field: "format",
                    message: format!(
                        "unknown event format `{}`; expected one of {}",
                        truncate_for_message(other),
                        Self::NAMES
                    ),
                })
            }
        })
    }

    /// The format's short name.
    pub fn name(&self) -> &'static str {
        match self {
            EventFormat::MovielensCsv => "movielens-csv",
            EventFormat::Udata => "udata",
            EventFormat::MovielensDat => "dat",
            EventFormat::Csv(_) => "csv",
            EventFormat::Jsonl => "jsonl",
            EventFormat::Parquet(_) => "parquet",
        }
    }

    /// The format a file's extension suggests: `.parquet` is Parquet,
    /// `.jsonl`/`.ndjson` JSONL, `.dat` MovieLens `::`, anything else CSV
    /// with the default mapping.
    pub fn from_path(path: &Path) -> Self {
        match path.extension().and_then(|e| e.to_str()) {
            Some("parquet") | Some("pq") => EventFormat::Parquet(CsvMapping::default()),
            Some("jsonl") | Some("ndjson") => EventFormat::Jsonl,
            Some("dat") => EventFormat::MovielensDat,
            _ => EventFormat::Csv(CsvMapping::default()),
        }
    }

    /// This format with its columns named by `mapping` (CSV and Parquet only).
    ///
    /// # Errors
    /// [`Error::InvalidField`] for a format whose columns are fixed.
    pub fn with_mapping(self, mapping: CsvMapping) -> Result<Self> {
        match self {
            EventFormat::Csv(_) => Ok(EventFormat::Csv(mapping)),
            EventFormat::Parquet(_) => Ok(EventFormat::Parquet(mapping)),
            other => Err(Error::InvalidField {
                field: "mapping",
                message: format!("a column mapping applies to csv and parquet, not to {}", other.name()),
            }),
        }
    }
}

/// Which columns of a generic CSV file hold which event field.
#[derive(Clone, Debug, PartialEq)]
pub struct CsvMapping {
    /// Column with the external subject id.
    pub subject: String,
    /// Column with the item id.
    pub item: String,
    /// Column with the event kind; when absent every row is `default_kind`.
    pub kind: Option<String>,
    /// Column with the value; when absent the value is 1.0.
    pub value: Option<String>,
    /// Column with the timestamp (RFC 3339 or unix seconds).
    pub timestamp: String,
    /// Column with the source's own event id (an order line, a tracking
    /// id), which makes a retried import idempotent; optional.
    pub event_id: Option<String>,
    /// Kind used when there is no kind column.
    pub default_kind: EventKind,
    /// Field separator byte.
    pub delimiter: u8,
}

impl Default for CsvMapping {
    /// The layout `hush synth` writes: `subject_id,item_id,kind,value,timestamp`,
    /// and an `event_id` column when the file has one.
    fn default() -> Self {
        CsvMapping {
            subject: "subject_id".into(),
            item: "item_id".into(),
            kind: Some("kind".into()),
            value: Some("value".into()),
            timestamp: "timestamp".into(),
            event_id: Some("event_id".into()),
            default_kind: EventKind::View,
            delimiter: b',',
        }
    }
}

impl FromStr for CsvMapping {
    type Err = Error;

    /// Parses `field=column` pairs separated by commas, e.g.
    /// `subject=user,item=sku,timestamp=ts,kind=,default_kind=purchase,delimiter=;`.
    /// Unnamed fields keep their default; an empty column name means "no such column".
    fn from_str(text: &str) -> Result<Self> {
        let bad = |message: String| Error::InvalidField { field: "csv mapping", message };
        let mut mapping = CsvMapping::default();
        for pair in text.split(',').filter(|p| !p.trim().is_empty()) {
            let (key, column) = pair
                .split_once('=')
                .ok_or_else(|| bad(format!("`{}` is not of the form field=column", truncate_for_message(pair))))?;
            let column = column.trim().to_string();
            let optional = |c: String| if c.is_empty() { None } else { Some(c) };
            match key.trim() {
                "subject" => mapping.subject = column,
                "item" => mapping.item = column,
                "kind" => mapping.kind = optional(column),
                "value" => mapping.value = optional(column),
                "timestamp" => mapping.timestamp = column,
                "event_id" => mapping.event_id = optional(column),
                "default_kind" => mapping.default_kind = column.parse()?,
                "delimiter" => {
                    let bytes = match column.as_str() {
                        "tab" | "\\t" => vec![b'\t'],
                        other => other.as_bytes().to_vec(),
                    };
                    if bytes.len() != 1 {
                        return Err(bad("delimiter must be a single byte (or `tab`)".into()));
                    }
                    mapping.delimiter = bytes[0];
                }
                other => {
                    return Err(bad(format!(
                        "unknown field `{}`; expected subject, item, kind, value, timestamp, event_id, default_kind, delimiter",
                        truncate_for_message(other)
                    )))
                }
            }
        }
        for (name, column) in
            [("subject", &mapping.subject), ("item", &mapping.item), ("timestamp", &mapping.timestamp)]
        {
            if column.is_empty() {
                return Err(bad(format!("the `{name}` column is required")));
            }
        }
        Ok(mapping)
    }
}

/// The index of an optional column: `None` when unmapped, and also when it
/// is the default name (`kind`, `value`) and the header has no such column
/// (a file of one kind of event, or without values, needs no `kind=` or
/// `value=` in the mapping); a column named on purpose must exist.
fn optional_column(
    header: &[String],
    column: Option<&str>,
    default_name: &str,
    find: &dyn Fn(&str) -> Result<usize>,
) -> Result<Option<usize>> {
    match column {
        None => Ok(None),
        Some(name) if name == default_name && !header.iter().any(|h| h == name) => Ok(None),
        Some(name) => find(name).map(Some),
    }
}

/// An event as read from a file: the raw subject id is still attached and
/// must be pseudonymized by the caller before anything is stored.
#[derive(Clone, Debug, PartialEq)]
pub struct RawEvent {
    /// The external subject id, exactly as in the file.
    pub subject_id: String,
    /// The event.
    pub event: Event,
    /// The source's own id of the event, when the file has one.
    pub event_id: Option<String>,
    /// Where the row is: its 1-based line (for Parquet, its data row).
    pub line: u64,
}

/// An event borrowed from the reader's buffer, valid until the next read:
/// the allocation-free form the extractor uses on hot paths.
#[derive(Clone, Debug, PartialEq)]
pub struct RawEventRef<'a> {
    /// The external subject id, exactly as in the file.
    pub subject_id: &'a str,
    /// The item's catalogue id.
    pub item: &'a str,
    /// What happened.
    pub kind: EventKind,
    /// The rating, or a quantity (1.0 when absent).
    pub value: f32,
    /// When it happened.
    pub at: Timestamp,
    /// The source's own id of the event, when the row has one.
    pub event_id: Option<&'a str>,
    /// Where the row is: its 1-based line (for Parquet and tables, its data row).
    pub line: u64,
}

impl RawEventRef<'_> {
    /// An owned copy.
    pub fn to_owned_event(&self) -> RawEvent {
        RawEvent {
            subject_id: self.subject_id.to_string(),
            event: Event { item: self.item.to_string(), kind: self.kind.clone(), value: self.value, at: self.at },
            event_id: self.event_id.map(str::to_string),
            line: self.line,
        }
    }
}

/// Reads events row by row from one file.
pub struct EventReader {
    label: String,
    inner: Inner,
    rows: u64,
    /// The last JSONL row, owned, so that a [`RawEventRef`] can borrow from it.
    json_scratch: Option<JsonEvent>,
    context: FieldContext,
}

/// The five text fields of one row, in the order subject, item, kind,
/// value, timestamp, and the event id, not yet checked; empty where the
/// format has no such field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawFields<'a> {
    /// The field texts.
    pub texts: [&'a str; 5],
    /// The source's event id ("" when the row has none).
    pub event_id: &'a str,
    /// 1-based line of the row (for Parquet and tables, the data row).
    pub line: u64,
}

/// What turns a format's [`RawFields`] into an event or a precise error:
/// the input's label, the format's field names, and the default kind.
///
/// Splitting reading from checking lets a pipeline read on one thread and
/// check on another, and skip checking rows it will drop anyway.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldContext {
    label: String,
    names: [String; 5],
    event_id_name: String,
    default_kind: EventKind,
}

impl FieldContext {
    /// The context of rows labelled `label` (a file path, or `<DataFrame>`)
    /// whose five fields (subject, item, kind, value, timestamp) are named
    /// `names` in errors; an empty kind field means `default_kind`.
    pub fn new(label: &str, names: [&str; 5], default_kind: EventKind) -> Self {
        FieldContext {
            label: label.to_string(),
            names: names.map(str::to_string),
            event_id_name: "event_id".into(),
            default_kind,
        }
    }

    /// The same context, naming the event id field `name` in errors.
    pub fn with_event_id_name(mut self, name: &str) -> Self {
        self.event_id_name = name.to_string();
        self
    }

    /// What the event id field is called in this input (for errors found later, on import).
    pub fn event_id_name(&self) -> &str {
        &self.event_id_name
    }

    /// The subject id of a row, checked (1–256 bytes, no control characters).
    ///
    /// # Errors
    /// A [`RowError`] naming the subject field.
    pub fn subject<'a>(&self, fields: &RawFields<'a>) -> std::result::Result<&'a str, RowError> {
        let subject = fields.texts[0];
        if let Err(message) = hush_vocab::subject::check(subject) {
            return Err(row_error(&self.label, fields.line, Some(&self.names[0]), message.into()));
        }
        Ok(subject)
    }

    /// Checks every field and builds the event.
    ///
    /// # Errors
    /// A [`RowError`] naming the first bad field and the expected form.
    pub fn parse<'a>(&self, fields: &RawFields<'a>) -> std::result::Result<RawEventRef<'a>, RowError> {
        self.subject(fields)?;
        self.parse_after_subject(fields)
    }

    /// Checks every field but the subject (which the caller checked with
    /// [`FieldContext::subject`], possibly on an earlier row) and builds the event.
    ///
    /// # Errors
    /// A [`RowError`] naming the first bad field and the expected form.
    pub fn parse_after_subject<'a>(&self, fields: &RawFields<'a>) -> std::result::Result<RawEventRef<'a>, RowError> {
        let names = [&*self.names[0], &*self.names[1], &*self.names[2], &*self.names[3], &*self.names[4]];
        let mut event = build_event(fields.texts, &self.default_kind, names, &self.label, fields.line)?;
        if !fields.event_id.is_empty() {
            hush_vocab::event::validate_event_id(fields.event_id)
                .map_err(|e| row_error(&self.label, fields.line, Some(&self.event_id_name), e.to_string()))?;
            event.event_id = Some(fields.event_id);
        }
        Ok(event)
    }
}

enum Inner {
    Csv {
        reader: csv::Reader<Box<dyn Read + Send>>,
        /// A `StringRecord` validates a whole row's UTF-8 at once, much faster than field by field.
        record: csv::StringRecord,
        columns: Columns,
    },
    Lines {
        reader: BufReader<Box<dyn Read + Send>>,
        buffer: Vec<u8>,
        line: u64,
        shape: LineShape,
    },
    Parquet {
        // Boxed: a Parquet reader is large, and most files are text.
        table: Box<ParquetTable<6>>,
        context: FieldContext,
    },
}

#[derive(Clone, Copy)]
enum LineShape {
    DoubleColon,
    Jsonl,
}

/// Column positions of a CSV-shaped format.
struct Columns {
    subject: usize,
    item: usize,
    kind: Option<usize>,
    value: Option<usize>,
    timestamp: usize,
    event_id: Option<usize>,
    default_kind: EventKind,
    names: Vec<String>,
    expected_fields: usize,
    separator_name: &'static str,
}

impl Columns {
    /// The layout of MovieLens-style rating files: user, item, rating, timestamp.
    fn ratings(names: Vec<String>, separator_name: &'static str) -> Self {
        Columns {
            subject: 0,
            item: 1,
            kind: None,
            value: Some(2),
            timestamp: 3,
            event_id: None,
            default_kind: EventKind::Rating,
            names,
            expected_fields: 4,
            separator_name,
        }
    }
}

const MOVIELENS_HEADER: [&str; 4] = ["userId", "movieId", "rating", "timestamp"];
const RATING_FIELDS: [&str; 4] = ["user_id", "item_id", "rating", "timestamp"];

impl EventReader {
    /// Opens `path` in `format`.
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be opened, [`Error::Row`] if its header
    /// does not fit the format.
    pub fn open(path: &Path, format: &EventFormat) -> Result<Self> {
        if let EventFormat::Parquet(mapping) = format {
            // Read from the file itself: Parquet seeks to its footer and then
            // to each column chunk, so nothing is read twice or held whole.
            let label = path.display().to_string();
            let table = ParquetTable::open(path, parquet_columns(mapping))?;
            let inner = parquet_inner(&label, table, mapping);
            return Ok(Self::new(label, inner));
        }
        let file = File::open(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
        Self::from_reader(path.display().to_string(), Box::new(file), format)
    }

    /// Reads from any byte stream; `label` names it in error messages.
    ///
    /// # Errors
    /// As [`EventReader::open`].
    pub fn from_reader(label: String, input: Box<dyn Read + Send>, format: &EventFormat) -> Result<Self> {
        let inner = match format {
            EventFormat::MovielensDat => Inner::Lines {
                reader: BufReader::with_capacity(1 << 16, input),
                buffer: Vec::new(),
                line: 0,
                shape: LineShape::DoubleColon,
            },
            EventFormat::Jsonl => Inner::Lines {
                reader: BufReader::with_capacity(1 << 16, input),
                buffer: Vec::new(),
                line: 0,
                shape: LineShape::Jsonl,
            },
            EventFormat::Udata => {
                let reader = csv::ReaderBuilder::new()
                    .delimiter(b'\t')
                    .has_headers(false)
                    .flexible(true)
                    .quoting(false)
                    .from_reader(input);
                let columns = Columns::ratings(RATING_FIELDS.iter().map(|s| s.to_string()).collect(), "tab");
                Inner::Csv { reader, record: csv::StringRecord::new(), columns }
            }
            EventFormat::MovielensCsv => {
                let mut reader = csv::ReaderBuilder::new().has_headers(true).flexible(true).from_reader(input);
                let header = read_header(&mut reader, &label)?;
                if header != MOVIELENS_HEADER {
                    return Err(Error::Row(RowError {
                        path: label,
                        line: 1,
                        field: None,
                        message: format!(
                            "expected the MovieLens header `{}`, found `{}`",
                            MOVIELENS_HEADER.join(","),
                            truncate_for_message(&header.join(","))
                        ),
                    }));
                }
                let columns = Columns::ratings(header, "','");
                Inner::Csv { reader, record: csv::StringRecord::new(), columns }
            }
            EventFormat::Csv(mapping) => {
                let mut reader = csv::ReaderBuilder::new()
                    .delimiter(mapping.delimiter)
                    .has_headers(true)
                    .flexible(true)
                    .from_reader(input);
                let header = read_header(&mut reader, &label)?;
                let find = |column: &str| -> Result<usize> {
                    header.iter().position(|h| h == column).ok_or_else(|| {
                        Error::Row(RowError {
                            path: label.clone(),
                            line: 1,
                            field: Some(column.to_string()),
                            message: format!(
                                "column is missing from the header `{}` (separator {:?})",
                                truncate_for_message(&header.join(&(mapping.delimiter as char).to_string())),
                                mapping.delimiter as char
                            ),
                        })
                    })
                };
                let columns = Columns {
                    subject: find(&mapping.subject)?,
                    item: find(&mapping.item)?,
                    kind: optional_column(&header, mapping.kind.as_deref(), "kind", &find)?,
                    value: optional_column(&header, mapping.value.as_deref(), "value", &find)?,
                    timestamp: find(&mapping.timestamp)?,
                    event_id: optional_column(&header, mapping.event_id.as_deref(), "event_id", &find)?,
                    default_kind: mapping.default_kind.clone(),
                    expected_fields: header.len(),
                    names: header,
                    separator_name: if mapping.delimiter == b',' { "','" } else { "the mapped delimiter" },
                };
                Inner::Csv { reader, record: csv::StringRecord::new(), columns }
            }
            EventFormat::Parquet(mapping) => {
                let table = ParquetTable::from_reader(label.clone(), input, parquet_columns(mapping))?;
                parquet_inner(&label, table, mapping)
            }
        };
        Ok(Self::new(label, inner))
    }

    fn new(label: String, inner: Inner) -> Self {
        let context = match &inner {
            Inner::Csv { columns, .. } => {
                let name = |i: usize| columns.names[i].as_str();
                FieldContext::new(
                    &label,
                    [
                        name(columns.subject),
                        name(columns.item),
                        columns.kind.map_or("kind", name),
                        columns.value.map_or("value", name),
                        name(columns.timestamp),
                    ],
                    columns.default_kind.clone(),
                )
                .with_event_id_name(columns.event_id.map_or("event_id", name))
            }
            Inner::Parquet { context, .. } => context.clone(),
            Inner::Lines { shape: LineShape::DoubleColon, .. } => {
                FieldContext::new(&label, RATING_FIELDS_WITH_KIND, EventKind::Rating)
            }
            Inner::Lines { shape: LineShape::Jsonl, .. } => FieldContext::new(&label, JSONL_FIELDS, EventKind::View),
        };
        EventReader { label, inner, rows: 0, json_scratch: None, context }
    }

    /// Data rows read so far (header excluded).
    pub fn rows_read(&self) -> u64 {
        self.rows
    }

    /// The next row, owned: `Ok(None)` at the end, `Ok(Some(Err(_)))` for a malformed row.
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be read any further.
    pub fn next_row(&mut self) -> Result<Option<std::result::Result<RawEvent, RowError>>> {
        Ok(self.next_row_ref()?.map(|row| row.map(|e| e.to_owned_event())))
    }

    /// The next row, borrowed from the reader's buffer (no allocation for
    /// CSV-shaped and `::` formats).
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be read any further.
    pub fn next_row_ref(&mut self) -> Result<Option<std::result::Result<RawEventRef<'_>, RowError>>> {
        let row = read_fields(&mut self.inner, &mut self.json_scratch, &self.label, &mut self.rows)?;
        Ok(row.map(|fields| fields.and_then(|f| self.context.parse(&f))))
    }

    /// The next row's fields, split but not checked: the cheapest read.
    /// Check them with [`EventReader::field_context`].
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be read any further.
    pub fn next_fields(&mut self) -> Result<Option<std::result::Result<RawFields<'_>, RowError>>> {
        read_fields(&mut self.inner, &mut self.json_scratch, &self.label, &mut self.rows)
    }

    /// What checks this reader's [`RawFields`].
    pub fn field_context(&self) -> &FieldContext {
        &self.context
    }
}

/// The columns a Parquet event file is read by: the mapping's five, and the event id.
fn parquet_columns(mapping: &CsvMapping) -> [Wanted<'_>; 6] {
    // As in CSV: an optional column under its default name may be absent;
    // one the mapping names otherwise must exist.
    fn optional<'a>(name: Option<&'a str>, default: &str) -> Wanted<'a> {
        match name {
            None => Wanted { name: "", required: false },
            Some(n) => Wanted { name: n, required: n != default },
        }
    }
    [
        Wanted { name: &mapping.subject, required: true },
        Wanted { name: &mapping.item, required: true },
        optional(mapping.kind.as_deref(), "kind"),
        optional(mapping.value.as_deref(), "value"),
        Wanted { name: &mapping.timestamp, required: true },
        optional(mapping.event_id.as_deref(), "event_id"),
    ]
}

fn parquet_inner(label: &str, table: ParquetTable<6>, mapping: &CsvMapping) -> Inner {
    let name = |i: usize, default: &str| table.column_name(i).unwrap_or(default).to_string();
    let names = [name(0, ""), name(1, ""), name(2, "kind"), name(3, "value"), name(4, "")];
    let context = FieldContext::new(
        label,
        [&*names[0], &*names[1], &*names[2], &*names[3], &*names[4]],
        mapping.default_kind.clone(),
    )
    .with_event_id_name(&name(5, "event_id"));
    Inner::Parquet { table: Box::new(table), context }
}

const JSONL_FIELDS: [&str; 5] = ["subject_id", "item_id", "kind", "value", "timestamp"];

/// Reads one row's fields; the reader's parts are passed apart so the result
/// can borrow from them while the field context stays available.
fn read_fields<'a>(
    inner: &'a mut Inner,
    json_scratch: &'a mut Option<JsonEvent>,
    label: &str,
    rows: &mut u64,
) -> Result<Option<std::result::Result<RawFields<'a>, RowError>>> {
    let io = |source: std::io::Error| Error::Io { path: label.into(), source };
    match inner {
        Inner::Parquet { table, .. } => {
            let row = table.next_row()?;
            Ok(row.map(|([subject, item, kind, value, timestamp, event_id], line)| {
                *rows = line;
                Ok(RawFields { texts: [subject, item, kind, value, timestamp], event_id, line })
            }))
        }
        Inner::Csv { reader, record, columns } => match reader.read_record(record) {
            Ok(false) => Ok(None),
            Ok(true) => {
                *rows += 1;
                let line = record.position().map_or(0, |p| p.line());
                Ok(Some(csv_fields(record, columns, label, line)))
            }
            Err(e) => match e.into_kind() {
                csv::ErrorKind::Io(source) => Err(io(source)),
                csv::ErrorKind::Utf8 { pos, err } => {
                    *rows += 1;
                    let field = columns.names.get(err.field()).map_or("?", String::as_str);
                    let line = pos.map_or(0, |p| p.line());
                    Ok(Some(Err(row_error(label, line, Some(field), "is not valid UTF-8".into()))))
                }
                other => {
                    *rows += 1;
                    Ok(Some(Err(row_error(label, 0, None, format!("unreadable CSV: {other:?}")))))
                }
            },
        },
        Inner::Lines { reader, buffer, line, shape } => {
            let text = loop {
                buffer.clear();
                let n = reader.read_until(b'\n', buffer).map_err(io)?;
                if n == 0 {
                    return Ok(None);
                }
                *line += 1;
                let end = trim_line_end(buffer).len();
                if end > 0 {
                    break &buffer[..end];
                }
            };
            *rows += 1;
            let line = *line;
            match shape {
                LineShape::DoubleColon => Ok(Some(dat_fields(text, label, line))),
                LineShape::Jsonl => match parse_jsonl_event(text, label, line) {
                    Err(e) => Ok(Some(Err(e))),
                    Ok(json) => {
                        let json = json_scratch.insert(json);
                        let [a, b, c, d, e] = &json.texts;
                        let event_id = json.event_id.as_deref().unwrap_or("");
                        Ok(Some(Ok(RawFields { texts: [a, b, c, d, e], event_id, line })))
                    }
                },
            }
        }
    }
}

fn read_header(reader: &mut csv::Reader<Box<dyn Read + Send>>, label: &str) -> Result<Vec<String>> {
    let header_error =
        |message: String| Error::Row(RowError { path: label.to_string(), line: 1, field: None, message });
    let header = reader.byte_headers().map_err(|e| match e.into_kind() {
        csv::ErrorKind::Io(source) => Error::Io { path: label.into(), source },
        other => header_error(format!("unreadable header: {other:?}")),
    })?;
    if header.is_empty() {
        return Err(header_error("the file is empty; expected a header row".into()));
    }
    header
        .iter()
        .map(|h| {
            std::str::from_utf8(h)
                .map(|s| s.trim_start_matches('\u{feff}').trim().to_string())
                .map_err(|_| header_error("the header is not valid UTF-8".into()))
        })
        .collect()
}

fn trim_line_end(buffer: &[u8]) -> &[u8] {
    let mut end = buffer.len();
    while end > 0 && (buffer[end - 1] == b'\n' || buffer[end - 1] == b'\r') {
        end -= 1;
    }
    &buffer[..end]
}

fn row_error(label: &str, line: u64, field: Option<&str>, message: String) -> RowError {
    RowError { path: label.to_string(), line, field: field.map(str::to_string), message }
}

fn utf8_field<'a>(bytes: &'a [u8], label: &str, line: u64, field: &str) -> std::result::Result<&'a str, RowError> {
    std::str::from_utf8(bytes).map_err(|_| row_error(label, line, Some(field), "is not valid UTF-8".into()))
}

/// Builds an event from its text fields, checking each one.
fn build_event<'a>(
    fields: [&'a str; 5],
    kind_default: &EventKind,
    names: [&str; 5],
    label: &str,
    line: u64,
) -> std::result::Result<RawEventRef<'a>, RowError> {
    let [subject, item, kind, value, timestamp] = fields;
    let err = |i: usize, message: String| row_error(label, line, Some(names[i]), message);
    validate_item_id(item).map_err(|e| err(1, e.to_string()))?;
    let kind = if kind.is_empty() {
        kind_default.clone()
    } else {
        kind.parse().map_err(|e: hush_vocab::Error| err(2, e.to_string()))?
    };
    let value = if value.is_empty() {
        if kind == EventKind::Rating {
            return Err(err(3, "a rating event needs a numeric value".into()));
        }
        1.0
    } else {
        match value.trim().parse::<f32>() {
            Ok(v) if v.is_finite() => v,
            _ => return Err(err(3, format!("expected a finite number, found `{}`", truncate_for_message(value)))),
        }
    };
    let at = Timestamp::parse(timestamp).map_err(|e| err(4, e.to_string()))?;
    Ok(RawEventRef { subject_id: subject, item, kind, value, at, event_id: None, line })
}

fn csv_fields<'a>(
    record: &'a csv::StringRecord,
    columns: &Columns,
    label: &str,
    line: u64,
) -> std::result::Result<RawFields<'a>, RowError> {
    if record.len() != columns.expected_fields {
        return Err(row_error(
            label,
            line,
            None,
            format!(
                "expected {} fields separated by {} ({}), found {}",
                columns.expected_fields,
                columns.separator_name,
                columns.names.join(","),
                record.len()
            ),
        ));
    }
    Ok(RawFields {
        texts: [
            &record[columns.subject],
            &record[columns.item],
            columns.kind.map_or("", |i| &record[i]),
            columns.value.map_or("", |i| &record[i]),
            &record[columns.timestamp],
        ],
        event_id: columns.event_id.map_or("", |i| &record[i]),
        line,
    })
}

fn dat_fields<'a>(text: &'a [u8], label: &str, line: u64) -> std::result::Result<RawFields<'a>, RowError> {
    let text = utf8_field(text, label, line, "line")?;
    let mut parts = text.split("::");
    let fields: [Option<&str>; 5] = std::array::from_fn(|_| parts.next());
    match fields {
        [Some(user), Some(item), Some(rating), Some(timestamp), None] => {
            Ok(RawFields { texts: [user, item, "", rating, timestamp], event_id: "", line })
        }
        _ => Err(row_error(
            label,
            line,
            None,
            format!(
                "expected 4 fields separated by '::' (UserID::MovieID::Rating::Timestamp), found {}",
                text.split("::").count()
            ),
        )),
    }
}

const RATING_FIELDS_WITH_KIND: [&str; 5] = ["user_id", "item_id", "kind", "rating", "timestamp"];

/// One JSONL event row. Numbers or strings are accepted for ids and time.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonEvent {
    subject_id: JsonScalar,
    item_id: JsonScalar,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    value: Option<f64>,
    timestamp: JsonScalar,
    #[serde(default)]
    event_id: Option<String>,
    /// The five fields as text, filled in after parsing.
    #[serde(skip)]
    texts: [String; 5],
}

#[derive(Deserialize)]
#[serde(untagged)]
enum JsonScalar {
    Int(i64),
    Text(String),
}

impl JsonScalar {
    fn to_text(&self) -> String {
        match self {
            JsonScalar::Int(n) => n.to_string(),
            JsonScalar::Text(t) => t.clone(),
        }
    }

    fn into_text(self) -> String {
        match self {
            JsonScalar::Int(n) => n.to_string(),
            JsonScalar::Text(t) => t,
        }
    }
}

fn parse_jsonl_event(text: &[u8], label: &str, line: u64) -> std::result::Result<JsonEvent, RowError> {
    let mut json: JsonEvent = serde_json::from_slice(text).map_err(|e| {
        row_error(
            label,
            line,
            None,
            format!(
                "expected a JSON object with subject_id, item_id, kind, value, timestamp (event_id optional): {}",
                json_message(&e)
            ),
        )
    })?;
    json.texts = [
        json.subject_id.to_text(),
        json.item_id.to_text(),
        json.kind.clone().unwrap_or_else(|| "view".into()),
        json.value.map(|v| v.to_string()).unwrap_or_default(),
        json.timestamp.to_text(),
    ];
    Ok(json)
}

/// serde_json's message without its own "at line 1 column N" (the line is ours).
fn json_message(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(i) => format!("{} (column {})", &text[..i], e.column()),
        None => text,
    }
}

/// The consent record file formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsentFormat {
    /// CSV with header `subject_id,purpose,granted,effective_at,notice_version,proof_ref`.
    Csv,
    /// One JSON object per line with the same fields.
    Jsonl,
    /// Parquet with columns of the same names (`granted` boolean or text,
    /// `effective_at` text, unix seconds or a Parquet timestamp).
    Parquet,
}

impl ConsentFormat {
    /// Picks the format from a file's extension (`.jsonl`/`.ndjson`,
    /// `.parquet`, or anything else as CSV).
    pub fn from_path(path: &Path) -> Self {
        match path.extension().and_then(|e| e.to_str()) {
            Some("jsonl") | Some("ndjson") => ConsentFormat::Jsonl,
            Some("parquet") | Some("pq") => ConsentFormat::Parquet,
            _ => ConsentFormat::Csv,
        }
    }
}

/// A consent decision as read from a file, with the raw subject id still attached.
#[derive(Clone, Debug, PartialEq)]
pub struct RawConsent {
    /// The external subject id, exactly as in the file.
    pub subject_id: String,
    /// The decision (source is always `import`).
    pub change: ConsentChange,
    /// 1-based line of the row, for errors found when it is stored.
    pub line: u64,
}

const CONSENT_COLUMNS: [&str; 6] = ["subject_id", "purpose", "granted", "effective_at", "notice_version", "proof_ref"];

/// Reads consent records row by row.
pub struct ConsentReader {
    label: String,
    inner: ConsentInner,
    rows: u64,
}

enum ConsentInner {
    Csv {
        reader: csv::Reader<Box<dyn Read + Send>>,
        record: csv::ByteRecord,
        positions: [Option<usize>; 6],
        width: usize,
    },
    Jsonl {
        reader: BufReader<Box<dyn Read + Send>>,
        buffer: Vec<u8>,
        line: u64,
    },
    Parquet(Box<ParquetTable<6>>),
}

/// The columns of a Parquet consent file.
fn consent_columns() -> [Wanted<'static>; 6] {
    CONSENT_COLUMNS.map(|name| Wanted { name, required: name != "proof_ref" })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonConsent {
    subject_id: JsonScalar,
    purpose: String,
    granted: JsonGranted,
    effective_at: JsonScalar,
    notice_version: String,
    #[serde(default)]
    proof_ref: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum JsonGranted {
    Bool(bool),
    Text(String),
}

fn parse_granted(text: &str) -> std::result::Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "granted" | "grant" => Ok(true),
        "false" | "0" | "no" | "withdrawn" | "withdraw" => Ok(false),
        other => Err(format!(
            "expected true/false (or granted/withdrawn, 1/0, yes/no), found `{}`",
            truncate_for_message(other)
        )),
    }
}

impl ConsentReader {
    /// Opens a consent file.
    ///
    /// # Errors
    /// [`Error::Io`] if it cannot be opened; [`Error::Row`] if a CSV header lacks a required column.
    pub fn open(path: &Path, format: ConsentFormat) -> Result<Self> {
        if format == ConsentFormat::Parquet {
            let table = ParquetTable::open(path, consent_columns())?;
            return Ok(ConsentReader {
                label: path.display().to_string(),
                inner: ConsentInner::Parquet(Box::new(table)),
                rows: 0,
            });
        }
        let file = File::open(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
        Self::from_reader(path.display().to_string(), Box::new(file), format)
    }

    /// Reads from any byte stream; `label` names it in messages.
    ///
    /// # Errors
    /// As [`ConsentReader::open`].
    pub fn from_reader(label: String, input: Box<dyn Read + Send>, format: ConsentFormat) -> Result<Self> {
        let inner = match format {
            ConsentFormat::Jsonl => ConsentInner::Jsonl { reader: BufReader::new(input), buffer: Vec::new(), line: 0 },
            ConsentFormat::Parquet => {
                ConsentInner::Parquet(Box::new(ParquetTable::from_reader(label.clone(), input, consent_columns())?))
            }
            ConsentFormat::Csv => {
                let mut reader = csv::ReaderBuilder::new().has_headers(true).flexible(true).from_reader(input);
                let header = read_header(&mut reader, &label)?;
                let mut positions = [None; 6];
                for (slot, name) in positions.iter_mut().zip(CONSENT_COLUMNS) {
                    *slot = header.iter().position(|h| h == name);
                    if slot.is_none() && name != "proof_ref" {
                        return Err(Error::Row(RowError {
                            path: label,
                            line: 1,
                            field: Some(name.into()),
                            message: format!(
                                "column is missing from the header; expected `{}` (proof_ref optional)",
                                CONSENT_COLUMNS.join(",")
                            ),
                        }));
                    }
                }
                ConsentInner::Csv { reader, record: csv::ByteRecord::new(), positions, width: header.len() }
            }
        };
        Ok(ConsentReader { label, inner, rows: 0 })
    }

    /// Data rows read so far.
    pub fn rows_read(&self) -> u64 {
        self.rows
    }

    /// The next row: `Ok(None)` at the end, `Ok(Some(Err(_)))` for a malformed row.
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be read any further.
    pub fn next_row(&mut self) -> Result<Option<std::result::Result<RawConsent, RowError>>> {
        let label = &self.label;
        let io = |source: std::io::Error| Error::Io { path: label.into(), source };
        match &mut self.inner {
            ConsentInner::Parquet(table) => {
                let row = table.next_row()?;
                let rows = &mut self.rows;
                Ok(row.map(|(fields, line)| {
                    *rows = line;
                    consent_from_text(fields, label, line)
                }))
            }
            ConsentInner::Csv { reader, record, positions, width } => match reader.read_byte_record(record) {
                Ok(false) => Ok(None),
                Ok(true) => {
                    self.rows += 1;
                    let line = record.position().map_or(0, |p| p.line());
                    if record.len() != *width {
                        return Ok(Some(Err(row_error(
                            label,
                            line,
                            None,
                            format!(
                                "expected {} comma-separated fields as in the header, found {}",
                                width,
                                record.len()
                            ),
                        ))));
                    }
                    let mut fields = [""; 6];
                    for ((slot, position), name) in fields.iter_mut().zip(positions.iter()).zip(CONSENT_COLUMNS) {
                        if let Some(p) = position {
                            match utf8_field(&record[*p], label, line, name) {
                                Ok(text) => *slot = text,
                                Err(e) => return Ok(Some(Err(e))),
                            }
                        }
                    }
                    Ok(Some(consent_from_text(fields, label, line)))
                }
                Err(e) => match e.into_kind() {
                    csv::ErrorKind::Io(source) => Err(io(source)),
                    other => {
                        self.rows += 1;
                        Ok(Some(Err(row_error(label, 0, None, format!("unreadable CSV: {other:?}")))))
                    }
                },
            },
            ConsentInner::Jsonl { reader, buffer, line } => loop {
                buffer.clear();
                if reader.read_until(b'\n', buffer).map_err(io)? == 0 {
                    return Ok(None);
                }
                *line += 1;
                let text = trim_line_end(buffer);
                if text.is_empty() {
                    continue;
                }
                self.rows += 1;
                return Ok(Some(parse_jsonl_consent(text, label, *line)));
            },
        }
    }
}

fn parse_jsonl_consent(text: &[u8], label: &str, line: u64) -> std::result::Result<RawConsent, RowError> {
    let json: JsonConsent = serde_json::from_slice(text).map_err(|e| {
        row_error(
            label,
            line,
            None,
            format!("expected a JSON object with {}: {}", CONSENT_COLUMNS.join(", "), json_message(&e)),
        )
    })?;
    let granted = match json.granted {
        JsonGranted::Bool(b) => b,
        JsonGranted::Text(t) => parse_granted(&t).map_err(|m| row_error(label, line, Some("granted"), m))?,
    };
    let subject = json.subject_id.into_text();
    let effective = json.effective_at.into_text();
    let proof = json.proof_ref.unwrap_or_default();
    build_consent([&subject, &json.purpose, "", &effective, &json.notice_version, &proof], granted, label, line)
}

/// A consent record from its six text fields (CSV and Parquet rows), the
/// decision among them as text.
fn consent_from_text(fields: [&str; 6], label: &str, line: u64) -> std::result::Result<RawConsent, RowError> {
    let granted = parse_granted(fields[2]).map_err(|m| row_error(label, line, Some("granted"), m))?;
    build_consent(fields, granted, label, line)
}

fn build_consent(
    fields: [&str; 6],
    granted: bool,
    label: &str,
    line: u64,
) -> std::result::Result<RawConsent, RowError> {
    let [subject, purpose, _, effective_at, notice_version, proof_ref] = fields;
    let err = |field: &str, message: String| row_error(label, line, Some(field), message);
    if let Err(message) = hush_vocab::subject::check(subject) {
        return Err(err("subject_id", message.into()));
    }
    let purpose: Purpose = purpose.parse().map_err(|e: hush_vocab::Error| err("purpose", e.to_string()))?;
    let effective_at = Timestamp::parse(effective_at).map_err(|e| err("effective_at", e.to_string()))?;
    let change = ConsentChange {
        purpose,
        granted,
        effective_at,
        source: ConsentSource::Import,
        notice_version: notice_version.to_string(),
        proof_ref: (!proof_ref.is_empty()).then(|| proof_ref.to_string()),
    };
    change.validate().map_err(|e| match e {
        hush_vocab::Error::InvalidField { field, message } => err(field, message),
        other => err("record", other.to_string()),
    })?;
    Ok(RawConsent { subject_id: subject.to_string(), change, line })
}
