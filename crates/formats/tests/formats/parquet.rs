//! Parquet events and consent records read as their CSV forms are, with the
//! file's row and the column named for every bad cell, and event ids carried
//! by every format that has a place for them.

use std::io::Cursor;
use std::sync::Arc;

use arrow_array::builder::{ListBuilder, StringBuilder};
use arrow_array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
    TimestampMillisecondArray, TimestampNanosecondArray, TimestampSecondArray,
};
use hush_formats::{ConsentFormat, ConsentReader, CsvMapping, EventFormat, EventReader, RawEvent};
use hush_vocab::{EventKind, Purpose, Timestamp};
use parquet::arrow::ArrowWriter;
use proptest::prelude::*;

/// A Parquet file of these columns, in memory.
fn parquet(columns: Vec<(&str, ArrayRef)>) -> Vec<u8> {
    let batch = RecordBatch::try_from_iter(columns.into_iter().map(|(n, a)| (n.to_string(), a))).unwrap();
    let mut bytes = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut bytes, batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    bytes
}

fn text(values: &[&str]) -> ArrayRef {
    Arc::new(StringArray::from(values.to_vec()))
}

fn read_events(format: &EventFormat, label: &str, bytes: &[u8]) -> Result<Vec<Result<RawEvent, String>>, String> {
    let mut reader = EventReader::from_reader(label.into(), Box::new(Cursor::new(bytes.to_vec())), format)
        .map_err(|e| e.to_string())?;
    let mut rows = Vec::new();
    while let Some(row) = reader.next_row().map_err(|e| e.to_string())? {
        rows.push(row.map_err(|e| e.to_string()));
    }
    Ok(rows)
}

fn parquet_format() -> EventFormat {
    EventFormat::from_name("parquet").unwrap()
}

#[test]
fn formats_are_known_by_extension() {
    let name = |p: &str| EventFormat::from_path(std::path::Path::new(p)).name();
    assert_eq!(
        [name("a.parquet"), name("a.pq"), name("a.jsonl"), name("a.ndjson"), name("a.dat"), name("a.csv"), name("a")],
        ["parquet", "parquet", "jsonl", "jsonl", "dat", "csv", "csv"]
    );
    assert_eq!(ConsentFormat::from_path(std::path::Path::new("c.parquet")), ConsentFormat::Parquet);
    let err = EventFormat::Jsonl.with_mapping(CsvMapping::default()).unwrap_err().to_string();
    assert!(err.contains("applies to csv and parquet, not to jsonl"), "{err}");
}

#[test]
fn typed_columns_read_as_their_text() {
    // Ids as integers, values as floats, times as unix seconds: each read as
    // the CSV cell of the same value would be.
    let bytes = parquet(vec![
        ("subject_id", Arc::new(Int64Array::from(vec![7, 8])) as ArrayRef),
        ("item_id", Arc::new(Int64Array::from(vec![31, 32]))),
        ("kind", text(&["rating", "purchase"])),
        ("value", Arc::new(Float64Array::from(vec![Some(4.5), None]))),
        ("timestamp", Arc::new(Int64Array::from(vec![1_260_759_144, 1_260_759_145]))),
    ]);
    let rows = read_events(&parquet_format(), "in.parquet", &bytes).unwrap();
    let rows: Vec<RawEvent> = rows.into_iter().map(Result::unwrap).collect();
    assert_eq!((rows[0].subject_id.as_str(), rows[0].event.item.as_str()), ("7", "31"));
    assert_eq!((rows[0].event.kind.clone(), rows[0].event.value), (EventKind::Rating, 4.5));
    assert_eq!(rows[0].event.at, Timestamp::from_unix_seconds(1_260_759_144));
    assert_eq!((rows[1].event.kind.clone(), rows[1].event.value), (EventKind::Purchase, 1.0), "a null value is absent");
    assert_eq!(rows[1].event_id, None, "no event_id column: no event ids");
}

