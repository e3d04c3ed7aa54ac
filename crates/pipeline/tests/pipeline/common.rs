//! Generated inputs shared by the tests.

use std::path::{Path, PathBuf};

use hush_consent::{EventKind, Timestamp};
use hush_features::{ExtractParams, Feedback};
use hush_formats::{CsvMapping, EventFormat};
use hush_pipeline::extract::{extract, EventRows, Input};

/// A MovieLens-shaped research data set in `dir`; returns `ratings.csv`.
pub fn movielens(dir: &Path) -> PathBuf {
    let params = hush_synth::SynthParams {
        subjects: 80,
        items: 40,
        mean_events_per_subject: 15.0,
        seed: 4,
        event_format: hush_synth::EventFileFormat::MovielensCsv,
        ..hush_synth::SynthParams::movielens_shaped()
    };
    hush_synth::generate(&params, dir, &mut |_| {}).expect("synthetic data in a temp dir");
    dir.join("ratings.csv")
}

/// Research extraction settings: explicit ratings, seeded sampling.
pub fn research_params() -> ExtractParams {
    ExtractParams { research_data: true, feedback: Feedback::Explicit, sampling_seed: Some(5), ..Default::default() }
}

/// The mapping that reads MovieLens columns as rows.
pub fn movielens_mapping() -> CsvMapping {
    CsvMapping {
        subject: "userId".into(),
        item: "movieId".into(),
        kind: None,
        value: Some("rating".into()),
        timestamp: "timestamp".into(),
        default_kind: EventKind::Rating,
        delimiter: b',',
        event_id: None,
    }
}

/// A CSV file read into columns of text, as a notebook's table would be.
pub fn rows_of(path: &Path, label: &str, mapping: CsvMapping) -> EventRows {
    let mut reader = csv::Reader::from_path(path).expect("the generated file");
    let header: Vec<String> = reader.headers().expect("a header").iter().map(str::to_string).collect();
    let mut columns: Vec<(String, Vec<String>)> = header.into_iter().map(|h| (h, Vec::new())).collect();
    for record in reader.records() {
        let record = record.expect("a generated row");
        for (n, field) in record.iter().enumerate() {
            columns[n].1.push(field.to_string());
        }
    }
    EventRows { label: label.into(), columns, mapping }
}

/// Extracts research data from `inputs`.
pub fn extract_research(
    params: &ExtractParams,
    inputs: &[Input],
) -> hush_pipeline::Result<(hush_features::FeatureSet, hush_features::ExtractionReport)> {
    let now = Timestamp::now();
    let config = params.validate(now)?;
    extract(None, &config, inputs, false, now, &mut |_| {})
}

/// The MovieLens file as an input.
pub fn file_input(path: &Path) -> Input {
    Input::File { path: path.to_path_buf(), format: EventFormat::MovielensCsv }
}
