//! The baseline of `extract_vs_csv.sh`: a bare `csv`-crate parse of an event
//! file (every record read as bytes, fields counted), nothing else.
//!
//! `cargo build --release --example bare_csv_parse && target/release/examples/bare_csv_parse FILE`

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).ok_or("usage: bare_csv_parse FILE")?;
    let started = std::time::Instant::now();
    let mut reader = csv::ReaderBuilder::new().has_headers(true).from_path(&path)?;
    let mut record = csv::ByteRecord::new();
    let (mut rows, mut fields) = (0u64, 0u64);
    while reader.read_byte_record(&mut record)? {
        rows += 1;
        fields += record.len() as u64;
    }
    let seconds = started.elapsed().as_secs_f64();
    println!("{{\"rows\":{rows},\"fields\":{fields},\"seconds\":{seconds:.3}}}");
    Ok(())
}
