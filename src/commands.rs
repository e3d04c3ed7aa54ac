//! What each command does: parse, call the libraries, print.

use crate::out;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use hush_consent::formats::{ConsentFormat, CsvMapping, EventFormat};
use hush_consent::import::{self, ImportOptions, ImportReport};
use hush_consent::{ConsentChange, ConsentSource, Ledger, PseudonymKey, Purpose, Timestamp};
use hush_features::{ConsentPolicy, ExtractParams, ExtractionReport, FeatureSet, Feedback};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::cli::*;
use crate::progress;

pub fn run(cli: Cli) -> Result<()> {
    let g = &cli.global;
    match &cli.command {
        Command::Init => init(g),
        Command::Synth(args) => synth(g, args),
        Command::Consent(command) => consent(g, command),
        Command::Events(EventsCommand::Import(args)) => events_import(g, args),
        Command::Items(command) => crate::items::run(g, command),
        Command::Export(args) => export(g, args),
        Command::Erase(args) => erase(g, args),
        Command::Extract(args) => extract(g, args).map(|_| ()),
        Command::Train(args) => crate::learn::train(g, args),
        Command::Evaluate(args) => crate::learn::evaluate(g, args),
        Command::Sweep(args) => crate::sweep::run(g, args),
        Command::Audit(args) => crate::audit::run(g, args),
        Command::Recommend(args) if args.all => crate::batch::run(g, args),
        Command::Recommend(args) => crate::learn::recommend(g, args),
        Command::Similar(args) => crate::learn::similar(g, args),
        Command::Model(ModelCommand::Inspect(args)) => crate::learn::inspect(g, args),
        Command::Model(ModelCommand::Card(args)) => crate::learn::card(g, args),
        Command::Model(ModelCommand::Dump(args)) => crate::learn::dump(args),
        Command::Serve(args) => serve(g, args),
        Command::Budget(command) => crate::budget::run(g, command),
        Command::Keys(command) => keys(g, command),
        Command::Quickstart(args) => quickstart(g, args),
    }
}

/// The key file: --key-file, or `hush.key` beside an SQLite store (in the
/// working directory for a PostgreSQL store).
fn key_path(g: &Global) -> PathBuf {
    hush_pipeline::store::key_path(&g.db, g.key_file.as_deref())
}

pub fn load_key(g: &Global) -> Result<PseudonymKey> {
    Ok(hush_pipeline::store::load_key(&g.db, g.key_file.as_deref(), g.create)?)
}

fn connect_options(g: &Global) -> hush_consent::ConnectOptions {
    hush_consent::ConnectOptions { allow_cleartext: g.store_allow_cleartext }
}

pub fn open_ledger(g: &Global) -> Result<Ledger> {
    Ok(hush_pipeline::store::open_ledger(&g.db, connect_options(g), g.create)?)
}

/// The store and its key, for the offline flows of `hush-pipeline`.
pub fn store(g: &Global) -> Result<hush_pipeline::store::Store> {
    Ok(hush_pipeline::store::Store::open_with(&g.db, g.key_file.as_deref(), connect_options(g), g.create)?)
}

/// `hush init`: the store and its key, made once, on purpose.
fn init(g: &Global) -> Result<()> {
    let creating = Global { create: true, ..g.clone() };
    let existed = match hush_consent::StoreUrl::parse(&g.db)? {
        hush_consent::StoreUrl::Sqlite(path) => path.exists(),
        hush_consent::StoreUrl::Postgres(_) => false,
    };
    let ledger = open_ledger(&creating)?;
    let key_existed = key_path(g).exists() || std::env::var_os(hush_consent::KEY_ENV_VAR).is_some();
    load_key(&creating)?;
    if g.json {
        return print_json(&serde_json::json!({
            "store": ledger.location(),
            "store_created": !existed,
            "key_file": key_path(g),
            "key_created": !key_existed,
        }));
    }
    let said = |created: bool| if created { "created" } else { "already exists" };
    out!("store {}: {}", ledger.location(), said(!existed));
    out!("key file {}: {}", key_path(g).display(), said(!key_existed));
    Ok(())
}

