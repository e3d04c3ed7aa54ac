//! `hush._hush`: the offline flows of `hush-pipeline` as a Python module.
//!
//! Everything here converts: Python arguments into the pipeline's inputs,
//! the pipeline's outputs into Python objects (JSON-shaped values become
//! dicts, factor matrices numpy arrays), and [`hush_pipeline::Error`] into
//! the exception classes below, with the same message the `hush` command
//! prints. The flows themselves (consent, budget claims, DP noise) are the
//! pipeline's, so a notebook gets exactly the command line's guarantees.
//! `hush/__init__.py` wraps this module with DataFrame inputs and outputs.

use std::path::{Path, PathBuf};

use hush_consent::{BudgetPurpose, ConnectOptions, Timestamp};
use hush_features::{ExtractParams, ExtractionReport, SplitSpec};
use hush_formats::{CsvMapping, EventFormat};
use hush_pipeline::config::{read_config, ConfigFile};
use hush_pipeline::extract::{EventRows, Input};
use hush_pipeline::store::Store;
use hush_pipeline::{Error, ErrorKind};
use hush_privacy::Budget;
use numpy::ToPyArray;
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::PyDict;

create_exception!(hush, HushError, PyException, "Every error of hush; the message is the `hush` command's.");
create_exception!(
    hush,
    InputError,
    HushError,
    "Bad input: a malformed row (with its row and field), a setting out of range, a config file."
);
create_exception!(hush, BudgetError, HushError, "The store's privacy budget refuses the run.");
create_exception!(hush, StoreError, HushError, "The store or its key is missing or unusable.");
create_exception!(
    hush,
    ModelError,
    HushError,
    "A model file that cannot be read, or a model that does not fit the data."
);
create_exception!(hush, FileError, HushError, "A file that could not be read or written.");

/// The Python exception of a pipeline error: its kind's class, its message.
fn py_error(error: Error) -> PyErr {
    let message = error.message();
    match error.kind() {
        ErrorKind::Input => InputError::new_err(message),
        ErrorKind::Budget => BudgetError::new_err(message),
        ErrorKind::Store => StoreError::new_err(message),
        ErrorKind::Model => ModelError::new_err(message),
        ErrorKind::Io => FileError::new_err(message),
    }
}

/// `?` for anything the pipeline's error can hold.
trait OrPy<T> {
    fn or_py(self) -> PyResult<T>;
}

impl<T, E: Into<Error>> OrPy<T> for Result<T, E> {
    fn or_py(self) -> PyResult<T> {
        self.map_err(|e| py_error(e.into()))
    }
}

fn invalid(message: String) -> PyErr {
    py_error(Error::Invalid(message))
}

/// A JSON-shaped value as Python objects (dicts, lists, numbers, strings).
fn to_py<'py>(py: Python<'py>, value: &impl serde::Serialize) -> PyResult<Bound<'py, PyAny>> {
    let text = serde_json::to_string(value).map_err(|e| invalid(format!("encoding a result: {e}")))?;
    py.import("json")?.call_method1("loads", (text,))
}