#[test]
fn time_columns_of_every_unit_read_as_the_same_instant() {
    // 2025-01-01T00:00:01.250Z, and a time before 1970 (floor, not truncation).
    let ms = [1_735_689_601_250i64, -1_500];
    let expected = [Timestamp::from_unix_millis(ms[0]), Timestamp::from_unix_millis(-1_500)];
    let columns: Vec<ArrayRef> = vec![
        Arc::new(TimestampMillisecondArray::from(ms.to_vec()).with_timezone("UTC")),
        Arc::new(TimestampMicrosecondArray::from(ms.iter().map(|m| m * 1_000).collect::<Vec<_>>())),
        Arc::new(TimestampNanosecondArray::from(ms.iter().map(|m| m * 1_000_000 + 999).collect::<Vec<_>>())),
        text(&["2025-01-01T00:00:01.250Z", "1969-12-31T23:59:58.500Z"]),
    ];
    for column in columns {
        let kind = column.data_type().clone();
        let bytes =
            parquet(vec![("subject_id", text(&["a", "b"])), ("item_id", text(&["x", "y"])), ("timestamp", column)]);
        let rows = read_events(&parquet_format(), "t.parquet", &bytes).unwrap();
        let got: Vec<Timestamp> = rows.into_iter().map(|r| r.unwrap().event.at).collect();
        assert_eq!(got, expected, "{kind}");
    }
    let seconds = parquet(vec![
        ("subject_id", text(&["a"])),
        ("item_id", text(&["x"])),
        ("timestamp", Arc::new(TimestampSecondArray::from(vec![1_735_689_601]))),
    ]);
    let rows = read_events(&parquet_format(), "t.parquet", &seconds).unwrap();
    assert_eq!(rows[0].clone().unwrap().event.at, Timestamp::from_unix_seconds(1_735_689_601));
}

#[test]
fn bad_cells_are_named_by_row_and_column() {
    let bytes = parquet(vec![
        ("subject_id", Arc::new(StringArray::from(vec![Some("c1"), None, Some("c3"), Some("c4"), Some("c5")]))),
        ("item_id", text(&["x", "x", "x", "x", "x"])),
        ("kind", text(&["view", "view", "Bad Kind", "rating", "view"])),
        ("value", text(&["1", "1", "1", "four", "1"])),
        ("timestamp", text(&["1", "1", "1", "1", "yesterday"])),
        ("event_id", Arc::new(StringArray::from(vec![Some("e1"), None, None, None, None]))),
    ]);
    let rows = read_events(&parquet_format(), "shop.parquet", &bytes).unwrap();
    assert_eq!(rows[0].clone().unwrap().event_id.as_deref(), Some("e1"));
    let errors: Vec<String> = rows.into_iter().filter_map(Result::err).collect();
    assert_eq!(errors.len(), 4, "{errors:?}");
    assert!(errors[0].starts_with("shop.parquet:2: field `subject_id`:"), "{}", errors[0]);
    assert!(errors[1].starts_with("shop.parquet:3: field `kind`: invalid event kind `Bad Kind`"), "{}", errors[1]);
    assert_eq!(errors[2], "shop.parquet:4: field `value`: expected a finite number, found `four`");
    assert!(errors[3].starts_with("shop.parquet:5: field `timestamp`: invalid timestamp `yesterday`"), "{}", errors[3]);
}

