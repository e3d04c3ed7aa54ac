//! `hush extract`: the consent-filtered, pseudonymized training set and its report.

use crate::out;
use std::path::PathBuf;

use anyhow::{Context, Result};
use hush_consent::Timestamp;
use hush_features::{ConsentPolicy, ExtractParams, ExtractionReport, FeatureSet, Feedback};

use super::{event_format, print_json, read_config, store, wire_name};
use crate::cli::*;
use crate::progress;

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

pub fn run(g: &Global, args: &ExtractArgs) -> Result<(FeatureSet, ExtractionReport)> {
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