/// A Python dict (of JSON-shaped values) as a JSON value.
fn from_py(py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<serde_json::Value> {
    let text: String = py.import("json")?.call_method1("dumps", (value,))?.extract()?;
    serde_json::from_str(&text).map_err(|e| invalid(format!("a settings dict: {e}")))
}

/// `base` with the keys of `overrides` replaced (settings by their config-file names).
fn merged<T: serde::Serialize + serde::de::DeserializeOwned>(
    base: &T,
    overrides: serde_json::Value,
    table: &str,
) -> PyResult<T> {
    let mut value = serde_json::to_value(base).map_err(|e| invalid(format!("[{table}]: {e}")))?;
    if let (Some(target), serde_json::Value::Object(source)) = (value.as_object_mut(), overrides) {
        for (key, v) in source {
            target.insert(key, v);
        }
    }
    serde_json::from_value(value).map_err(|e| invalid(format!("[{table}] setting: {e}")))
}

fn config_of(config: Option<PathBuf>) -> PyResult<ConfigFile> {
    match config {
        Some(path) => read_config(&path).or_py(),
        None => Ok(ConfigFile::default()),
    }
}

fn store_of(store: Option<&str>, key_file: Option<PathBuf>) -> PyResult<Option<Store>> {
    store.map(|db| Store::open(db, key_file.as_deref(), ConnectOptions::default())).transpose().or_py()
}

/// The DP budget asked for, or `None` for the non-private twin; exactly one must be chosen.
fn budget_of(epsilon: Option<f64>, delta: f64, non_private: bool) -> PyResult<Option<Budget>> {
    match (epsilon, non_private) {
        (Some(epsilon), false) => Ok(Some(Budget::new(epsilon, delta).or_py()?)),
        (None, true) => Ok(None),
        _ => Err(invalid(
            "choose a privacy budget with epsilon=E [delta=D], or non_private=True for the non-private twin".into(),
        )),
    }
}

fn split_of(text: &str) -> PyResult<SplitSpec> {
    text.parse::<SplitSpec>().or_py()
}

/// A feature set: the consent-filtered, pseudonymous training data, and the
/// extraction report behind it.
#[pyclass(module = "hush._hush", frozen)]
struct FeatureSet {
    set: hush_features::FeatureSet,
    report: Option<ExtractionReport>,
}

#[pymethods]
impl FeatureSet {
    /// Loads a feature set file (`.hfs`), with `X.report.json` beside it when present.
    #[staticmethod]
    fn load(path: PathBuf) -> PyResult<Self> {
        let set = hush_features::FeatureSet::load(&path).or_py()?;
        let report_path = path.with_extension("report.json");
        let report = match std::fs::read_to_string(&report_path) {
            Ok(text) => Some(serde_json::from_str(&text).map_err(|e| {
                py_error(Error::Format {
                    context: format!("{}: not an extraction report", report_path.display()),
                    source: Box::new(e),
                })
            })?),
            Err(_) => None,
        };
        Ok(FeatureSet { set, report })
    }

    /// Saves the feature set (and its report beside it, as `X.report.json`).
    fn save(&self, path: PathBuf) -> PyResult<()> {
        self.set.save(&path).or_py()?;
        if let Some(report) = &self.report {
            let text = serde_json::to_string_pretty(report).map_err(|e| invalid(e.to_string()))?;
            let report_path = path.with_extension("report.json");
            hush_consent::files::write_owner_only(&report_path, text.as_bytes()).map_err(|source| {
                py_error(Error::Io { context: format!("writing {}", report_path.display()), source })
            })?;
        }
        Ok(())
    }

    /// Subjects (pseudonymous rows).
    #[getter]
    fn n_subjects(&self) -> usize {
        self.set.n_subjects()
    }

    /// Items (columns).
    #[getter]
    fn n_items(&self) -> usize {
        self.set.n_items()
    }

    /// Interactions (non-zero cells).
    #[getter]
    fn n_interactions(&self) -> usize {
        self.set.nnz()
    }

    /// Whether this is research data (no consent ledger; no model from it can be released).
    #[getter]
    fn research_only(&self) -> bool {
        self.set.meta.research_only
    }

    /// The item ids, in column order.
    #[getter]
    fn items(&self) -> Vec<String> {
        self.set.items.clone()
    }

    /// The feature set's metadata (feedback, snapshot, provenance).
    #[getter]
    fn meta<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_py(py, &self.set.meta)
    }

    /// The extraction report (rows in, drops by reason, malformed examples), if known.
    #[getter]
    fn report<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.report.as_ref().map(|r| to_py(py, r)).transpose()
    }

    fn __repr__(&self) -> String {
        format!(
            "FeatureSet({} subjects, {} items, {} interactions{})",
            self.set.n_subjects(),
            self.set.n_items(),
            self.set.nnz(),
            if self.set.meta.research_only { ", research data" } else { "" }
        )
    }
}

/// A trained model (the released item side), with its evaluation when it
/// was trained on a split.
#[pyclass(module = "hush._hush", frozen)]
struct Model {
    model: hush_mf::Model,
    metrics: Option<serde_json::Value>,
    files: Vec<String>,
}

