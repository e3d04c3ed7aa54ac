//! In-memory rows read exactly as the file they came from, and their errors.

use hush_formats::CsvMapping;
use hush_pipeline::extract::{EventRows, Input};
use hush_pipeline::ErrorKind;
use proptest::prelude::*;

use super::common::*;

#[test]
fn rows_give_the_same_feature_set_as_their_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = movielens(dir.path());
    let params = research_params();
    let (from_file, file_report) = extract_research(&params, &[file_input(&file)]).unwrap();
    let rows = rows_of(&file, "<DataFrame>", movielens_mapping());
    let (from_rows, rows_report) = extract_research(&params, &[Input::Rows(rows)]).unwrap();
    assert_eq!(from_rows.items, from_file.items);
    assert_eq!(from_rows.by_subject, from_file.by_subject);
    assert_eq!(rows_report.rows_in, file_report.rows_in);
    assert_eq!(rows_report.dropped_events, file_report.dropped_events);
    assert_eq!(rows_report.inputs[0].source, "<DataFrame>");
}

fn table(columns: &[(&str, &[&str])]) -> EventRows {
    EventRows {
        label: "<DataFrame>".into(),
        columns: columns.iter().map(|(n, v)| (n.to_string(), v.iter().map(|s| s.to_string()).collect())).collect(),
        mapping: CsvMapping::default(),
    }
}

#[test]
fn a_malformed_row_is_named_by_row_and_field_in_strict_mode() {
    let rows =
        table(&[("subject_id", &["a", "b"]), ("item_id", &["x", "y"]), ("timestamp", &["1700000000", "yesterday"])]);
    let params = hush_features::ExtractParams { strict: true, ..research_params() };
    let error = extract_research(&params, &[Input::Rows(rows)]).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Input);
    assert!(error.message().starts_with("<DataFrame>:2: field `timestamp`: "), "{}", error.message());
}

#[test]
fn lenient_extraction_counts_malformed_rows_within_the_fraction() {
    let subjects: Vec<String> = (0..200).map(|n| format!("s{n}")).collect();
    let mut times: Vec<&str> = vec!["1700000000"; 200];
    times[7] = "never";
    let subjects: Vec<&str> = subjects.iter().map(String::as_str).collect();
    let rows = table(&[("subject_id", &subjects), ("item_id", &["x"; 200]), ("timestamp", &times)]);
    let params = hush_features::ExtractParams { max_malformed_fraction: 0.01, ..research_params() };
    let (_, report) = extract_research(&params, &[Input::Rows(rows)]).unwrap();
    assert_eq!(report.rows_in, 200);
    assert_eq!(report.malformed_examples.len(), 1);
    assert_eq!(report.malformed_examples[0].line, 8);
}

#[test]
fn a_missing_column_and_ragged_columns_are_refused() {
    let rows = table(&[("subject_id", &["a"]), ("timestamp", &["1700000000"])]);
    let error = extract_research(&research_params(), &[Input::Rows(rows)]).unwrap_err();
    assert!(error.message().contains("field `item_id`: column is missing"), "{}", error.message());
    let rows = table(&[("subject_id", &["a", "b"]), ("item_id", &["x"]), ("timestamp", &["1", "2"])]);
    let error = extract_research(&research_params(), &[Input::Rows(rows)]).unwrap_err();
    assert!(
        error.message().contains("column `item_id` has 1 values but the first column has 2"),
        "{}",
        error.message()
    );
}

#[test]
fn consented_rows_without_a_store_are_refused() {
    let rows = table(&[("subject_id", &["a"]), ("item_id", &["x"]), ("timestamp", &["1700000000"])]);
    let params = hush_features::ExtractParams::default();
    let error = extract_research(&params, &[Input::Rows(rows)]).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Store);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Any text in any cell: no panic; strict mode either reads every row
    /// or names the bad row (1-based, within the table) and its field.
    #[test]
    fn arbitrary_cells_never_panic_and_errors_name_a_row(
        cells in proptest::collection::vec(
            (".{0,12}", ".{0,6}", "(view|purchase|rating|.{0,5})", ".{0,6}", "(1700000000|.{0,10})"),
            1..20,
        )
    ) {
        let n = cells.len();
        let column = |f: fn(&(String, String, String, String, String)) -> &String| -> Vec<String> {
            cells.iter().map(|c| f(c).clone()).collect()
        };
        let rows = EventRows {
            label: "<DataFrame>".into(),
            columns: vec![
                ("subject_id".into(), column(|c| &c.0)),
                ("item_id".into(), column(|c| &c.1)),
                ("kind".into(), column(|c| &c.2)),
                ("value".into(), column(|c| &c.3)),
                ("timestamp".into(), column(|c| &c.4)),
            ],
            mapping: CsvMapping::default(),
        };
        let params = hush_features::ExtractParams { strict: true, ..research_params() };
        match extract_research(&params, &[Input::Rows(rows)]) {
            Ok((_, report)) => prop_assert_eq!(report.rows_in, n as u64),
            Err(error) => {
                let message = error.message();
                let row: u64 = message
                    .strip_prefix("<DataFrame>:")
                    .and_then(|rest| rest.split(':').next())
                    .and_then(|r| r.parse().ok())
                    .unwrap_or_else(|| panic!("no row in {message}"));
                prop_assert!(row >= 1 && row <= n as u64, "{}", message);
                prop_assert!(message.contains("field `"), "{}", message);
            }
        }
    }
}
