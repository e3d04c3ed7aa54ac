//! Parquet forms of the tables the offline flows write beside their CSV
//! forms: a split's two parts and a sweep's results. Data scientists read
//! them straight into pandas, polars or DuckDB with their column types
//! (the `parquet`/`arrow` crates of the Apache Arrow project write them).

use std::str::FromStr;
use std::sync::Arc;

use arrow_array::{ArrayRef, Float32Array, Float64Array, RecordBatch, StringArray, UInt32Array, UInt64Array};
use hush_features::FeatureSet;
use hush_report::sweep::SweepResults;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::{Error, Result};

/// The file format of a written table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TableFormat {
    /// Comma-separated text with a header row.
    #[default]
    Csv,
    /// Apache Parquet (zstd-compressed columns).
    Parquet,
}

impl TableFormat {
    /// The file extension (`csv`, `parquet`).
    pub fn extension(self) -> &'static str {
        match self {
            TableFormat::Csv => "csv",
            TableFormat::Parquet => "parquet",
        }
    }
}

impl FromStr for TableFormat {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        match text {
            "csv" => Ok(TableFormat::Csv),
            "parquet" => Ok(TableFormat::Parquet),
            other => Err(Error::Invalid(format!("unknown table format `{other}`; expected csv or parquet"))),
        }
    }
}

/// Writes record batches as one Parquet file (in memory).
fn parquet_bytes(context: &str, batches: impl IntoIterator<Item = RecordBatch>) -> Result<Vec<u8>> {
    let fail = |e: parquet::errors::ParquetError| Error::Format { context: context.to_string(), source: Box::new(e) };
    let mut batches = batches.into_iter().peekable();
    let Some(first) = batches.peek() else {
        return Err(Error::Invalid(format!("{context}: nothing to write")));
    };
    let properties = WriterProperties::builder().set_compression(Compression::ZSTD(ZstdLevel::default())).build();
    let mut bytes = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut bytes, first.schema(), Some(properties)).map_err(fail)?;
    for batch in batches {
        writer.write(&batch).map_err(fail)?;
    }
    writer.close().map_err(fail)?;
    Ok(bytes)
}

fn batch(context: &str, columns: Vec<(&str, ArrayRef)>) -> Result<RecordBatch> {
    RecordBatch::try_from_iter(columns).map_err(|e| Error::Format { context: context.to_string(), source: Box::new(e) })
}

/// A split part as Parquet: `subject_index` (u32, dense, never an
/// identifier), `item_id` (text), `value` (f32), one row per interaction.
///
/// # Errors
/// [`Error::Format`] if the table cannot be encoded.
pub fn split_part_parquet(part: &FeatureSet, context: &str) -> Result<Vec<u8>> {
    // One record batch per ~64k subjects keeps the columns being built small.
    const SUBJECTS_PER_BATCH: usize = 65_536;
    let mut batches = Vec::new();
    let mut start = 0;
    loop {
        let end = (start + SUBJECTS_PER_BATCH).min(part.n_subjects());
        let (mut subjects, mut items, mut values) = (Vec::new(), Vec::new(), Vec::new());
        for s in start..end {
            for i in part.subject_interactions(s) {
                subjects.push(s as u32);
                items.push(part.items[i.item as usize].as_str());
                values.push(i.value);
            }
        }
        batches.push(batch(
            context,
            vec![
                ("subject_index", Arc::new(UInt32Array::from(subjects)) as ArrayRef),
                ("item_id", Arc::new(StringArray::from(items))),
                ("value", Arc::new(Float32Array::from(values))),
            ],
        )?);
        if end == part.n_subjects() {
            break;
        }
        start = end;
    }
    parquet_bytes(context, batches)
}

/// A sweep's results as Parquet, the rows of `results.csv` with types:
/// `arm` (text), `epsilon` (f64, null for the twin and baselines), `seed`
/// (u64, nullable), `metric` (text), `value` (f64).
///
/// # Errors
/// [`Error::Format`] if the table cannot be encoded.
pub fn results_parquet(results: &SweepResults) -> Result<Vec<u8>> {
    let context = "writing results.parquet";
    let rows: Vec<_> = results.rows().collect();
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("arm", Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.arm.as_str())))),
        ("epsilon", Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.epsilon)))),
        ("seed", Arc::new(UInt64Array::from_iter(rows.iter().map(|r| r.seed)))),
        ("metric", Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.metric)))),
        ("value", Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.value)))),
    ];
    parquet_bytes(context, [batch(context, columns)?])
}