#[pymethods]
impl Model {
    /// Loads a model file (`.hmdl`).
    #[staticmethod]
    fn load(path: PathBuf) -> PyResult<Self> {
        let model = hush_mf::Model::load(&path).or_py()?;
        Ok(Model { model, metrics: None, files: Vec::new() })
    }

    /// Saves the model and its card beside it; returns the files written.
    #[pyo3(signature = (path, force = false))]
    fn save(&self, path: PathBuf, force: bool) -> PyResult<Vec<String>> {
        refuse_overwrite(&path, force)?;
        let mut written = vec![path.display().to_string()];
        written.extend(hush_pipeline::learn::save_with_card(&self.model, &path, None).or_py()?);
        Ok(written)
    }

    /// The item ids, in row order of the factor matrix.
    #[getter]
    fn items(&self) -> Vec<String> {
        self.model.items.clone()
    }

    /// The rank (columns of the factor matrix).
    #[getter]
    fn rank(&self) -> usize {
        self.model.rank
    }

    /// The released item factors, items × rank, as a numpy array.
    #[getter]
    fn item_factors<'py>(&self, py: Python<'py>) -> Bound<'py, numpy::PyArray2<f32>> {
        self.model.item_factor_matrix().to_pyarray(py)
    }

    /// The released item biases, as a numpy array.
    #[getter]
    fn item_bias<'py>(&self, py: Python<'py>) -> Bound<'py, numpy::PyArray1<f32>> {
        ndarray::ArrayView1::from(&self.model.item_bias[..]).to_pyarray(py)
    }

    /// The model's metadata: privacy guarantee, data provenance, settings, purpose.
    #[getter]
    fn meta<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_py(py, &self.model.meta)
    }

    /// The model id.
    #[getter]
    fn model_id(&self) -> String {
        self.model.meta.model_id.clone()
    }

    /// The evaluation metrics of a model trained on a split (private, exact), else `None`.
    #[getter]
    fn metrics<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.metrics.as_ref().map(|m| to_py(py, m)).transpose()
    }

    /// The files written when the model was trained with `out=`.
    #[getter]
    fn files(&self) -> Vec<String> {
        self.files.clone()
    }

    /// One line on the privacy guarantee, as `hush train` prints it.
    #[getter]
    fn guarantee(&self) -> String {
        hush_pipeline::learn::guarantee_line(&self.model)
    }

    /// Why the model may not be served (empty when it may, with the store's release entry).
    #[getter]
    fn not_releasable_because(&self) -> Vec<&'static str> {
        self.model.not_releasable_because()
    }

    /// `hush model inspect --json`: metadata and shape.
    fn inspect<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_py(py, &hush_pipeline::learn::inspect_json(&self.model))
    }

    /// `hush model dump`: every released array; `item_factors` as a numpy array.
    fn dump<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let mut value = hush_pipeline::learn::dump_json(&self.model);
        if let Some(object) = value.as_object_mut() {
            object.remove("item_factors");
        }
        let dict = to_py(py, &value)?;
        dict.set_item("item_factors", self.item_factors(py))?;
        Ok(dict)
    }

    /// The model card, as Markdown (or self-contained HTML).
    #[pyo3(signature = (html = false))]
    fn card(&self, html: bool) -> String {
        if html {
            hush_report::card::html(&self.model)
        } else {
            hush_report::card::markdown(&self.model)
        }
    }

    /// Offline recommendations for a history of item ids: a dict with
    /// `items` (id, score pairs, best first), `unknown_items`, `personalized`.
    #[pyo3(signature = (items, values = None, k = 10))]
    fn recommend<'py>(
        &self,
        py: Python<'py>,
        items: Vec<String>,
        values: Option<Vec<f32>>,
        k: usize,
    ) -> PyResult<Bound<'py, PyDict>> {
        let found =
            hush_pipeline::learn::recommend(&self.model, &items, values.as_deref().unwrap_or(&[]), k).or_py()?;
        let dict = PyDict::new(py);
        let list: Vec<(String, f64)> =
            found.items.iter().map(|&(i, score)| (self.model.items[i].clone(), score)).collect();
        dict.set_item("items", list)?;
        dict.set_item("unknown_items", found.unknown_items)?;
        dict.set_item("personalized", found.personalized)?;
        Ok(dict)
    }

    fn __repr__(&self) -> String {
        format!(
            "Model({}, {} items, rank {}: {})",
            self.model.meta.model_id,
            self.model.n_items(),
            self.model.rank,
            hush_pipeline::learn::guarantee_line(&self.model)
        )
    }
}