fn parse_time(text: Option<&str>, what: &str) -> Result<Timestamp> {
    match text {
        Some(t) => Timestamp::parse(t).with_context(|| format!("--{what}")),
        None => Ok(Timestamp::now()),
    }
}

/// The name a value has in JSON output (`no_record`, `as-of-snapshot`,
/// `committed`), for text output: the two never disagree.
pub fn wire_name<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(Value::String(name)) => name,
        Ok(other) => other.to_string(),
        Err(_) => "?".into(),
    }
}

pub fn print_json<T: Serialize>(value: &T) -> Result<()> {
    out!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn synth(g: &Global, args: &SynthArgs) -> Result<()> {
    let base = match args.format {
        SynthFormat::MovielensCsv => hush_synth::SynthParams::movielens_shaped(),
        SynthFormat::Csv | SynthFormat::Jsonl => hush_synth::SynthParams::default(),
    };
    let params = hush_synth::SynthParams {
        subjects: args.subjects.unwrap_or(base.subjects),
        items: args.items.unwrap_or(base.items),
        mean_events_per_subject: args.mean_events.unwrap_or(base.mean_events_per_subject),
        rank: args.rank.unwrap_or(base.rank),
        seed: args.seed.unwrap_or(base.seed),
        popularity_exponent: args.popularity_exponent.unwrap_or(base.popularity_exponent),
        activity_sigma: args.activity_sigma.unwrap_or(base.activity_sigma),
        preference: args.taste_strength.map_or(base.preference, hush_synth::Preference::taste),
        event_format: match args.format {
            SynthFormat::Csv => hush_synth::EventFileFormat::Csv,
            SynthFormat::Jsonl => hush_synth::EventFileFormat::Jsonl,
            SynthFormat::MovielensCsv => hush_synth::EventFileFormat::MovielensCsv,
        },
        ..base
    };
    let bar = progress::counter("subjects generated", g.quiet);
    bar.set_length(u64::from(params.subjects));
    let summary = hush_synth::generate(&params, &args.out, &mut |n| bar.set_position(n))?;
    bar.finish_and_clear();
    if g.json {
        return print_json(&summary);
    }
    if params.event_format == hush_synth::EventFileFormat::MovielensCsv {
        out!(
            "wrote {} users, {} movies, {} ratings (MovieLens layout, research data) to {}",
            summary.subjects,
            summary.items,
            summary.events,
            args.out.display()
        );
        return Ok(());
    }
    out!(
        "wrote {} subjects, {} items, {} events, {} consent records, {} erasure requests to {}",
        summary.subjects,
        summary.items,
        summary.events,
        summary.consent_records,
        summary.erasure_requests,
        args.out.display()
    );
    Ok(())
}

fn options(t: &ImportTolerance) -> Result<ImportOptions> {
    let max_malformed_fraction = t.max_malformed.unwrap_or(ImportOptions::default().max_malformed_fraction);
    if !(0.0..=1.0).contains(&max_malformed_fraction) {
        bail!("--max-malformed must be within 0..=1, found {max_malformed_fraction}");
    }
    Ok(ImportOptions { strict: t.strict, max_malformed_fraction })
}

fn print_import(g: &Global, what: &str, report: &ImportReport) -> Result<()> {
    if g.json {
        return print_json(report);
    }
    out!(
        "{}: {} rows, {} {what} stored, {} already held, {} refused (no consent), {} refused (erased), {} malformed",
        report.path,
        report.rows,
        report.stored,
        report.duplicates,
        report.dropped_no_consent,
        report.dropped_suppressed,
        report.malformed
    );
    for e in &report.errors {
        out!("  {e}");
    }
    Ok(())
}

fn consent(g: &Global, command: &ConsentCommand) -> Result<()> {
    let key = load_key(g)?;
    let mut ledger = open_ledger(g)?;
    match command {
        ConsentCommand::Import(args) => {
            let format = match args.format {
                Some(ConsentFileFormat::Csv) => ConsentFormat::Csv,
                Some(ConsentFileFormat::Jsonl) => ConsentFormat::Jsonl,
                Some(ConsentFileFormat::Parquet) => ConsentFormat::Parquet,
                None => ConsentFormat::from_path(&args.file),
            };
            let bar = progress::counter("consent rows", g.quiet);
            let report = import::import_consent(
                &mut ledger,
                &key,
                &args.file,
                format,
                &options(&args.tolerance)?,
                Timestamp::now(),
                &mut |n| bar.set_position(n),
            )?;
            bar.finish_and_clear();
            print_import(g, "consent records", &report)
        }
        ConsentCommand::Grant(args) => change(g, &mut ledger, &key, args, true),
        ConsentCommand::Withdraw(args) => change(g, &mut ledger, &key, args, false),
        ConsentCommand::Status(args) => {
            let subject = args.subject.subject.pseudonymize(&key);
            let as_of = parse_time(args.as_of.as_deref(), "as-of")?;
            let purposes = match &args.purpose {
                Some(p) => vec![p.parse::<Purpose>()?],
                None => Purpose::ALL.to_vec(),
            };
            let statuses = purposes
                .into_iter()
                .map(|p| ledger.status(&subject, p, as_of))
                .collect::<hush_consent::Result<Vec<_>>>()?;
            if g.json {
                return print_json(&statuses);
            }
            for s in statuses {
                let since = s.decided_by.as_ref().map(|r| format!(" since {}", r.effective_at)).unwrap_or_default();
                out!("{}: {}{since} (as of {})", s.purpose, wire_name(&s.state), s.as_of);
            }
            Ok(())
        }
        ConsentCommand::History(args) => {
            let history = ledger.history(&args.subject.pseudonymize(&key))?;
            if g.json {
                return print_json(&history);
            }
            if history.is_empty() {
                out!("no consent records for this subject");
            }
            for r in history {
                out!(
                    "#{} {} {} effective {} (recorded {}, via {}, notice {}{})",
                    r.seq,
                    r.purpose,
                    if r.granted { "granted" } else { "withdrawn" },
                    r.effective_at,
                    r.recorded_at,
                    r.source.as_str(),
                    r.notice_version,
                    r.proof_ref.map(|p| format!(", proof {p}")).unwrap_or_default()
                );
            }
            Ok(())
        }
    }
}

fn change(g: &Global, ledger: &mut Ledger, key: &PseudonymKey, args: &ConsentChangeArgs, granted: bool) -> Result<()> {
    let subject = args.subject.subject.pseudonymize(key);
    let now = Timestamp::now();
    let change = ConsentChange {
        purpose: args.purpose.parse()?,
        granted,
        effective_at: match &args.effective_at {
            Some(t) => Timestamp::parse(t).context("--effective-at")?,
            None => now,
        },
        source: ConsentSource::Cli,
        notice_version: hush_consent::record::notice_for(granted, args.notice_version.clone())
            .map_err(|e| anyhow::anyhow!("{e} (--notice-version)"))?,
        proof_ref: args.proof.clone(),
    };
    if args.after_erasure && granted {
        ledger.lift_suppression(&subject)?;
    }
    let known = ledger.is_known(&subject)?;
    let record = ledger.record_consent(&subject, &change, now).map_err(|e| match e {
        hush_consent::Error::Suppressed => {
            anyhow::anyhow!("{e}: pass --after-erasure with a grant if the subject has opted in again")
        }
        other => other.into(),
    })?;
    if g.json {
        return print_json(&record);
    }
    out!(
        "recorded #{}: {} {} effective {}",
        record.seq,
        record.purpose,
        if granted { "granted" } else { "withdrawn" },
        record.effective_at
    );
    if !known && !granted {
        eprintln!("note: hush had never seen this subject id before; if it is a variant spelling, the real subject is unchanged");
    }
    Ok(())
}

/// The format `path` is read in: `--format`, or else its extension; with
/// `--mapping`'s columns (CSV and Parquet only).
pub fn event_format(args: &FormatArgs, path: &Path) -> Result<EventFormat> {
    let format = match &args.format {
        Some(name) => EventFormat::from_name(name)?,
        None => EventFormat::from_path(path),
    };
    Ok(match &args.mapping {
        Some(mapping) => format
            .with_mapping(mapping.parse::<CsvMapping>()?)
            .with_context(|| format!("--mapping for {}", path.display()))?,
        None => format,
    })
}

fn events_import(g: &Global, args: &EventsImportArgs) -> Result<()> {
    let key = load_key(g)?;
    let mut ledger = open_ledger(g)?;
    let bar = progress::counter("event rows", g.quiet);
    let report = import::import_events(
        &mut ledger,
        &key,
        &args.file,
        &event_format(&args.format, &args.file)?,
        &options(&args.tolerance)?,
        Timestamp::now(),
        &mut |n| bar.set_position(n),
    )?;
    bar.finish_and_clear();
    print_import(g, "events", &report)
}

fn export(g: &Global, args: &ExportArgs) -> Result<()> {
    let key = load_key(g)?;
    let ledger = open_ledger(g)?;
    let export = ledger.export(&args.subject.subject.pseudonymize(&key), Timestamp::now())?;
    let json = serde_json::to_string_pretty(&export)?;
    match &args.out {
        Some(path) => {
            hush_consent::files::write_owner_only(path, json.as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
            if !g.json {
                out!(
                    "wrote {} consent records and {} events to {}",
                    export.consent_history.len(),
                    export.events.len(),
                    path.display()
                );
            }
        }
        None => out!("{json}"),
    }
    Ok(())
}

/// Subject ids from an erasure-request CSV (column `subject_id`), with line numbers in errors.
fn erasure_requests(path: &Path) -> Result<Vec<hush_consent::SubjectId>> {
    let mut reader = csv::Reader::from_path(path).with_context(|| format!("reading {}", path.display()))?;
    let column = reader
        .headers()
        .with_context(|| format!("{}:1: unreadable header", path.display()))?
        .iter()
        .position(|h| h == "subject_id")
        .with_context(|| format!("{}:1: field `subject_id`: column is missing from the header", path.display()))?;
    let mut ids = Vec::new();
    for (index, record) in reader.records().enumerate() {
        let line = index + 2;
        let record =
            record.with_context(|| format!("{}:{line}: unreadable row (expected UTF-8 CSV)", path.display()))?;
        match record.get(column).filter(|s| !s.is_empty()) {
            Some(id) => ids.push(
                hush_consent::SubjectId::parse(id)
                    .map_err(|e| anyhow::anyhow!("{}:{line}: field `subject_id`: {e}", path.display()))?,
            ),
            None => bail!("{}:{line}: field `subject_id`: expected a subject id", path.display()),
        }
    }
    Ok(ids)
}

#[derive(Serialize, Default)]
struct EraseSummary {
    subjects: u64,
    /// Ids hush had never seen: nothing was held, nothing was suppressed.
    unknown_subjects: u64,
    consent_records_deleted: u64,
    events_deleted: u64,
    receipts: Vec<hush_consent::ErasureReceipt>,
}

fn erase(g: &Global, args: &EraseArgs) -> Result<()> {
    let key = load_key(g)?;
    let mut ledger = open_ledger(g)?;
    let ids = match (&args.target.subject, &args.target.requests) {
        (Some(id), _) => vec![id.clone()],
        (None, Some(path)) => erasure_requests(path)?,
        (None, None) => unreachable!("clap requires one of --subject and --requests"),
    };
    let summary = erase_all(&mut ledger, &key, &ids)?;
    if args.target.subject.is_some() && summary.unknown_subjects == 1 {
        anyhow::bail!(
            "hush has never seen this subject id: nothing was held, so nothing was erased (a variant spelling \
             would leave the real subject untouched; check the id); later imports of it are suppressed, \
             an explicit opt-in still works"
        );
    }
    if g.json {
        return print_json(&summary);
    }
    out!(
        "erased {} subjects: {} consent records and {} events deleted; later imports of them are suppressed",
        summary.subjects - summary.unknown_subjects,
        summary.consent_records_deleted,
        summary.events_deleted
    );
    if summary.unknown_subjects > 0 {
        out!(
            "{} requested ids were never seen: nothing was held of them (later imports of them are suppressed)",
            summary.unknown_subjects
        );
    }
    Ok(())
}

fn erase_all(ledger: &mut Ledger, key: &PseudonymKey, ids: &[hush_consent::SubjectId]) -> Result<EraseSummary> {
    let mut summary = EraseSummary::default();
    for id in ids {
        let receipt = ledger.erase(&id.pseudonymize(key), Timestamp::now())?;
        summary.subjects += 1;
        summary.unknown_subjects += u64::from(!receipt.subject_was_known);
        summary.consent_records_deleted += receipt.consent_records_deleted;
        summary.events_deleted += receipt.events_deleted;
        summary.receipts.push(receipt);
    }
    Ok(summary)
}

pub use hush_pipeline::config::{read_config, ConfigFile};

fn extract_params(args: &ExtractArgs) -> Result<ExtractParams> {
    let mut params = match &args.config {
        Some(path) => read_config(path)?.extract,
        None => ExtractParams::default(),
    };
    if let Some(t) = &args.as_of {
        params.snapshot_at = Some(t.clone());
    }
    if let Some(p) = args.policy {
        params.policy = match p {
            PolicyArg::AsOfSnapshot => ConsentPolicy::AsOfSnapshot,
            PolicyArg::SinceGrant => ConsentPolicy::SinceGrant,
        };
    }
    if let Some(f) = args.feedback {
        params.feedback = match f {
            FeedbackArg::Explicit => Feedback::Explicit,
            FeedbackArg::Implicit => Feedback::Implicit,
        };
    }
    if args.retention_days.is_some() {
        params.retention_days = args.retention_days;
    }
    if args.max_events_per_subject.is_some() {
        params.max_events_per_subject = args.max_events_per_subject;
    }
    if args.unbounded {
        params.max_events_per_subject = None;
    }
    if args.sampling_seed.is_some() {
        params.sampling_seed = args.sampling_seed;
    }
    if args.catalogue.is_some() {
        params.catalogue.clone_from(&args.catalogue);
    }
    params.research_data |= args.research_data;
    params.strict |= args.tolerance.strict;
    // An explicit flag wins over the config, even when it equals the default.
    if let Some(fraction) = args.tolerance.max_malformed {
        params.max_malformed_fraction = fraction;
    }
    Ok(params)
}

/// Extracts a feature set from files (with the ledger's consent, or as research data) and/or the event store.
pub fn run_extraction(
    g: &Global,
    config: &hush_features::ExtractConfig,
    inputs: &[PathBuf],
    format: &FormatArgs,
    use_store: bool,
    now: Timestamp,
) -> Result<(FeatureSet, ExtractionReport)> {
    // Research data has no ledger and no key: no store is reached for it.
    let store = if config.research_data { None } else { Some(store(g)?) };
    let inputs = inputs
        .iter()
        .map(|path| Ok(hush_pipeline::extract::Input::File { path: path.clone(), format: event_format(format, path)? }))
        .collect::<Result<Vec<_>>>()?;
    let bar = progress::counter("rows read", g.quiet);
    let extracted =
        hush_pipeline::extract::extract(store.as_ref(), config, &inputs, use_store, now, &mut |n| bar.set_position(n))?;
    bar.finish_and_clear();
    Ok(extracted)
}

fn extract(g: &Global, args: &ExtractArgs) -> Result<(FeatureSet, ExtractionReport)> {
    let now = Timestamp::now();
    let config = extract_params(args)?.validate(now)?;
    let split = args.split.as_deref().map(str::parse::<hush_features::SplitSpec>).transpose()?;
    let use_store = args.inputs.is_empty() || args.from_store;
    let (set, report) = run_extraction(g, &config, &args.inputs, &args.format, use_store, now)?;
    set.save(&args.out)?;
    let report_path = args.report.clone().unwrap_or_else(|| args.out.with_extension("report.json"));
    hush_consent::files::write_owner_only(&report_path, serde_json::to_string_pretty(&report)?.as_bytes())
        .with_context(|| format!("writing {}", report_path.display()))?;
    let mut written = vec![args.out.display().to_string(), report_path.display().to_string()];
    if let Some(spec) = split {
        let parts = hush_features::split::split(&set, &spec);
        for (name, part) in [("train", &parts.train), ("test", &parts.test)] {
            let path = args.out.with_extension(format!("{name}.hfs"));
            part.save(&path)?;
            written.push(path.display().to_string());
        }
    }
    if g.json {
        print_json(&serde_json::json!({ "report": report, "files": written }))?;
    } else {
        print_report(&report)?;
        out!("wrote {}", written.join(", "));
    }
    Ok((set, report))
}

fn print_report(r: &ExtractionReport) -> Result<()> {
    out!(
        "consent snapshot {} ({} policy{}): {} rows in, {} events kept as {} interactions of {} subjects on {} items",
        r.snapshot_at,
        wire_name(&r.policy),
        if r.research_data { ", RESEARCH DATA" } else { "" },
        r.rows_in,
        r.events_kept,
        r.interactions,
        r.subjects,
        r.items
    );
    out!("dropped rows by reason:");
    for (reason, count) in &r.dropped_events {
        if *count > 0 {
            out!("  {:<26} {count:>10}", reason.name());
        }
    }
    let subjects: Vec<String> = r.dropped_subjects.iter().map(|(reason, n)| format!("{} {n}", reason.name())).collect();
    out!("subjects left out: {}", subjects.join(", "));
    for e in &r.malformed_examples {
        out!("  malformed: {e}");
    }
    Ok(())
}

fn keys(g: &Global, command: &KeysCommand) -> Result<()> {
    let mut ledger = open_ledger(g)?;
    match command {
        KeysCommand::Create(args) => {
            let (key, record) = hush_consent::keys::create(&mut ledger, &args.name, &args.scopes, Timestamp::now())?;
            if g.json {
                return print_json(&serde_json::json!({ "key": key, "record": record }));
            }
            out!("{key}");
            eprintln!(
                "key {} for {} with scopes {}: store it now, it is not shown again",
                record.key_id,
                record.name,
                record.scopes.join(",")
            );
        }
        KeysCommand::List => {
            let keys = ledger.api_keys()?;
            if g.json {
                return print_json(&keys);
            }
            for k in keys {
                let state = k.revoked_at.map(|t| format!("revoked {t}")).unwrap_or_else(|| "active".into());
                out!("{}  {:<20} {:<32} created {}  {state}", k.key_id, k.name, k.scopes.join(","), k.created_at);
            }
        }
        KeysCommand::Revoke(args) => {
            if !ledger.revoke_api_key(&args.key_id, Timestamp::now())? {
                bail!("no active key with id `{}` (see hush keys list)", args.key_id);
            }
            out!("revoked {}; requests with it are refused from now on", args.key_id);
        }
    }
    Ok(())
}

/// The `[serve]` table of a config file.
#[derive(Debug, Default, Deserialize)]
struct ServeConfigFile {
    #[serde(default)]
    serve: hush_serve::ServeConfig,
}

fn serve(g: &Global, args: &ServeArgs) -> Result<()> {
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            toml::from_str::<ServeConfigFile>(&text)
                .map_err(|e| {
                    let line = e.span().map(|s| text[..s.start].matches('\n').count() + 1).unwrap_or(0);
                    anyhow::anyhow!("config {}:{line}: {}", path.display(), e.message())
                })?
                .serve
        }
        None => hush_serve::ServeConfig::default(),
    };
    if let Some(size) = args.store_pool_size {
        config.store_pool_size = size;
    }
    if let Some(n) = args.store_reader_connections {
        config.store_reader_connections = n;
    }
    let model = args
        .model
        .clone()
        .or_else(|| config.model.clone())
        .context("give the model file with --model, HUSH_MODEL or `model` in the [serve] config")?;
    let bind = args.bind.clone().or_else(|| config.bind.clone()).unwrap_or_else(|| "127.0.0.1:8080".into());
    serve_model(g, &model, &bind, None, None, config)
}

