//! Readers of every supported format: good rows, and exact messages for bad ones.

use std::io::Cursor;

use hush_formats::{CsvMapping, EventFormat, EventReader, RawEvent};
use hush_vocab::{EventKind, RowError, Timestamp};
use proptest::prelude::*;

fn read_all(format: &EventFormat, bytes: &[u8]) -> Result<Vec<Result<RawEvent, String>>, String> {
    let mut reader = EventReader::from_reader("in.txt".into(), Box::new(Cursor::new(bytes.to_vec())), format)
        .map_err(|e| e.to_string())?;
    let mut rows = Vec::new();
    while let Some(row) = reader.next_row().map_err(|e| e.to_string())? {
        rows.push(row.map_err(|e: RowError| e.to_string()));
    }
    Ok(rows)
}

fn errors(format: &EventFormat, bytes: &[u8]) -> Vec<String> {
    read_all(format, bytes).unwrap().into_iter().filter_map(Result::err).collect()
}

#[test]
fn movielens_csv_reads_ratings() {
    let rows = read_all(&EventFormat::MovielensCsv, b"userId,movieId,rating,timestamp\n1,31,2.5,1260759144\n").unwrap();
    let row = rows[0].clone().unwrap();
    assert_eq!(row.subject_id, "1");
    assert_eq!(row.event.item, "31");
    assert_eq!(row.event.kind, EventKind::Rating);
    assert_eq!(row.event.value, 2.5);
    assert_eq!(row.event.at, Timestamp::from_unix_seconds(1_260_759_144));
}

#[test]
fn udata_and_dat_read_ratings() {
    let rows = read_all(&EventFormat::Udata, b"196\t242\t3\t881250949\n186\t302\t3\t891717742\n").unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1].clone().unwrap().event.item, "302");
    let rows = read_all(&EventFormat::MovielensDat, b"1::1193::5::978300760\r\n\n1::661::3::978302109\n").unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1].clone().unwrap().event.value, 3.0);
}

#[test]
fn malformed_rows_are_named_by_line_and_field() {
    let csv = b"userId,movieId,rating,timestamp\n1,31,2.5,1260759144\n1,32,2.5\n1,33,four,1260759144\n1,34,3,yesterday\n1;35;3;1260759144\n";
    assert_eq!(
        errors(&EventFormat::MovielensCsv, csv),
        [
            "in.txt:3: expected 4 fields separated by ',' (userId,movieId,rating,timestamp), found 3",
            "in.txt:4: field `rating`: expected a finite number, found `four`",
            "in.txt:5: field `timestamp`: invalid timestamp `yesterday`: expected RFC 3339 (e.g. 2026-01-31T12:00:00Z) or integer unix seconds",
            "in.txt:6: expected 4 fields separated by ',' (userId,movieId,rating,timestamp), found 1",
        ]
    );
}

#[test]
fn invalid_utf8_is_named() {
    let csv = b"userId,movieId,rating,timestamp\n1,\xff\xfe,2.5,1260759144\n";
    assert_eq!(errors(&EventFormat::MovielensCsv, csv), ["in.txt:2: field `movieId`: is not valid UTF-8"]);
    assert_eq!(
        errors(&EventFormat::MovielensDat, b"1::\xc3::5::978300760\n"),
        ["in.txt:1: field `line`: is not valid UTF-8"]
    );
}

#[test]
fn wrong_separators_and_headers_are_explained() {
    assert_eq!(
        errors(&EventFormat::Udata, b"196,242,3,881250949\n"),
        ["in.txt:1: expected 4 fields separated by tab (user_id,item_id,rating,timestamp), found 1"]
    );
    assert_eq!(
        errors(&EventFormat::MovielensDat, b"1:1193:5:978300760\n"),
        ["in.txt:1: expected 4 fields separated by '::' (UserID::MovieID::Rating::Timestamp), found 1"]
    );
    let err = read_all(&EventFormat::MovielensCsv, b"userId\tmovieId\trating\ttimestamp\n1\t2\t3\t4\n").unwrap_err();
    assert_eq!(err, "in.txt:1: expected the MovieLens header `userId,movieId,rating,timestamp`, found `userId\tmovieId\trating\ttimestamp`");
    let err = read_all(&EventFormat::MovielensCsv, b"").unwrap_err();
    assert_eq!(err, "in.txt:1: the file is empty; expected a header row");
}

