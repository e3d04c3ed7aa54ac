//! `hush quickstart`: the whole pipeline on the bundled sample, then serving.

use crate::out;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use hush_consent::import::{self, ImportOptions};
use hush_consent::{Ledger, PseudonymKey, Purpose, Timestamp};
use hush_features::FeatureSet;
use hush_formats::{ConsentFormat, CsvMapping, EventFormat};
use serde_json::Value;

use crate::cli::*;

use super::erase::{erase_all, erasure_requests};
use super::serve::serve_model;
use super::{load_key, open_ledger, print_import, print_json, read_config};

/// A sample subject with personalization consent now and stored events, for the printed examples.
fn demo_subject(ledger: &Ledger, key: &PseudonymKey, consent_file: &Path) -> Result<Option<String>> {
    let mut reader =
        csv::Reader::from_path(consent_file).with_context(|| format!("reading {}", consent_file.display()))?;
    let now = Timestamp::now();
    for record in reader.records() {
        let record = record?;
        if record.get(1) != Some("personalization") {
            continue;
        }
        let Some(id) = record.get(0) else { continue };
        let subject = key.pseudonymize(id);
        if ledger.status(&subject, Purpose::Personalization, now)?.is_granted()
            && !ledger.events_of(&subject)?.is_empty()
        {
            return Ok(Some(id.to_string()));
        }
    }
    Ok(None)
}

pub fn run(g: &Global, args: &QuickstartArgs) -> Result<()> {
    let sample = &args.sample;
    for file in ["consent.csv", "events.csv", "erasure_requests.csv"] {
        if !sample.join(file).exists() {
            bail!("{} is missing; run from the repository root or pass --sample", sample.join(file).display());
        }
    }
    std::fs::create_dir_all(&args.dir).with_context(|| format!("creating {}", args.dir.display()))?;
    let db = args.dir.join("hush.db");
    for suffix in ["", "-wal", "-shm"] {
        let path = PathBuf::from(format!("{}{suffix}", db.display()));
        if path.exists() {
            std::fs::remove_file(&path).with_context(|| format!("removing old {}", path.display()))?;
        }
    }
    let json = g.json;
    // The demo builds its own store from scratch.
    let g = Global {
        db: db.display().to_string(),
        key_file: Some(args.dir.join("hush.key")),
        create: true,
        store_allow_cleartext: false,
        json: false,
        quiet: g.quiet,
        verbose: g.verbose,
    };
    // With --json the steps print nothing and one summary says what they did.
    let steps = || quickstart_steps(&g, args, sample, &db);
    let summary = if json { crate::with_stdout_muted(steps)? } else { steps()? };
    if json {
        print_json(&summary)?;
    }
    if args.no_serve {
        return Ok(());
    }
    // Serving answers --json with its own start-up document.
    let g = Global { json, ..g };
    if !json {
        out!("== serving the DP model (an admin API key was created for this demo)");
    }
    let mut ledger = open_ledger(&g)?;
    let (key, _) = hush_consent::keys::create(&mut ledger, "quickstart", &["admin".to_string()], Timestamp::now())?;
    let subject = demo_subject(&ledger, &load_key(&g)?, &sample.join("consent.csv"))?;
    drop(ledger);
    serve_model(
        &g,
        &args.dir.join("model.hmdl"),
        &args.bind,
        Some(&key),
        subject.as_deref(),
        hush_serve::ServeConfig::default(),
    )
}