/// A model file is replaced only on purpose: it may be the one being served.
fn refuse_overwrite(path: &Path, force: bool) -> PyResult<()> {
    if path.exists() && !force {
        return Err(invalid(format!(
            "{} exists (it may be the model being served): pass force=True to replace it",
            path.display()
        )));
    }
    Ok(())
}

/// Writes a synthetic storefront (events, consent, catalogue, erasure
/// requests) into `out`; returns the summary.
#[pyfunction]
#[pyo3(signature = (out, subjects = None, items = None, mean_events = None, rank = None, seed = None, format = "csv"))]
#[allow(clippy::too_many_arguments)]
fn synth<'py>(
    py: Python<'py>,
    out: PathBuf,
    subjects: Option<u32>,
    items: Option<u32>,
    mean_events: Option<f64>,
    rank: Option<usize>,
    seed: Option<u64>,
    format: &str,
) -> PyResult<Bound<'py, PyAny>> {
    let (base, event_format) = match format {
        "csv" => (hush_synth::SynthParams::default(), hush_synth::EventFileFormat::Csv),
        "jsonl" => (hush_synth::SynthParams::default(), hush_synth::EventFileFormat::Jsonl),
        "movielens-csv" => (hush_synth::SynthParams::movielens_shaped(), hush_synth::EventFileFormat::MovielensCsv),
        other => return Err(invalid(format!("format: `{other}` is not one of csv, jsonl, movielens-csv"))),
    };
    let params = hush_synth::SynthParams {
        subjects: subjects.unwrap_or(base.subjects),
        items: items.unwrap_or(base.items),
        mean_events_per_subject: mean_events.unwrap_or(base.mean_events_per_subject),
        rank: rank.unwrap_or(base.rank),
        seed: seed.unwrap_or(base.seed),
        event_format,
        ..base
    };
    let summary = py
        .allow_threads(|| hush_synth::generate(&params, &out, &mut |_| {}))
        .map_err(|e| py_error(Error::Invalid(hush_pipeline::message_of(&e))))?;
    to_py(py, &summary)
}

/// Consent-filtered extraction. `inputs` holds file paths and in-memory
/// tables (`(label, [(column, [text, ...]), ...])`); `settings` overrides the
/// config's `[extract]` table by its key names.
#[pyfunction]
#[pyo3(signature = (inputs, format = None, mapping = None, config = None, store = None, key_file = None, use_store = false, settings = None))]
#[allow(clippy::too_many_arguments)]
fn extract(
    py: Python<'_>,
    inputs: Vec<Bound<'_, PyAny>>,
    format: Option<&str>,
    mapping: Option<&str>,
    config: Option<PathBuf>,
    store: Option<&str>,
    key_file: Option<PathBuf>,
    use_store: bool,
    settings: Option<Bound<'_, PyAny>>,
) -> PyResult<FeatureSet> {
    let config = config_of(config)?;
    let params: ExtractParams = match &settings {
        Some(s) => merged(&config.extract, from_py(py, s)?, "extract")?,
        None => config.extract.clone(),
    };
    // Each file in `format`, or else the format its extension names.
    let file_format = |path: &std::path::Path| -> PyResult<EventFormat> {
        let format = match format {
            Some(name) => EventFormat::from_name(name).or_py()?,
            None => EventFormat::from_path(path),
        };
        match mapping {
            Some(m) => format.with_mapping(m.parse::<CsvMapping>().or_py()?).or_py(),
            None => Ok(format),
        }
    };
    let row_mapping = match mapping {
        Some(m) => m.parse::<CsvMapping>().or_py()?,
        None => CsvMapping::default(),
    };
    let mut parsed = Vec::with_capacity(inputs.len());
    for input in &inputs {
        if let Ok((label, columns)) = input.extract::<(String, Vec<(String, Vec<String>)>)>() {
            parsed.push(Input::Rows(EventRows { label, columns, mapping: row_mapping.clone() }));
        } else {
            let path: PathBuf = input.extract()?;
            let format = file_format(&path)?;
            parsed.push(Input::File { path, format });
        }
    }
    let store = if params.research_data { None } else { store_of(store, key_file)? };
    let (set, report) = py
        .allow_threads(|| -> hush_pipeline::Result<_> {
            let now = Timestamp::now();
            let config = params.validate(now)?;
            hush_pipeline::extract::extract(store.as_ref(), &config, &parsed, use_store, now, &mut |_| {})
        })
        .or_py()?;
    Ok(FeatureSet { set, report: Some(report) })
}

