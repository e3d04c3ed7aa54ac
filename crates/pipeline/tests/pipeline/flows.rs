//! Training, evaluation, budget claims, sweeps and recommendations.

use arrow_array::cast::AsArray;
use arrow_array::Array;
use hush_consent::{BudgetPurpose, ConnectOptions};
use hush_features::SplitSpec;
use hush_mf::TrainParams;
use hush_pipeline::budget::{purpose_for, train_claimed, RunSpec};
use hush_pipeline::config::{read_config, BudgetConfig, ConfigFile};
use hush_pipeline::learn::{self, EvaluateRun, TrainRun};
use hush_pipeline::store::Store;
use hush_pipeline::sweep::{sweep, SweepRequest};
use hush_pipeline::tables::TableFormat;
use hush_pipeline::{Error, ErrorKind};
use hush_privacy::Budget;

use super::common::*;

fn small_config() -> ConfigFile {
    ConfigFile { train: TrainParams { rank: 4, iterations: 3, ..TrainParams::default() }, ..ConfigFile::default() }
}

fn train_with_mf(
    set: &hush_features::FeatureSet,
    params: &TrainParams,
    privacy: hush_mf::Privacy,
) -> hush_pipeline::Result<hush_mf::Model> {
    Ok(hush_mf::train(set, params, privacy, &mut |_| {})?)
}

fn research_set(dir: &std::path::Path) -> hush_features::FeatureSet {
    let file = movielens(dir);
    extract_research(&research_params(), &[file_input(&file)]).unwrap().0
}

#[test]
fn research_data_trains_a_dp_model_that_is_never_releasable() {
    let dir = tempfile::tempdir().unwrap();
    let set = research_set(dir.path());
    let config = small_config();
    let run = |purpose| TrainRun {
        set: set.clone(),
        split: None,
        config: &config,
        budget: Some(Budget::new(2.0, 1e-6).unwrap()),
        noise_seed: Some(1),
        purpose,
    };
    let trained = learn::train(None, run(None), train_with_mf).unwrap();
    assert!(trained.model.meta.data.research_only);
    assert_eq!(trained.model.meta.purpose, hush_mf::ModelPurpose::Evaluation);
    assert!(trained.model.meta.privacy.epsilon().is_some_and(|e| e <= 2.0 + 1e-9));
    assert!(!trained.model.not_releasable_because().is_empty());
    let refused = learn::train(None, run(Some(BudgetPurpose::Release)), train_with_mf).err().unwrap();
    assert!(refused.message().contains("can never be released"), "{}", refused.message());
}

#[test]
fn a_split_run_is_evaluated_and_the_same_seed_gives_the_same_model() {
    let dir = tempfile::tempdir().unwrap();
    let set = research_set(dir.path());
    let config = small_config();
    let run = || TrainRun {
        set: set.clone(),
        split: Some("holdout:0.2:42".parse::<SplitSpec>().unwrap()),
        config: &config,
        budget: Some(Budget::new(4.0, 1e-6).unwrap()),
        noise_seed: Some(3),
        purpose: None,
    };
    let a = learn::train(None, run(), train_with_mf).unwrap();
    let b = learn::train(None, run(), train_with_mf).unwrap();
    assert_eq!(a.model.item_factor_matrix(), b.model.item_factor_matrix());
    let (_, metrics) = a.evaluated.as_ref().unwrap();
    assert_eq!(metrics["k"], 10);
    assert!(metrics["rmse"].as_f64().is_some_and(f64::is_finite));
    assert!(a.train.nnz() < set.nnz());
}

