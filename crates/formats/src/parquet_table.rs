//! Rows of a Parquet file as text fields, for the event and consent readers.
//!
//! The readers check text (ids, kinds, numbers, times) one way whatever the
//! file format, so a Parquet row is turned into the same fields a CSV row
//! has: each wanted column of a record batch is cast to UTF-8 once by
//! arrow's vectorized casts, and rows then borrow from those arrays. Time
//! columns (`timestamp[s|ms|us|ns]`, with or without a zone) become unix
//! seconds, or RFC 3339 when they have milliseconds (hush keeps times to the
//! millisecond); a null cell is an empty field, as an empty CSV cell is. Rows
//! are numbered from 1 in file order; errors give that number as the line.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{Array, ArrayRef, StringArray};
use arrow_cast::CastOptions;
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::ProjectionMask;
use parquet::basic::Type as PhysicalType;
use parquet::file::reader::ChunkReader;

use hush_vocab::time::truncate_for_message;
use hush_vocab::{RowError, Timestamp};

use crate::{Error, Result};

/// A column the reader wants: its name, and whether the file must have it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Wanted<'a> {
    pub name: &'a str,
    pub required: bool,
}

/// The wanted columns of one record batch, as text, and its row count.
struct TextBatch<const N: usize> {
    texts: [Option<StringArray>; N],
    len: usize,
}

/// Reads a Parquet file row by row as `N` text fields.
///
/// Only the wanted columns are decoded (a projection), and decoding and the
/// casts to text run on a thread of their own, a couple of batches ahead:
/// the rows' consumer (the extractor's parser thread) then only splits rows,
/// so Parquet's decoding overlaps with the rest of the pipeline.
pub(crate) struct ParquetTable<const N: usize> {
    /// Decoded batches, or the error that ended decoding.
    batches: std::sync::mpsc::Receiver<Result<TextBatch<N>>>,
    /// The decoding thread, joined at the end to tell a finished file from
    /// a decoder that panicked (which must not look like the end of the rows).
    decoder: Option<std::thread::JoinHandle<()>>,
    label: String,
    /// Where each wanted column is in the file (`None`: absent, always empty).
    positions: [Option<usize>; N],
    names: Vec<String>,
    current: TextBatch<N>,
    next: usize,
    rows: u64,
}