/// Trains as `hush train`: DP with `epsilon` (and `delta`) or the
/// non-private twin, on the whole set or the train part of `split`.
#[pyfunction]
#[pyo3(signature = (data, epsilon = None, delta = 1e-6, non_private = false, noise_seed = None, split = None, purpose = None, config = None, settings = None, store = None, key_file = None, out = None, force = false))]
#[allow(clippy::too_many_arguments)]
fn train(
    py: Python<'_>,
    data: &FeatureSet,
    epsilon: Option<f64>,
    delta: f64,
    non_private: bool,
    noise_seed: Option<u64>,
    split: Option<&str>,
    purpose: Option<&str>,
    config: Option<PathBuf>,
    settings: Option<Bound<'_, PyAny>>,
    store: Option<&str>,
    key_file: Option<PathBuf>,
    out: Option<PathBuf>,
    force: bool,
) -> PyResult<Model> {
    if let Some(path) = &out {
        refuse_overwrite(path, force)?;
    }
    let mut config = config_of(config)?;
    if let Some(s) = &settings {
        config.train = merged(&config.train, from_py(py, s)?, "train")?;
    }
    let budget = budget_of(epsilon, delta, non_private)?;
    let split = split.map(split_of).transpose()?;
    let purpose = match purpose {
        None => None,
        Some("release") => Some(BudgetPurpose::Release),
        Some("evaluation") => Some(BudgetPurpose::Evaluation),
        Some(other) => return Err(invalid(format!("purpose: `{other}` is not release or evaluation"))),
    };
    let store = if data.set.meta.research_only { None } else { store_of(store, key_file)? };
    let set = data.set.clone();
    let trained = py
        .allow_threads(|| {
            hush_pipeline::learn::train(
                store.as_ref(),
                hush_pipeline::learn::TrainRun { set, split, config: &config, budget, noise_seed, purpose },
                |set, params, privacy| -> hush_pipeline::Result<_> {
                    Ok(hush_mf::train(set, params, privacy, &mut |_| {})?)
                },
            )
        })
        .or_py()?;
    let (evaluation, metrics) = match trained.evaluated {
        Some((e, m)) => (Some(e), Some(m)),
        None => (None, None),
    };
    let files = match &out {
        Some(path) => {
            let mut files = vec![path.display().to_string()];
            files.extend(hush_pipeline::learn::save_with_card(&trained.model, path, evaluation.as_ref()).or_py()?);
            files
        }
        None => Vec::new(),
    };
    Ok(Model { model: trained.model, metrics, files })
}