#[test]
fn missing_columns_and_untextual_types_are_explained() {
    let bytes = parquet(vec![("subject_id", text(&["a"])), ("timestamp", text(&["1"]))]);
    let err = read_events(&parquet_format(), "in.parquet", &bytes).unwrap_err();
    assert_eq!(
        err,
        "in.parquet:0: field `item_id`: column is missing from the Parquet schema; its columns are `subject_id,timestamp`"
    );
    // A mapping names the columns; one it names on purpose must exist.
    let mapping: CsvMapping = "subject=customer,item=sku,timestamp=ts,kind=,value=qty".parse().unwrap();
    let format = parquet_format().with_mapping(mapping).unwrap();
    let bytes = parquet(vec![("customer", text(&["c"])), ("sku", text(&["s"])), ("ts", text(&["5"]))]);
    let err = read_events(&format, "in.parquet", &bytes).unwrap_err();
    assert!(err.starts_with("in.parquet:0: field `qty`: column is missing"), "{err}");

    let mut list = ListBuilder::new(StringBuilder::new());
    list.values().append_value("x");
    list.append(true);
    let bytes = parquet(vec![
        ("subject_id", text(&["a"])),
        ("item_id", Arc::new(list.finish()) as ArrayRef),
        ("timestamp", text(&["1"])),
    ]);
    let err = read_events(&parquet_format(), "in.parquet", &bytes).unwrap_err();
    assert!(err.starts_with("in.parquet:1: field `item_id`: a column of type List"), "{err}");
    // Columns nobody asked for are not decoded: a nested one is no error.
    let mut list = ListBuilder::new(StringBuilder::new());
    list.values().append_value("x");
    list.append(true);
    let bytes = parquet(vec![
        ("tags", Arc::new(list.finish()) as ArrayRef),
        ("timestamp", text(&["7"])),
        ("item_id", text(&["i"])),
        ("subject_id", text(&["s"])),
    ]);
    let rows = read_events(&parquet_format(), "in.parquet", &bytes).unwrap();
    let row = rows[0].clone().unwrap();
    assert_eq!(
        (row.subject_id.as_str(), row.event.item.as_str(), row.event.at),
        ("s", "i", Timestamp::from_unix_seconds(7))
    );
}

#[test]
fn damaged_files_are_errors_not_panics() {
    let good = parquet(vec![
        ("subject_id", text(&["a", "b", "c"])),
        ("item_id", text(&["x", "y", "z"])),
        ("timestamp", text(&["1", "2", "3"])),
    ]);
    assert_eq!(read_events(&parquet_format(), "in.parquet", &good).unwrap().len(), 3);
    // Every truncation and a flipped byte at every position: an error (or,
    // for a flip in padding, the same rows), never a panic.
    for cut in 0..good.len() {
        let err = read_events(&parquet_format(), "in.parquet", &good[..cut]);
        assert!(err.is_err(), "a file cut at {cut} bytes must be refused");
        assert!(err.unwrap_err().starts_with("in.parquet:"));
    }
    for at in 0..good.len() {
        let mut damaged = good.clone();
        damaged[at] ^= 0x5a;
        if let Err(e) = read_events(&parquet_format(), "in.parquet", &damaged) {
            assert!(e.starts_with("in.parquet:"), "{e}");
        }
    }
    let err = read_events(&parquet_format(), "in.parquet", b"subject_id,item_id\n").unwrap_err();
    assert!(err.starts_with("in.parquet:0: not a readable Parquet file"), "{err}");
}