#[test]
fn evaluate_refuses_a_model_of_other_data_and_writes_the_split() {
    let dir = tempfile::tempdir().unwrap();
    let set = research_set(dir.path());
    let config = small_config();
    let split_dir = dir.path().join("split");
    let evaluated = learn::evaluate(
        None,
        EvaluateRun {
            set: &set,
            split: "holdout:0.2:1".parse().unwrap(),
            validation: None,
            model: None,
            config: &config,
            budget: None,
            noise_seed: None,
            k: 5,
            write_split: Some((&split_dir, TableFormat::Csv)),
        },
        train_with_mf,
    )
    .unwrap();
    assert_eq!(evaluated.metrics["private"], false);
    assert!(evaluated.metrics.get("recall_at_5").is_some());
    let csv_rows = |name: &str| -> Vec<(u32, String, f32)> {
        let mut reader = csv::Reader::from_path(split_dir.join(name)).unwrap();
        reader.deserialize().map(Result::unwrap).collect()
    };
    let train_rows = csv_rows("train.csv");
    assert_eq!(train_rows.len(), evaluated.train.nnz());
    // The Parquet form holds exactly the rows of the CSV form, typed.
    learn::write_split(&split_dir, TableFormat::Parquet, &evaluated.train, &evaluated.test).unwrap();
    for (name, csv_name) in [("train.parquet", "train.csv"), ("test.parquet", "test.csv")] {
        let file = std::fs::File::open(split_dir.join(name)).unwrap();
        let reader =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap();
        let mut rows = Vec::new();
        for batch in reader {
            let batch = batch.unwrap();
            let s = batch.column(0).as_primitive::<arrow_array::types::UInt32Type>();
            let i = batch.column(1).as_string::<i32>();
            let v = batch.column(2).as_primitive::<arrow_array::types::Float32Type>();
            rows.extend((0..batch.num_rows()).map(|r| (s.value(r), i.value(r).to_string(), v.value(r))));
        }
        assert_eq!(rows, csv_rows(csv_name), "{name}");
    }
    // Pseudonymous interactions, like the feature set: owner-only in both forms.
    #[cfg(unix)]
    for name in ["train.csv", "test.csv", "train.parquet", "test.parquet"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(split_dir.join(name)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{name}");
    }

    let other_dir = tempfile::tempdir().unwrap();
    let params = hush_synth::SynthParams {
        subjects: 30,
        items: 7,
        seed: 9,
        event_format: hush_synth::EventFileFormat::MovielensCsv,
        ..hush_synth::SynthParams::movielens_shaped()
    };
    hush_synth::generate(&params, other_dir.path(), &mut |_| {}).unwrap();
    let model_path = dir.path().join("m.hmdl");
    let model = learn::train(
        None,
        TrainRun { set: set.clone(), split: None, config: &config, budget: None, noise_seed: None, purpose: None },
        train_with_mf,
    )
    .unwrap()
    .model;
    model.save(&model_path).unwrap();
    let other = extract_research(&research_params(), &[file_input(&other_dir.path().join("ratings.csv"))]).unwrap().0;
    let error = learn::evaluate(
        None,
        EvaluateRun {
            set: &other,
            split: "holdout:0.2:1".parse().unwrap(),
            validation: None,
            model: Some(&model_path),
            config: &config,
            budget: None,
            noise_seed: None,
            k: 10,
            write_split: None,
        },
        train_with_mf,
    )
    .err()
    .unwrap();
    assert!(error.message().starts_with("the model has "), "{}", error.message());
}

#[test]
fn a_budget_without_a_store_is_refused_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let set = research_set(dir.path());
    let params = small_config().train;
    let run =
        RunSpec { purpose: BudgetPurpose::Evaluation, budget: None, set: &set, params: &params, run_key: "k".into() };
    let mut trained = false;
    let error = train_claimed::<Error>(None, Some(&BudgetConfig::default()), run, || {
        trained = true;
        Err(Error::Invalid("unreachable".into()))
    })
    .err()
    .unwrap();
    assert_eq!(error.kind(), ErrorKind::Store);
    assert!(!trained);
}

#[test]
fn claims_on_a_real_store_spend_once_and_refuse_past_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    let set = research_set(dir.path());
    let db = dir.path().join("hush.db").display().to_string();
    let store = Store::open_with(&db, None, ConnectOptions::default(), true).unwrap();
    assert!(store.dataset().starts_with("store-"));
    let params = small_config().train.validate().unwrap();
    let config = BudgetConfig { lifetime_epsilon: Some(2.5), ..BudgetConfig::default() };
    let run = |epsilon: f64, key: &str| RunSpec {
        purpose: BudgetPurpose::Evaluation,
        budget: Some(Budget::new(epsilon, 1e-6).unwrap()),
        set: &set,
        params: &params,
        run_key: key.into(),
    };
    let privacy = |epsilon| {
        hush_pipeline::learn::privacy_with(
            Some(Budget::new(epsilon, 1e-6).unwrap()),
            hush_privacy::NoiseSource::seeded(1),
            &hush_mf::DpRules::default(),
        )
    };
    let model =
        train_claimed(Some(&store), Some(&config), run(2.0, "first"), || train_with_mf(&set, &params, privacy(2.0)))
            .unwrap();
    let runs = store.ledger().unwrap().budget_runs(None).unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].model_id.as_deref(), Some(model.meta.model_id.as_str()));
    let mut trained = false;
    let error = train_claimed(Some(&store), Some(&config), run(2.0, "second"), || {
        trained = true;
        train_with_mf(&set, &params, privacy(2.0))
    })
    .err()
    .unwrap();
    assert_eq!(error.kind(), ErrorKind::Budget, "{}", error.message());
    assert!(error.message().contains("would exceed the lifetime budget"));
    assert!(!trained, "a refused run draws no noise");
    // A failed training gives its reservation back.
    let failed = train_claimed(Some(&store), Some(&config), run(0.1, "third"), || -> hush_pipeline::Result<_> {
        Err(Error::Invalid("training failed".into()))
    });
    assert!(failed.is_err());
    let runs = store.ledger().unwrap().budget_runs(None).unwrap();
    assert_eq!(runs.iter().filter(|r| r.model_id.is_some()).count(), 1);
    assert!(runs.iter().all(|r| r.run_key != "third" || r.model_id.is_none()));
}