/// Serves `model` until Ctrl-C; SIGHUP reloads the model file (a bad file is refused).
/// Resolves on Ctrl-C (SIGINT) or SIGTERM, what service managers send to stop a process.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The server's async worker threads: `TOKIO_WORKER_THREADS` if set, else
/// twice the cores.
///
/// Why more workers than cores: a request is scored on the worker that
/// handles it (about 0.1 ms), and a worker scoring the requests in its queue
/// one after another leaves the socket reads and writes of other requests,
/// and the replies of the PostgreSQL reader, waiting behind them. With twice
/// as many workers the kernel shares the cores among them instead.
/// `benches/store_load.sh`'s PostgreSQL recommendations on two cores, three
/// alternating runs each: p99 37.7 / 45.3 / 41.2 ms with two workers, 18.3 /
/// 30.4 / 30.0 ms with four; SQLite-backed serving is unchanged (p99 12.1
/// against 12.6 ms).
fn serving_workers() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    std::env::var("TOKIO_WORKER_THREADS").ok().and_then(|v| v.parse().ok()).filter(|&n| n > 0).unwrap_or(2 * cores)
}

fn serve_model(
    g: &Global,
    model_path: &Path,
    bind: &str,
    example_key: Option<&str>,
    example_subject: Option<&str>,
    config: hush_serve::ServeConfig,
) -> Result<()> {
    let model = hush_mf::Model::load(model_path)?;
    let state = std::sync::Arc::new(
        hush_serve::AppState::new(model, open_ledger(g)?, load_key(g)?, config)?
            .with_model_path(model_path.to_path_buf()),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(serving_workers()).enable_all().build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(bind)
            .await
            .with_context(|| format!("binding {bind} (is another server running there?)"))?;
        let address = listener.local_addr()?;
        #[cfg(unix)]
        {
            let reloader = state.clone();
            let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
            tokio::spawn(async move {
                while hangups.recv().await.is_some() {
                    let state = reloader.clone();
                    match tokio::task::spawn_blocking(move || state.reload_model()).await {
                        Ok(Ok(id)) => eprintln!("SIGHUP: now serving model {id}"),
                        Ok(Err(e)) => eprintln!("SIGHUP: model refused, the previous one keeps serving: {e}"),
                        Err(e) => eprintln!("SIGHUP: reload failed: {e}"),
                    }
                }
            });
        }
        // A key we know is printed as it is; otherwise the shell variable,
        // in double quotes so that the shell expands it.
        let auth = match example_key {
            Some(key) => format!("-H 'Authorization: Bearer {key}'"),
            None => "-H \"Authorization: Bearer $HUSH_API_KEY\"".to_string(),
        };
        let subject = example_subject.unwrap_or("cust-0000002");
        if g.json {
            // One JSON object on stdout: logs stay on stderr, so stdout stays parseable.
            let key = example_key.unwrap_or("$HUSH_API_KEY");
            let base = format!("http://{address}");
            print_json(&serde_json::json!({
                "serving": model_path.display().to_string(),
                "model_id": state.model().model.meta.model_id,
                "address": address.to_string(),
                "base_url": base,
                "store": hush_consent::ledger::redact(&g.db),
                "api_key": example_key,
                "examples": [
                    { "method": "GET", "url": format!("{base}/v1/model"), "authorization": format!("Bearer {key}") },
                    { "method": "GET", "url": format!("{base}/v1/recommendations/popular?k=5"), "authorization": format!("Bearer {key}") },
                    { "method": "GET", "url": format!("{base}/v1/subjects/{subject}/recommendations?k=5"), "authorization": format!("Bearer {key}") },
                    { "method": "GET", "url": format!("{base}/v1/subjects/{subject}/export"), "authorization": format!("Bearer {key}") },
                    { "method": "PUT", "url": format!("{base}/v1/subjects/{subject}/consent"), "authorization": format!("Bearer {key}"),
                      "body": { "purpose": "personalization", "granted": false } },
                    { "method": "DELETE", "url": format!("{base}/v1/subjects/{subject}"), "authorization": format!("Bearer {key}") },
                ],
            }))?;
            hush_serve::serve(listener, state, shutdown_signal()).await?;
            eprintln!("stopped: the requests in flight were answered");
            return Ok(());
        }
        out!("serving {} on http://{address} (store {})", model_path.display(), hush_consent::ledger::redact(&g.db));
        out!("Ctrl-C or SIGTERM stops after the requests in flight; SIGHUP reloads the model file. Try:");
        out!("  curl {auth} http://{address}/v1/model");
        out!("  curl {auth} 'http://{address}/v1/recommendations/popular?k=5'");
        out!("  curl {auth} 'http://{address}/v1/subjects/{subject}/recommendations?k=5'");
        out!("  curl {auth} http://{address}/v1/subjects/{subject}/export");
        out!("  curl -X PUT {auth} -H 'content-type: application/json' \\");
        out!("       -d '{{\"purpose\":\"personalization\",\"granted\":false}}' \\");
        out!("       http://{address}/v1/subjects/{subject}/consent     # then recommendations answer 403");
        out!("  curl -X DELETE {auth} http://{address}/v1/subjects/{subject}");
        hush_serve::serve(listener, state, shutdown_signal()).await?;
        eprintln!("stopped: the requests in flight were answered");
        Ok(())
    })
}

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

