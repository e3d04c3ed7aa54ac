//! Criterion benchmark of consent-filtered extraction on a fixed synthetic
//! storefront (seed 1, 20,000 subjects, about 580k events).
//!
//! `cargo bench --bench extract`. The 10M-event comparison against a bare
//! CSV parse, with peak memory, is `benches/extract_vs_csv.sh`.
// `criterion_group!` defines a public function without a doc comment.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hush_consent::import::{import_consent, ImportOptions};
use hush_consent::{Ledger, PseudonymKey, Timestamp};
use hush_features::{ConsentView, ExtractParams, Extractor};
use hush_formats::{ConsentFormat, EventFormat};

fn extraction(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let params = hush_synth::SynthParams { subjects: 20_000, seed: 1, ..hush_synth::SynthParams::default() };
    let summary = hush_synth::generate(&params, dir.path(), &mut |_| {}).expect("synthetic storefront");
    let key = PseudonymKey::from_bytes([1; 32]);
    let mut ledger = Ledger::open(dir.path().join("hush.db")).expect("ledger");
    let now = Timestamp::now();
    import_consent(
        &mut ledger,
        &key,
        &dir.path().join("consent.csv"),
        ConsentFormat::Csv,
        &ImportOptions::default(),
        now,
        &mut |_| {},
    )
    .expect("consent import");
    let config = ExtractParams { max_events_per_subject: Some(200), ..ExtractParams::default() }
        .validate(now)
        .expect("valid params");
    let events = dir.path().join("events.csv");
    let format = EventFormat::from_name("csv").expect("csv format");

    let mut group = c.benchmark_group("extract");
    group.sample_size(10);
    group.throughput(Throughput::Elements(summary.events));
    group.bench_function("synthetic_20k_subjects", |b| {
        b.iter(|| {
            let view = ConsentView::from_ledger(&ledger, &config).expect("consent view");
            let mut extractor = Extractor::new(&config, &view, &key);
            extractor.add_file(&events, &format, &mut |_| {}).expect("extraction");
            extractor.finish(now).expect("feature set")
        })
    });
    group.finish();
}

criterion_group!(benches, extraction);
criterion_main!(benches);
