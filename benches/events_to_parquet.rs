//! Converts an event CSV (`subject_id,item_id,kind,value,timestamp`) to the
//! Parquet file a warehouse export would be: text ids and kinds, `value` as
//! float32, `timestamp` as int64 unix seconds, Snappy-compressed row groups
//! of a million rows. The input of `extract_parquet_vs_csv.sh`.
//!
//! `cargo build --release --example events_to_parquet && target/release/examples/events_to_parquet IN.csv OUT.parquet`

use std::sync::Arc;

use arrow_array::{ArrayRef, Float32Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

const BATCH_ROWS: usize = 65_536;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (input, output) = match (args.next(), args.next()) {
        (Some(i), Some(o)) => (i, o),
        _ => return Err("usage: events_to_parquet IN.csv OUT.parquet".into()),
    };
    let schema = Arc::new(Schema::new(vec![
        Field::new("subject_id", DataType::Utf8, false),
        Field::new("item_id", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("value", DataType::Float32, true),
        Field::new("timestamp", DataType::Int64, false),
    ]));
    let properties = WriterProperties::builder().set_compression(Compression::SNAPPY).build();
    let mut writer = ArrowWriter::try_new(std::fs::File::create(&output)?, schema.clone(), Some(properties))?;
    let mut reader = csv::Reader::from_path(&input)?;
    let header = reader.headers()?.clone();
    let column = |name: &str| header.iter().position(|h| h == name).ok_or(format!("{input}: no `{name}` column"));
    let [s, i, k, v, t] = ["subject_id", "item_id", "kind", "value", "timestamp"].map(column);
    let (s, i, k, v, t) = (s?, i?, k?, v?, t?);
    let mut record = csv::StringRecord::new();
    let mut rows = 0u64;
    loop {
        let (mut subjects, mut items, mut kinds, mut values, mut times) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        while subjects.len() < BATCH_ROWS && reader.read_record(&mut record)? {
            subjects.push(record[s].to_string());
            items.push(record[i].to_string());
            kinds.push(record[k].to_string());
            values.push(record[v].parse::<f32>().ok());
            times.push(record[t].parse::<i64>()?);
        }
        if subjects.is_empty() {
            break;
        }
        rows += subjects.len() as u64;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(subjects)),
            Arc::new(StringArray::from(items)),
            Arc::new(StringArray::from(kinds)),
            Arc::new(Float32Array::from(values)),
            Arc::new(Int64Array::from(times)),
        ];
        writer.write(&RecordBatch::try_new(schema.clone(), columns)?)?;
    }
    writer.close()?;
    println!("{{\"rows\":{rows}}}");
    Ok(())
}