fn quickstart(g: &Global, args: &QuickstartArgs) -> Result<()> {
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
    let (_, extraction) = extract(g, &extract_args)?;

    out!(
        "== 5/6 evaluation on the train split (private report, evaluation budget): DP model (epsilon 4, delta \
         1e-6) and its non-private twin"
    );
    let config = read_config(&args.config)?;
    let train_set = FeatureSet::load(&args.dir.join("features.train.hfs"))?;
    let test_set = FeatureSet::load(&args.dir.join("features.test.hfs"))?;
    let dp_eval = args.dir.join("eval-dp.hmdl");
    let (_, dp_metrics) = crate::learn::train_and_report(g, &train_set, &test_set, &config, Some(4.0), &dp_eval)?;
    let twin_eval = args.dir.join("eval-nonprivate.hmdl");
    let (_, twin_metrics) = crate::learn::train_and_report(g, &train_set, &test_set, &config, None, &twin_eval)?;
    out!("== 6/6 the release: DP model (epsilon 4, delta 1e-6) on the whole feature set, release budget");
    let dp = crate::learn::train_for_release(
        g,
        &FeatureSet::load(&args.dir.join("features.hfs"))?,
        &config,
        hush_privacy::Budget::new(4.0, 1e-6)?,
        &args.dir.join("model.hmdl"),
    )?;
    out!("{}", crate::budget::release_line(g)?);
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
