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
use arrow_array::{Array, ArrayRef, RecordBatchReader, StringArray};
use arrow_schema::{DataType, TimeUnit};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::file::reader::ChunkReader;

use crate::time::truncate_for_message;
use crate::Timestamp;
use crate::{Error, Result, RowError};

/// A column the reader wants: its name, and whether the file must have it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Wanted<'a> {
    pub name: &'a str,
    pub required: bool,
}

/// Reads a Parquet file row by row as `N` text fields.
pub(crate) struct ParquetTable<const N: usize> {
    label: String,
    reader: ParquetRecordBatchReader,
    /// Where each wanted column is in the file (`None`: absent, always empty).
    positions: [Option<usize>; N],
    names: Vec<String>,
    /// The wanted columns of the current batch, as text.
    texts: [Option<StringArray>; N],
    next: usize,
    len: usize,
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
        let reader = ParquetRecordBatchReaderBuilder::try_new(input)
            .and_then(|b| b.with_batch_size(8192).build())
            .map_err(|e| fatal(None, format!("not a readable Parquet file: {e}")))?;
        let names: Vec<String> = reader.schema().fields().iter().map(|f| f.name().clone()).collect();
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
        Ok(ParquetTable {
            label,
            reader,
            positions,
            names,
            texts: std::array::from_fn(|_| None),
            next: 0,
            len: 0,
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
        while self.next == self.len {
            let batch = match self.reader.next() {
                None => return Ok(None),
                Some(Ok(batch)) => batch,
                Some(Err(e)) => {
                    return Err(Error::Row(RowError {
                        path: self.label.clone(),
                        line: self.rows + 1,
                        field: None,
                        message: format!("unreadable Parquet data: {e}"),
                    }))
                }
            };
            for (slot, position) in self.texts.iter_mut().zip(self.positions) {
                *slot = match position {
                    None => None,
                    Some(p) => Some(as_text(batch.column(p)).map_err(|message| {
                        Error::Row(RowError {
                            path: self.label.clone(),
                            line: self.rows + 1,
                            field: Some(self.names[p].clone()),
                            message,
                        })
                    })?),
                };
            }
            self.next = 0;
            self.len = batch.num_rows();
        }
        let row = self.next;
        self.next += 1;
        self.rows += 1;
        let fields = std::array::from_fn(|i| match &self.texts[i] {
            Some(column) if column.is_valid(row) => column.value(row),
            _ => "",
        });
        Ok(Some((fields, self.rows)))
    }
}

/// A column as UTF-8 text: strings as they are, times as the text the
/// readers parse (unix seconds when whole, else RFC 3339 to the millisecond,
/// hush's precision), anything else (numbers, booleans, dictionaries) by
/// arrow's cast.
fn as_text(column: &ArrayRef) -> std::result::Result<StringArray, String> {
    let cast = |array: &dyn Array| {
        arrow_cast::cast::cast(array, &DataType::Utf8).map_err(|e| {
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
                        if millis % 1_000 == 0 {
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