#[test]
fn generic_csv_uses_the_mapping() {
    let mapping: CsvMapping =
        "subject=customer,item=sku,timestamp=ts,kind=,value=,default_kind=purchase,delimiter=;".parse().unwrap();
    let format = EventFormat::Csv(mapping);
    let rows = read_all(&format, b"ts;sku;customer\n2025-03-01T10:00:00Z;A-1;c9\n").unwrap();
    let row = rows[0].clone().unwrap();
    assert_eq!(
        (row.subject_id.as_str(), row.event.item.as_str(), row.event.kind.clone(), row.event.value),
        ("c9", "A-1", EventKind::Purchase, 1.0)
    );
    let err = read_all(&format, b"when;sku;customer\n").unwrap_err();
    assert_eq!(err, "in.txt:1: field `ts`: column is missing from the header `when;sku;customer` (separator ';')");
    let err = "subject=user,colour=red".parse::<CsvMapping>().unwrap_err().to_string();
    assert_eq!(err, "invalid csv mapping: unknown field `colour`; expected subject, item, kind, value, timestamp, event_id, default_kind, delimiter");
}

#[test]
fn jsonl_rows_and_their_errors() {
    let text = concat!(
        r#"{"subject_id":"c1","item_id":"sku-1","kind":"cart","timestamp":"2025-02-01T00:00:00Z"}"#,
        "\n",
        r#"{"subject_id":7,"item_id":12,"kind":"rating","value":4.5,"timestamp":1735689600}"#,
        "\n",
        r#"{"subject_id":"c1","item_id":"sku-1","kind":"Bad Kind","timestamp":1}"#,
        "\n",
        r#"{"subject_id":"c1","item_id":"sku-1","timestamp":1"#,
        "\n",
        r#"{"subject_id":"c1","item_id":"sku-1","kind":"rating","timestamp":1}"#,
        "\n",
    );
    let rows = read_all(&EventFormat::Jsonl, text.as_bytes()).unwrap();
    assert_eq!(rows[0].clone().unwrap().event.kind, EventKind::Cart);
    assert_eq!(rows[1].clone().unwrap().subject_id, "7");
    let errs: Vec<String> = rows.into_iter().filter_map(Result::err).collect();
    assert_eq!(
        errs,
        [
            "in.txt:3: field `kind`: invalid event kind `Bad Kind`: expected view, cart, purchase, rating, or a lowercase name of letters, digits and '_' (1 to 32 characters)",
            "in.txt:4: expected a JSON object with subject_id, item_id, kind, value, timestamp (event_id optional): EOF while parsing an object (column 50)",
            "in.txt:5: field `value`: a rating event needs a numeric value",
        ]
    );
}

fn id() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_.@-]{1,20}"
}

proptest! {
    /// Any well-formed event written as CSV or JSONL reads back as the same event.
    #[test]
    fn written_events_read_back(rows in prop::collection::vec((id(), id(), prop::sample::select(vec!["view", "cart", "purchase", "rating", "wish_list"]), -1000i32..1000, 0i64..4_000_000_000), 1..20)) {
        let mut csv = String::from("subject_id,item_id,kind,value,timestamp\n");
        let mut jsonl = String::new();
        for (s, i, k, v, ts) in &rows {
            let value = f64::from(*v) / 4.0;
            csv.push_str(&format!("{s},{i},{k},{value},{ts}\n"));
            jsonl.push_str(&format!("{{\"subject_id\":\"{s}\",\"item_id\":\"{i}\",\"kind\":\"{k}\",\"value\":{value},\"timestamp\":{ts}}}\n"));
        }
        for (format, bytes) in [(EventFormat::from_name("csv").unwrap(), csv), (EventFormat::Jsonl, jsonl)] {
            let read = read_all(&format, bytes.as_bytes()).unwrap();
            prop_assert_eq!(read.len(), rows.len());
            for (got, (s, i, k, v, ts)) in read.into_iter().zip(&rows) {
                let got = got.unwrap();
                prop_assert_eq!(&got.subject_id, s);
                prop_assert_eq!(&got.event.item, i);
                prop_assert_eq!(got.event.kind.as_str(), *k);
                prop_assert_eq!(got.event.value, *v as f32 / 4.0);
                prop_assert_eq!(got.event.at, Timestamp::from_unix_seconds(*ts));
            }
        }
    }

    /// Arbitrary bytes never panic a reader: every row is an event or a named error.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        for format in [EventFormat::MovielensCsv, EventFormat::Udata, EventFormat::MovielensDat, EventFormat::Jsonl, EventFormat::from_name("csv").unwrap()] {
            if let Ok(rows) = read_all(&format, &bytes) {
                for row in rows.into_iter().flat_map(Result::err) {
                    prop_assert!(row.starts_with("in.txt:"), "{}", row);
                }
            }
        }
    }
}