#[test]
fn event_ids_are_read_from_every_format_that_has_them() {
    let csv = "subject_id,item_id,kind,value,timestamp,event_id\nc1,x,view,1,5,order-1/line-2\nc1,y,view,1,6,\n";
    let jsonl = concat!(
        r#"{"subject_id":"c1","item_id":"x","kind":"view","timestamp":5,"event_id":"order-1/line-2"}"#,
        "\n",
        r#"{"subject_id":"c1","item_id":"y","kind":"view","timestamp":6}"#,
        "\n"
    );
    let pq = parquet(vec![
        ("subject_id", text(&["c1", "c1"])),
        ("item_id", text(&["x", "y"])),
        ("kind", text(&["view", "view"])),
        ("timestamp", text(&["5", "6"])),
        ("event_id", Arc::new(StringArray::from(vec![Some("order-1/line-2"), None]))),
    ]);
    for (format, bytes) in [
        (EventFormat::from_name("csv").unwrap(), csv.as_bytes().to_vec()),
        (EventFormat::Jsonl, jsonl.as_bytes().to_vec()),
        (parquet_format(), pq),
    ] {
        let rows: Vec<RawEvent> = read_events(&format, "in", &bytes).unwrap().into_iter().map(Result::unwrap).collect();
        let ids: Vec<Option<&str>> = rows.iter().map(|r| r.event_id.as_deref()).collect();
        assert_eq!(ids, [Some("order-1/line-2"), None], "{}", format.name());
    }
    // An id is checked as on the API: 1 to 128 bytes, no control characters.
    let long = "e".repeat(129);
    let csv = format!("subject_id,item_id,timestamp,event_id\nc1,x,5,{long}\nc1,x,5,\"a\tb\"\n");
    let errors: Vec<String> = read_events(&EventFormat::from_name("csv").unwrap(), "in.csv", csv.as_bytes())
        .unwrap()
        .into_iter()
        .filter_map(Result::err)
        .collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].starts_with("in.csv:2: field `event_id`:"), "{}", errors[0]);
    assert!(errors[1].starts_with("in.csv:3: field `event_id`:"), "{}", errors[1]);
    // A mapping may name the column otherwise, or say there is none.
    let mapping: CsvMapping = "event_id=order_line".parse().unwrap();
    let csv = "subject_id,item_id,timestamp,order_line\nc1,x,5,L7\n";
    let rows = read_events(&EventFormat::Csv(mapping), "in.csv", csv.as_bytes()).unwrap();
    assert_eq!(rows[0].clone().unwrap().event_id.as_deref(), Some("L7"));
    let mapping: CsvMapping = "event_id=".parse().unwrap();
    let csv = "subject_id,item_id,timestamp,event_id\nc1,x,5,L7\n";
    let rows = read_events(&EventFormat::Csv(mapping), "in.csv", csv.as_bytes()).unwrap();
    assert_eq!(rows[0].clone().unwrap().event_id, None, "an unmapped column is ignored");
}

#[test]
fn consent_records_read_from_parquet() {
    let bytes = parquet(vec![
        ("subject_id", text(&["c1", "c2", "c3"])),
        ("purpose", text(&["training", "personalization", "marketing-ish"])),
        ("granted", Arc::new(BooleanArray::from(vec![true, false, true])) as ArrayRef),
        (
            "effective_at",
            Arc::new(
                TimestampMillisecondArray::from(vec![1_735_689_600_000, 1_735_689_600_500, 0]).with_timezone("UTC"),
            ),
        ),
        ("notice_version", text(&["v1", "v1", "v1"])),
    ]);
    let mut reader =
        ConsentReader::from_reader("consent.parquet".into(), Box::new(Cursor::new(bytes)), ConsentFormat::Parquet)
            .unwrap();
    let mut rows = Vec::new();
    while let Some(row) = reader.next_row().unwrap() {
        rows.push(row);
    }
    let first = rows[0].clone().unwrap();
    assert_eq!(
        (first.subject_id.as_str(), first.change.purpose, first.change.granted),
        ("c1", Purpose::Training, true)
    );
    assert_eq!(first.change.effective_at, Timestamp::from_unix_seconds(1_735_689_600));
    assert_eq!(first.change.proof_ref, None, "proof_ref is optional");
    let second = rows[1].clone().unwrap();
    assert_eq!(
        (second.change.granted, second.change.effective_at),
        (false, Timestamp::from_unix_millis(1_735_689_600_500))
    );
    let err = rows[2].clone().unwrap_err().to_string();
    assert!(err.starts_with("consent.parquet:3: field `purpose`:"), "{err}");

    let bytes = parquet(vec![("subject_id", text(&["c1"])), ("purpose", text(&["training"]))]);
    let err =
        ConsentReader::from_reader("consent.parquet".into(), Box::new(Cursor::new(bytes)), ConsentFormat::Parquet)
            .err()
            .unwrap()
            .to_string();
    assert!(err.starts_with("consent.parquet:0: field `granted`: column is missing"), "{err}");
}

fn id() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_.@-]{1,20}"
}