/// Evaluates as `hush evaluate`: trains on the split's train part (or
/// evaluates the model file `model`) and returns the metrics dict.
#[pyfunction]
#[pyo3(signature = (data, split = "holdout:0.2:42", model = None, epsilon = None, delta = 1e-6, non_private = false, noise_seed = None, k = 10, validation = None, config = None, settings = None, store = None, key_file = None, write_split = None, split_format = "csv"))]
#[allow(clippy::too_many_arguments)]
fn evaluate<'py>(
    py: Python<'py>,
    data: &FeatureSet,
    split: &str,
    model: Option<PathBuf>,
    epsilon: Option<f64>,
    delta: f64,
    non_private: bool,
    noise_seed: Option<u64>,
    k: usize,
    validation: Option<&str>,
    config: Option<PathBuf>,
    settings: Option<Bound<'py, PyAny>>,
    store: Option<&str>,
    key_file: Option<PathBuf>,
    write_split: Option<PathBuf>,
    split_format: &str,
) -> PyResult<Bound<'py, PyAny>> {
    let mut config = config_of(config)?;
    if let Some(s) = &settings {
        config.train = merged(&config.train, from_py(py, s)?, "train")?;
    }
    let budget = if model.is_some() { None } else { budget_of(epsilon, delta, non_private)? };
    let split = split_of(split)?;
    let validation = validation.map(split_of).transpose()?;
    let format: hush_pipeline::tables::TableFormat = split_format.parse().or_py()?;
    let store = if data.set.meta.research_only { None } else { store_of(store, key_file)? };
    let evaluated = py
        .allow_threads(|| {
            hush_pipeline::learn::evaluate(
                store.as_ref(),
                hush_pipeline::learn::EvaluateRun {
                    set: &data.set,
                    split,
                    validation,
                    model: model.as_deref(),
                    config: &config,
                    budget,
                    noise_seed,
                    k,
                    write_split: write_split.as_deref().map(|dir| (dir, format)),
                },
                |set, params, privacy| -> hush_pipeline::Result<_> {
                    Ok(hush_mf::train(set, params, privacy, &mut |_| {})?)
                },
            )
        })
        .or_py()?;
    to_py(py, &evaluated.metrics)
}

/// Sweeps as `hush sweep`: every epsilon and seed, the twin and the
/// baselines; writes results and the report into `out`; returns the results dict.
#[pyfunction]
#[pyo3(signature = (data, out, epsilons = vec![0.5, 1.0, 2.0, 4.0, 8.0, 16.0], seeds = 5, delta = 1e-6, split = "holdout:0.2:42", k = 10, tolerance = 0.05, fresh = false, name = "sweep", config = None, settings = None, store = None, key_file = None))]
#[allow(clippy::too_many_arguments)]
fn sweep<'py>(
    py: Python<'py>,
    data: &FeatureSet,
    out: PathBuf,
    epsilons: Vec<f64>,
    seeds: u32,
    delta: f64,
    split: &str,
    k: usize,
    tolerance: f64,
    fresh: bool,
    name: &str,
    config: Option<PathBuf>,
    settings: Option<Bound<'py, PyAny>>,
    store: Option<&str>,
    key_file: Option<PathBuf>,
) -> PyResult<Bound<'py, PyAny>> {
    let mut config = config_of(config)?;
    if let Some(s) = &settings {
        config.train = merged(&config.train, from_py(py, s)?, "train")?;
    }
    let request = hush_pipeline::sweep::SweepRequest {
        name: name.to_string(),
        epsilons,
        seeds,
        delta,
        split: split.to_string(),
        k,
        tolerance,
        out,
        fresh,
    };
    let store = if data.set.meta.research_only { None } else { store_of(store, key_file)? };
    let outcome = py
        .allow_threads(|| {
            hush_pipeline::sweep::sweep(store.as_ref(), &config, &data.set, data.report.clone(), &request, &|_| {})
        })
        .or_py()?;
    let dict = to_py(py, &outcome.results)?;
    dict.set_item("computed", outcome.computed)?;
    dict.set_item("reused", outcome.reused)?;
    dict.set_item("files", outcome.files)?;
    Ok(dict)
}

/// The module `hush._hush`.
#[pymodule]
fn _hush(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("HushError", py.get_type::<HushError>())?;
    m.add("InputError", py.get_type::<InputError>())?;
    m.add("BudgetError", py.get_type::<BudgetError>())?;
    m.add("StoreError", py.get_type::<StoreError>())?;
    m.add("ModelError", py.get_type::<ModelError>())?;
    m.add("FileError", py.get_type::<FileError>())?;
    m.add_class::<FeatureSet>()?;
    m.add_class::<Model>()?;
    m.add_function(wrap_pyfunction!(synth, m)?)?;
    m.add_function(wrap_pyfunction!(extract, m)?)?;
    m.add_function(wrap_pyfunction!(train, m)?)?;
    m.add_function(wrap_pyfunction!(evaluate, m)?)?;
    m.add_function(wrap_pyfunction!(sweep, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