/// Steps 1–6 of the quickstart; returns what they did, for `--json`.
fn quickstart_steps(g: &Global, args: &QuickstartArgs, sample: &Path, db: &Path) -> Result<Value> {
    let key = load_key(g)?;
    let mut ledger = open_ledger(g)?;
    let lenient = ImportOptions::default();

    out!("== 1/6 consent ledger: importing {}", sample.join("consent.csv").display());
    let consent = import::import_consent(
        &mut ledger,
        &key,
        &sample.join("consent.csv"),
        ConsentFormat::Csv,
        &lenient,
        Timestamp::now(),
        &mut |_| {},
    )?;
    print_import(g, "consent records", &consent)?;

    out!("== 2/6 event store: importing {}", sample.join("events.csv").display());
    let format = EventFormat::Csv(CsvMapping::default());
    let events = import::import_events(
        &mut ledger,
        &key,
        &sample.join("events.csv"),
        &format,
        &lenient,
        Timestamp::now(),
        &mut |_| {},
    )?;
    print_import(g, "events", &events)?;

    out!("== 3/6 erasure requests: {}", sample.join("erasure_requests.csv").display());
    let erased = erase_all(&mut ledger, &key, &erasure_requests(&sample.join("erasure_requests.csv"))?)?;
    out!(
        "erased {} subjects ({} consent records, {} events deleted); they are suppressed from now on",
        erased.subjects,
        erased.consent_records_deleted,
        erased.events_deleted
    );
    drop(ledger);

    out!("== 4/6 consent-filtered extraction (config {})", args.config.display());
    let extract_args = ExtractArgs {
        inputs: vec![sample.join("events.csv")],
        format: FormatArgs { format: Some("csv".into()), mapping: None },
        from_store: false,
        config: Some(args.config.clone()),
        as_of: None,
        policy: None,
        feedback: None,
        retention_days: None,
        max_events_per_subject: None,
        unbounded: false,
        sampling_seed: None,
        catalogue: Some(sample.join("items.csv")),
        research_data: false,
        tolerance: ImportTolerance { strict: false, max_malformed: None },
        out: args.dir.join("features.hfs"),
        report: Some(args.dir.join("extraction-report.json")),
        split: Some("holdout:0.2:42".into()),
    };
    let (_, extraction) = super::extract::run(g, &extract_args)?;

    out!(
        "== 5/6 evaluation on the train split (private report, evaluation budget): DP model (epsilon 4, delta \
         1e-6) and its non-private twin"
    );
    let config = read_config(&args.config)?;
    let train_set = FeatureSet::load(&args.dir.join("features.train.hfs"))?;
    let test_set = FeatureSet::load(&args.dir.join("features.test.hfs"))?;
    let dp_eval = args.dir.join("eval-dp.hmdl");
    let (_, dp_metrics) = super::learn::train_and_report(g, &train_set, &test_set, &config, Some(4.0), &dp_eval)?;
    let twin_eval = args.dir.join("eval-nonprivate.hmdl");
    let (_, twin_metrics) = super::learn::train_and_report(g, &train_set, &test_set, &config, None, &twin_eval)?;
    out!("== 6/6 the release: DP model (epsilon 4, delta 1e-6) on the whole feature set, release budget");
    let dp = super::learn::train_for_release(
        g,
        &FeatureSet::load(&args.dir.join("features.hfs"))?,
        &config,
        hush_privacy::Budget::new(4.0, 1e-6)?,
        &args.dir.join("model.hmdl"),
    )?;
    out!("{}", super::budget::release_line(g)?);
    out!(
        "done: the store is {}, the key {}, the model {} (id {})",
        db.display(),
        args.dir.join("hush.key").display(),
        args.dir.join("model.hmdl").display(),
        dp.meta.model_id
    );
    Ok(serde_json::json!({
        "store": db.display().to_string(),
        "key_file": args.dir.join("hush.key").display().to_string(),
        "consent_import": consent,
        "event_import": events,
        "erasure": erased,
        "extraction": extraction,
        "evaluation": {
            "dp": { "model": dp_eval.display().to_string(), "metrics": dp_metrics },
            "non_private": { "model": twin_eval.display().to_string(), "metrics": twin_metrics },
        },
        "release": {
            "model": args.dir.join("model.hmdl").display().to_string(),
            "inspect": hush_pipeline::learn::inspect_json(&dp),
        },
    }))
}