proptest! {
    /// Any events written as Parquet read back exactly as the same events
    /// written as CSV: the same rows, fields, errors and event ids.
    #[test]
    fn parquet_reads_as_csv_does(rows in prop::collection::vec((
        id(),
        id(),
        prop::sample::select(vec!["view", "cart", "purchase", "rating", "Bad Kind"]),
        -1000i32..1000,
        prop::option::of(0i64..4_000_000_000),
        prop::option::of(id()),
    ), 1..30)) {
        let mut csv = String::from("subject_id,item_id,kind,value,timestamp,event_id\n");
        for (s, i, k, v, ts, e) in &rows {
            let ts = ts.map_or(String::new(), |t| t.to_string());
            csv.push_str(&format!("{s},{i},{k},{},{ts},{}\n", f64::from(*v) / 4.0, e.as_deref().unwrap_or("")));
        }
        let pq = parquet(vec![
            ("subject_id", text(&rows.iter().map(|r| r.0.as_str()).collect::<Vec<_>>())),
            ("item_id", text(&rows.iter().map(|r| r.1.as_str()).collect::<Vec<_>>())),
            ("kind", text(&rows.iter().map(|r| r.2).collect::<Vec<_>>())),
            ("value", Arc::new(Float64Array::from(rows.iter().map(|r| f64::from(r.3) / 4.0).collect::<Vec<_>>()))),
            ("timestamp", Arc::new(Int64Array::from(rows.iter().map(|r| r.4).collect::<Vec<_>>()))),
            ("event_id", Arc::new(StringArray::from(rows.iter().map(|r| r.5.clone()).collect::<Vec<_>>()))),
        ]);
        let from_csv = read_events(&EventFormat::from_name("csv").unwrap(), "in", csv.as_bytes()).unwrap();
        let from_parquet = read_events(&parquet_format(), "in", &pq).unwrap();
        prop_assert_eq!(from_csv.len(), from_parquet.len());
        for (row, (c, p)) in from_csv.iter().zip(&from_parquet).enumerate() {
            match (c, p) {
                (Ok(c), Ok(p)) => {
                    // CSV counts the header as line 1; Parquet numbers data rows.
                    prop_assert_eq!((c.line, p.line), (row as u64 + 2, row as u64 + 1));
                    prop_assert_eq!(RawEvent { line: 0, ..c.clone() }, RawEvent { line: 0, ..p.clone() });
                }
                // CSV counts the header as line 1; Parquet numbers data rows.
                (Err(c), Err(p)) => prop_assert_eq!(
                    c.replacen(&format!("in:{}:", row + 2), "", 1),
                    p.replacen(&format!("in:{}:", row + 1), "", 1)
                ),
                (c, p) => prop_assert!(false, "row {}: csv {:?}, parquet {:?}", row + 1, c, p),
            }
        }
    }

    /// Arbitrary bytes never panic the Parquet readers.
    #[test]
    fn arbitrary_bytes_never_panic_parquet(mut bytes in prop::collection::vec(any::<u8>(), 0..600), magic in any::<bool>()) {
        if magic {
            // Make the footer look like Parquet's, to reach the metadata decoder.
            bytes.splice(0..0, *b"PAR1");
            bytes.extend_from_slice(&[16, 0, 0, 0]);
            bytes.extend_from_slice(b"PAR1");
        }
        if let Ok(rows) = read_events(&parquet_format(), "in.parquet", &bytes) {
            for error in rows.into_iter().filter_map(Result::err) {
                prop_assert!(error.starts_with("in.parquet:"), "{}", error);
            }
        }
        let _ = ConsentReader::from_reader("c.parquet".into(), Box::new(Cursor::new(bytes)), ConsentFormat::Parquet);
    }
}