impl<const N: usize> ParquetTable<N> {
    /// Opens `path` and finds the `wanted` columns by name.
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be opened; [`Error::Row`] (line 0)
    /// if it is not Parquet or lacks a required column.
    pub fn open(path: &Path, wanted: [Wanted<'_>; N]) -> Result<Self> {
        let file = File::open(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
        Self::from_chunks(path.display().to_string(), file, wanted)
    }

    /// Reads a whole byte stream (Parquet needs random access to its
    /// footer), labelled `label` in messages.
    ///
    /// # Errors
    /// As [`ParquetTable::open`].
    pub fn from_reader(label: String, mut input: Box<dyn Read + Send>, wanted: [Wanted<'_>; N]) -> Result<Self> {
        let mut bytes = Vec::new();
        input.read_to_end(&mut bytes).map_err(|source| Error::Io { path: label.clone().into(), source })?;
        Self::from_chunks(label, bytes::Bytes::from(bytes), wanted)
    }

    fn from_chunks(label: String, input: impl ChunkReader + 'static, wanted: [Wanted<'_>; N]) -> Result<Self> {
        let fatal = |field: Option<&str>, message: String| {
            Error::Row(RowError { path: label.clone(), line: 0, field: field.map(str::to_string), message })
        };
        let unreadable = |e: parquet::errors::ParquetError| fatal(None, format!("not a readable Parquet file: {e}"));
        let metadata = ArrowReaderMetadata::load(&input, ArrowReaderOptions::new()).map_err(unreadable)?;
        // Legacy INT96 times (Spark, Hive, Impala) decode as nanoseconds by
        // default, which wraps around outside 1677–2262 (a grant in 2600
        // would read as 2015); read them to the millisecond instead.
        let parquet_schema = metadata.parquet_schema();
        let int96 = |name: &str| {
            parquet_schema
                .columns()
                .iter()
                .any(|c| c.path().parts() == [name] && c.physical_type() == PhysicalType::INT96)
        };
        let fields: Vec<Field> = metadata
            .schema()
            .fields()
            .iter()
            .map(|f| match f.data_type() {
                DataType::Timestamp(TimeUnit::Nanosecond, None) if int96(f.name()) => {
                    f.as_ref().clone().with_data_type(DataType::Timestamp(TimeUnit::Millisecond, None))
                }
                _ => f.as_ref().clone(),
            })
            .collect();
        let options = ArrowReaderOptions::new().with_schema(std::sync::Arc::new(Schema::new(fields)));
        let metadata = ArrowReaderMetadata::try_new(metadata.metadata().clone(), options).map_err(unreadable)?;
        let builder = ParquetRecordBatchReaderBuilder::new_with_metadata(input, metadata);
        let names: Vec<String> = builder.schema().fields().iter().map(|f| f.name().clone()).collect();
        let mut positions = [None; N];
        for (slot, want) in positions.iter_mut().zip(wanted) {
            *slot = (!want.name.is_empty()).then(|| names.iter().position(|n| n == want.name)).flatten();
            if slot.is_none() && want.required {
                return Err(fatal(
                    Some(want.name),
                    format!(
                        "column is missing from the Parquet schema; its columns are `{}`",
                        truncate_for_message(&names.join(","))
                    ),
                ));
            }
        }
        // Decode only the wanted columns; a projected batch keeps the file's
        // column order, so each wanted column's index is its rank among them.
        let mut projected: Vec<usize> = positions.iter().flatten().copied().collect();
        projected.sort_unstable();
        projected.dedup();
        refuse_oversized_cells(builder.metadata(), &projected, &names)
            .map_err(|(column, message)| fatal(Some(&names[column]), message))?;
        let mask = ProjectionMask::roots(builder.parquet_schema(), projected.iter().copied());
        let reader = builder.with_projection(mask).with_batch_size(8192).build().map_err(unreadable)?;
        let in_batch = positions.map(|p| p.map(|p| projected.binary_search(&p).unwrap_or_default()));
        let (sender, batches) = std::sync::mpsc::sync_channel(2);
        let (thread_label, thread_names) = (label.clone(), names.clone());
        let decoder = std::thread::Builder::new()
            .name("parquet-decode".into())
            .spawn(move || decode(reader, thread_label, thread_names, positions, in_batch, sender))
            .map_err(|source| Error::Io { path: "a Parquet decoding thread".into(), source })?;
        Ok(ParquetTable {
            batches,
            decoder: Some(decoder),
            label,
            positions,
            names,
            current: TextBatch { texts: std::array::from_fn(|_| None), len: 0 },
            next: 0,
            rows: 0,
        })
    }

    /// The name the file gives the `i`-th wanted column, if it has it.
    pub fn column_name(&self, i: usize) -> Option<&str> {
        self.positions[i].map(|p| self.names[p].as_str())
    }

    /// The next row's fields and its 1-based number, or `None` at the end.
    ///
    /// # Errors
    /// [`Error::Row`] when the file cannot be decoded any further, or a
    /// column has a type that has no text form (a list, a struct).
    pub fn next_row(&mut self) -> Result<Option<([&str; N], u64)>> {
        while self.next == self.current.len {
            match self.batches.recv() {
                Ok(batch) => self.current = batch?,
                // The decoding thread hangs up after the last batch or an error,
                // or when it panicked: only then does joining it fail.
                Err(_) => {
                    let panicked = self.decoder.take().is_some_and(|d| d.join().is_err());
                    if panicked {
                        return Err(Error::Row(RowError {
                            path: self.label.clone(),
                            line: self.rows + 1,
                            field: None,
                            message: "unreadable Parquet data: the decoder failed on this file".into(),
                        }));
                    }
                    return Ok(None);
                }
            }
            self.next = 0;
        }
        let row = self.next;
        self.next += 1;
        self.rows += 1;
        let fields = std::array::from_fn(|i| match &self.current.texts[i] {
            Some(column) if column.is_valid(row) => column.value(row),
            _ => "",
        });
        Ok(Some((fields, self.rows)))
    }
}

/// The decoding thread: reads batches, casts the wanted columns to text and
/// hands them over until the end, an error (sent, then it stops), or the
/// table being dropped (the send fails).
fn decode<const N: usize>(
    reader: ParquetRecordBatchReader,
    label: String,
    names: Vec<String>,
    positions: [Option<usize>; N],
    in_batch: [Option<usize>; N],
    sender: std::sync::mpsc::SyncSender<Result<TextBatch<N>>>,
) {
    let mut rows = 0u64;
    for batch in reader {
        let error = |field: Option<String>, message: String| {
            Error::Row(RowError { path: label.clone(), line: rows + 1, field, message })
        };
        let decoded = batch.map_err(|e| error(None, format!("unreadable Parquet data: {e}"))).and_then(|batch| {
            let mut texts: [Option<StringArray>; N] = std::array::from_fn(|_| None);
            for ((slot, position), index) in texts.iter_mut().zip(positions).zip(in_batch) {
                if let (Some(p), Some(i)) = (position, index) {
                    *slot = Some(as_text(batch.column(i)).map_err(|m| error(Some(names[p].clone()), m))?);
                }
            }
            Ok(TextBatch { texts, len: batch.num_rows() })
        });
        let failed = decoded.is_err();
        if let Ok(batch) = &decoded {
            rows += batch.len as u64;
        }
        if sender.send(decoded).is_err() || failed {
            return;
        }
    }
}

/// The times a Parquet time column may hold: years 0 to 9999, as RFC 3339 allows.
const MIN_MILLIS: i64 = -62_167_219_200_000;
const MAX_MILLIS: i64 = 253_402_300_799_999;

/// No cell of an event or consent field is anywhere near this large (ids are
/// at most 256 bytes): a column chunk that declares more per row on average
/// is refused before anything is decoded, so a small file cannot make the
/// reader allocate gigabytes (a "decompression bomb").
const MAX_AVERAGE_CELL_BYTES: i64 = 4096;

/// Checks each row group's wanted column chunks against [`MAX_AVERAGE_CELL_BYTES`].
fn refuse_oversized_cells(
    metadata: &parquet::file::metadata::ParquetMetaData,
    projected: &[usize],
    names: &[String],
) -> std::result::Result<(), (usize, String)> {
    let columns = metadata.file_metadata().schema_descr().columns();
    for (g, group) in metadata.row_groups().iter().enumerate() {
        for &field in projected {
            let bytes: i64 = group
                .columns()
                .iter()
                .zip(columns)
                .filter(|(_, c)| c.path().parts().first() == Some(&names[field]))
                .map(|(chunk, _)| chunk.uncompressed_size())
                .sum();
            if bytes > MAX_AVERAGE_CELL_BYTES * group.num_rows().max(1) {
                return Err((
                    field,
                    format!(
                        "row group {g} declares {bytes} bytes for {} rows: more than {MAX_AVERAGE_CELL_BYTES} bytes \
                         per cell, which no event or consent field needs; refused before decoding",
                        group.num_rows()
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// A column as UTF-8 text: strings as they are, times as the text the
/// readers parse (unix seconds when whole, else RFC 3339 to the millisecond,
/// hush's precision), anything else (numbers, booleans, dictionaries) by
/// arrow's cast.
fn as_text(column: &ArrayRef) -> std::result::Result<StringArray, String> {
    // Not `safe`: a cell that does not convert (invalid UTF-8 in a binary
    // column) is an error, never a silent null.
    let options = CastOptions { safe: false, ..CastOptions::default() };
    let cast = |array: &dyn Array| {
        arrow_cast::cast::cast_with_options(array, &DataType::Utf8, &options).map_err(|e| {
            format!("a column of type {} has no text form ({e}); expected text, numbers or times", column.data_type())
        })
    };
    let text = match column.data_type() {
        DataType::Utf8 => column.clone(),
        // Arrow would print a list as `[x]`: a nested value is not a field.
        nested if nested.is_nested() => {
            return Err(format!("a column of type {nested} has no text form; expected text, numbers or times"))
        }
        DataType::Timestamp(unit, _) => {
            let raw = arrow_cast::cast::cast(column, &DataType::Int64).map_err(|e| e.to_string())?;
            let to_millis = |v: i64| match unit {
                TimeUnit::Second => v.saturating_mul(1_000),
                TimeUnit::Millisecond => v,
                TimeUnit::Microsecond => v.div_euclid(1_000),
                TimeUnit::Nanosecond => v.div_euclid(1_000_000),
            };
            let text: StringArray = raw
                .as_primitive::<Int64Type>()
                .iter()
                .map(|v| {
                    v.map(|v| {
                        let millis = to_millis(v);
                        if !(MIN_MILLIS..=MAX_MILLIS).contains(&millis) {
                            // Text no reader accepts: the row is refused, naming the value.
                            format!("{v} ({unit:?}), out of range")
                        } else if millis % 1_000 == 0 {
                            (millis / 1_000).to_string()
                        } else {
                            Timestamp::from_unix_millis(millis).to_rfc3339()
                        }
                    })
                })
                .collect();
            return Ok(text);
        }
        _ => cast(column.as_ref())?,
    };
    Ok(text.as_string::<i32>().clone())
}