#[test]
fn purpose_for_releases_only_what_can_be_released() {
    let dir = tempfile::tempdir().unwrap();
    let set = research_set(dir.path());
    let budget = Some(Budget::new(1.0, 1e-6).unwrap());
    assert_eq!(purpose_for(None, budget, false, &set.meta).unwrap(), BudgetPurpose::Evaluation);
    let error = purpose_for(Some(BudgetPurpose::Release), budget, false, &set.meta).unwrap_err();
    assert_eq!(
        error.message(),
        "--purpose release: this model can never be released (it is trained on research data); use --purpose evaluation"
    );
    let mut meta = set.meta.clone();
    meta.research_only = false;
    meta.sampling_seeded = false;
    meta.catalogue = Some("items.csv".into());
    assert_eq!(purpose_for(None, budget, false, &meta).unwrap(), BudgetPurpose::Release);
    assert_eq!(purpose_for(None, None, false, &meta).unwrap(), BudgetPurpose::Evaluation);
    assert_eq!(purpose_for(None, budget, true, &meta).unwrap(), BudgetPurpose::Evaluation);
}

#[test]
fn a_sweep_writes_its_files_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let set = research_set(dir.path());
    let request = SweepRequest {
        name: "t".into(),
        epsilons: vec![4.0, 1.0, 4.0],
        seeds: 1,
        delta: 1e-6,
        split: "holdout:0.2:42".into(),
        k: 10,
        tolerance: 0.05,
        out: dir.path().join("sweep"),
        fresh: false,
    };
    let config = small_config();
    let first = sweep(None, &config, &set, None, &request, &|_| {}).unwrap();
    assert_eq!((first.computed, first.reused), (4, 0));
    assert_eq!(first.results.cells.len(), 4);
    for file in &first.files {
        assert!(std::path::Path::new(file).is_file(), "{file}");
    }
    // results.parquet holds the rows of results.csv, typed (ε null for the twin).
    let file = std::fs::File::open(request.out.join("results.parquet")).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap();
    let mut from_parquet = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        let arm = batch.column(0).as_string::<i32>();
        let epsilon = batch.column(1).as_primitive::<arrow_array::types::Float64Type>();
        let seed = batch.column(2).as_primitive::<arrow_array::types::UInt64Type>();
        let metric = batch.column(3).as_string::<i32>();
        let value = batch.column(4).as_primitive::<arrow_array::types::Float64Type>();
        for r in 0..batch.num_rows() {
            let or_empty = |valid: bool, text: String| if valid { text } else { String::new() };
            from_parquet.push(format!(
                "{},{},{},{},{}",
                arm.value(r),
                or_empty(epsilon.is_valid(r), epsilon.value(r).to_string()),
                or_empty(seed.is_valid(r), seed.value(r).to_string()),
                metric.value(r),
                value.value(r)
            ));
        }
    }
    let csv = std::fs::read_to_string(request.out.join("results.csv")).unwrap();
    let from_csv: Vec<&str> = csv.lines().skip(1).collect();
    assert!(from_csv.iter().any(|l| l.starts_with("non_private,,42,")), "{csv}");
    assert_eq!(from_parquet, from_csv);
    let again = sweep(None, &config, &set, None, &request, &|_| {}).unwrap();
    assert_eq!((again.computed, again.reused), (0, 4));
    let bad = SweepRequest { seeds: 0, ..request };
    assert_eq!(
        sweep(None, &config, &set, None, &bad, &|_| {}).unwrap_err().message(),
        "--seeds: give 1 to 100 seeds, not 0"
    );
}

#[test]
fn recommendations_fold_in_known_items_and_report_unknown_ones() {
    let dir = tempfile::tempdir().unwrap();
    let set = research_set(dir.path());
    let config = small_config();
    let model = learn::train(
        None,
        TrainRun { set, split: None, config: &config, budget: None, noise_seed: None, purpose: None },
        train_with_mf,
    )
    .unwrap()
    .model;
    let history = vec![model.items[0].clone(), "nope".to_string()];
    let found = learn::recommend(&model, &history, &[], 5).unwrap();
    assert!(found.personalized);
    assert_eq!(found.unknown_items, vec!["nope".to_string()]);
    assert_eq!(found.items.len(), 5);
    assert!(found.items.iter().all(|&(i, _)| i != 0));
    let popular = learn::recommend(&model, &["nope".to_string()], &[], 3).unwrap();
    assert!(!popular.personalized);
    let error = learn::recommend(&model, &history, &[1.0], 3).unwrap_err();
    assert_eq!(error.message(), "--values has 1 entries but --items has 2");
    let dump = learn::dump_json(&model);
    assert_eq!(dump["item_factors"].as_array().map(Vec::len), Some(model.n_items()));
}

#[test]
fn config_errors_name_the_file_and_line_and_causes_are_joined_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[train]\nrank = \"four\"\n").unwrap();
    let error = read_config(&path).unwrap_err();
    assert!(error.message().starts_with(&format!("config {}:2: ", path.display())), "{}", error.message());
    let missing = read_config(&dir.path().join("none.toml")).unwrap_err();
    assert_eq!(missing.kind(), ErrorKind::Io);
    assert!(missing.message().starts_with(&format!("reading config {}: ", dir.path().join("none.toml").display())));
    assert_eq!(missing.message().matches("reading config").count(), 1);
}