/// A Parquet file with legacy INT96 times (as Spark, Hive and Impala write
/// them): one event per (subject, item, unix day).
fn int96_events(rows: &[(&str, &str, i64)]) -> Vec<u8> {
    use parquet::data_type::{ByteArray, ByteArrayType, Int96, Int96Type};
    use parquet::file::writer::SerializedFileWriter;
    let schema = parquet::schema::parser::parse_message_type(
        "message m { required binary subject_id (UTF8); required binary item_id (UTF8); required int96 timestamp; }",
    )
    .unwrap();
    let mut bytes = Vec::new();
    let mut writer = SerializedFileWriter::new(&mut bytes, Arc::new(schema), Default::default()).unwrap();
    let mut group = writer.next_row_group().unwrap();
    for column in 0..3 {
        let mut chunk = group.next_column().unwrap().unwrap();
        if column < 2 {
            let values: Vec<ByteArray> =
                rows.iter().map(|r| ByteArray::from(if column == 0 { r.0 } else { r.1 })).collect();
            chunk.typed::<ByteArrayType>().write_batch(&values, None, None).unwrap();
        } else {
            let values: Vec<Int96> = rows
                .iter()
                .map(|r| {
                    let mut v = Int96::new();
                    // Nanoseconds of the day (0), then the Julian day.
                    v.set_data(0, 0, u32::try_from(2_440_588 + r.2).unwrap());
                    v
                })
                .collect();
            chunk.typed::<Int96Type>().write_batch(&values, None, None).unwrap();
        }
        chunk.close().unwrap();
    }
    group.close().unwrap();
    writer.close().unwrap();
    bytes
}

#[test]
fn legacy_int96_times_read_right_far_from_1970() {
    // 2600-06-01 and 1500-03-01 wrap around as nanoseconds; read to the
    // millisecond they are the days they say.
    let days = |at: &str| Timestamp::parse(at).unwrap().as_unix_millis().div_euclid(86_400_000);
    let (future, past, near) =
        (days("2600-06-01T00:00:00Z"), days("1500-03-01T00:00:00Z"), days("2024-01-02T00:00:00Z"));
    let bytes = int96_events(&[("a", "x", future), ("b", "y", past), ("c", "z", near)]);
    let rows = read_events(&parquet_format(), "legacy.parquet", &bytes).unwrap();
    let at: Vec<Timestamp> = rows.into_iter().map(|r| r.unwrap().event.at).collect();
    assert_eq!(
        at,
        ["2600-06-01T00:00:00Z", "1500-03-01T00:00:00Z", "2024-01-02T00:00:00Z"].map(|t| Timestamp::parse(t).unwrap())
    );
}

#[test]
fn unconvertible_and_oversized_cells_are_refused_not_misread() {
    use arrow_array::BinaryArray;
    // Invalid UTF-8 in a binary column is an error naming the column, not a
    // silent null (which would read as the default kind).
    let kinds: ArrayRef = Arc::new(BinaryArray::from(vec![&b"purchase"[..], &b"\xffpurchase"[..]]));
    let bytes = parquet(vec![
        ("subject_id", text(&["u1", "u1"])),
        ("item_id", text(&["a", "b"])),
        ("kind", kinds),
        ("timestamp", text(&["1", "2"])),
    ]);
    let err = read_events(&parquet_format(), "bin.parquet", &bytes).unwrap_err();
    assert!(err.starts_with("bin.parquet:1: field `kind`:"), "{err}");

    // Times beyond year 9999 are a row error naming the value, never read in another unit.
    let times: ArrayRef = Arc::new(TimestampMillisecondArray::from(vec![8_210_266_876_800_001, 1_000]));
    let bytes =
        parquet(vec![("subject_id", text(&["u1", "u1"])), ("item_id", text(&["a", "b"])), ("timestamp", times)]);
    let rows = read_events(&parquet_format(), "t.parquet", &bytes).unwrap();
    let err = rows[0].clone().unwrap_err();
    assert!(err.starts_with("t.parquet:1: field `timestamp`: invalid timestamp `8210266876800001"), "{err}");
    assert_eq!(rows[1].clone().unwrap().event.at, Timestamp::from_unix_seconds(1));

    // A small file declaring huge cells (a decompression bomb) is refused
    // before anything is decoded.
    let big = "a".repeat(1 << 20);
    let bytes = parquet(vec![
        ("subject_id", text(&["u1"; 8])),
        ("item_id", text(&[big.as_str(); 8])),
        ("timestamp", text(&["1"; 8])),
    ]);
    let err = read_events(&parquet_format(), "bomb.parquet", &bytes).unwrap_err();
    assert!(err.starts_with("bomb.parquet:0: field `item_id`: row group 0 declares"), "{err}");
}
