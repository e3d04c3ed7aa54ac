//! `hush recommend --all`: batch recommendations for the consenting
//! subjects of a snapshot (email and push campaigns).
//!
//! Each subject's personalization consent is checked at run time by the
//! same read the server makes for `GET /v1/subjects/{id}/recommendations`
//! ([`hush_consent::Ledger::gated_read`]): a subject without it is counted
//! by reason and never scored. Those with it are scored by the server's own
//! code ([`hush_serve::score::recommend`]), so a campaign sends what the API
//! would have answered. Subjects are named by their pseudonym (the store
//! holds no raw identifier), the one id the store, exports and the
//! storefront's own HMAC agree on.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{bail, Context, Result};
use hush_consent::{ConsentState, Event, GatedRead, Ledger, Pseudonym, Purpose, Timestamp};
use serde::Serialize;

use super::{load_key, open_ledger, print_json};
use crate::cli::{BatchFormat, Global, RecommendArgs};
use crate::{out, progress};

/// One row of the output: one recommended item of one subject.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BatchRow {
    /// The subject's pseudonym (64 hex characters).
    pub subject_pseudonym: String,
    /// 1 for the best item.
    pub rank: u32,
    /// The item id.
    pub item: String,
    /// Its title in the store's catalogue (empty if none).
    pub title: Option<String>,
    /// Its category in the store's catalogue (empty if none).
    pub category: Option<String>,
    /// The model's score.
    pub score: f64,
    /// Whether the subject's own events shaped the list (else the popular list).
    pub personalized: bool,
}

/// What a batch run did.
#[derive(Debug, Serialize)]
pub struct BatchReport {
    /// Subjects looked at: those with events at or before the snapshot, or a personalization decision.
    pub subjects: u64,
    /// Subjects scored (personalization granted at run time).
    pub scored: u64,
    /// Subjects refused, by the reason the consent rule gives.
    pub refused: BTreeMap<&'static str, u64>,
    /// Rows written.
    pub rows: u64,
    /// The consent check's time (run time).
    pub checked_at: Timestamp,
    /// The snapshot: only events at or before it are folded in.
    pub as_of: Timestamp,
    /// The output file.
    pub out: String,
    /// The output format.
    pub format: &'static str,
}

/// The output format: `--format`, else the extension of `--out`.
fn format_of(args: &RecommendArgs, out: &Path) -> Result<BatchFormat> {
    if let Some(format) = args.format {
        return Ok(format);
    }
    match out.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
        Some("csv") => Ok(BatchFormat::Csv),
        Some("parquet") => Ok(BatchFormat::Parquet),
        _ => bail!("--out {}: say the format with --format csv|parquet or a .csv/.parquet extension", out.display()),
    }
}

/// Every subject the snapshot knows: events at or before `as_of`, or a
/// personalization decision. Sorted, so runs are reproducible.
fn candidates(ledger: &Ledger, as_of: Timestamp) -> Result<BTreeSet<Pseudonym>> {
    let mut subjects = BTreeSet::new();
    ledger.for_each_event(|e| -> Result<()> {
        if e.event.at <= as_of {
            subjects.insert(e.subject);
        }
        Ok(())
    })?;
    ledger.for_each_consent_decision(Purpose::Personalization, |subject, _| -> Result<()> {
        subjects.insert(subject);
        Ok(())
    })?;
    Ok(subjects)
}

/// What the consent rule says about one subject now: the events to fold in
/// (newest first, at or before `as_of`, at most `limit`), or why not.
fn gate(ledger: &Ledger, subject: &Pseudonym, now: Timestamp, as_of: Timestamp, limit: usize) -> Result<Gate> {
    match ledger.gated_read(None, subject, Purpose::Personalization, now, limit)? {
        GatedRead::KeyRefused(_) => bail!("no key was presented, yet the store refused one"),
        GatedRead::NotGranted(status) => Ok(Gate::Refused(match status.state {
            ConsentState::Withdrawn => "withdrawn",
            ConsentState::NoRecord if ledger.is_suppressed(subject)? => "erased",
            ConsentState::NoRecord => "no_record",
            ConsentState::Granted => "granted_but_refused",
        })),
        GatedRead::Granted { recent, .. } if recent.iter().all(|e| e.at <= as_of) => Ok(Gate::Granted(recent)),
        // Events after the snapshot are among the newest: read the history
        // up to the snapshot instead (consent is already established).
        GatedRead::Granted { .. } => {
            let mut events: Vec<Event> = ledger.events_of(subject)?.into_iter().filter(|e| e.at <= as_of).collect();
            events.reverse();
            events.truncate(limit);
            Ok(Gate::Granted(events))
        }
    }
}

enum Gate {
    Granted(Vec<Event>),
    Refused(&'static str),
}

/// Writes rows as CSV or Parquet.
enum Sink {
    Csv(Box<csv::Writer<std::fs::File>>),
    Parquet(Box<crate::parquet_io::BatchWriter>),
}

impl Sink {
    fn create(path: &Path, format: BatchFormat) -> Result<Self> {
        let file =
            hush_consent::files::create_owner_only(path).with_context(|| format!("creating {}", path.display()))?;
        match format {
            BatchFormat::Csv => Ok(Sink::Csv(Box::new(csv::Writer::from_writer(file)))),
            BatchFormat::Parquet => Ok(Sink::Parquet(Box::new(crate::parquet_io::BatchWriter::new(file)?))),
        }
    }

    fn write(&mut self, rows: &[BatchRow]) -> Result<()> {
        match self {
            Sink::Csv(w) => {
                for row in rows {
                    w.serialize(row)?;
                }
            }
            Sink::Parquet(w) => w.write(rows)?,
        }
        Ok(())
    }

    fn finish(self) -> Result<()> {
        match self {
            Sink::Csv(mut w) => w.flush()?,
            Sink::Parquet(w) => w.finish()?,
        }
        Ok(())
    }
}

pub fn run(g: &Global, args: &RecommendArgs) -> Result<()> {
    let out_path = args.out.as_deref().context("--all needs --out recs.csv or recs.parquet")?;
    if !args.items.is_empty() {
        bail!("--all scores every consenting subject from the store; it takes no --items");
    }
    let format = format_of(args, out_path)?;
    let ledger = open_ledger(g)?;
    let key = load_key(g)?;
    let served = hush_serve::admit(hush_mf::Model::load(&args.model)?, &key, &ledger)
        .with_context(|| format!("{}: only this store's releases score real subjects", args.model.display()))?;
    let config = hush_serve::ServeConfig::default();
    let filter =
        hush_serve::score::ItemFilter::parse(None, args.category.as_deref(), args.exclude_categories.as_deref())
            .map_err(|(field, message)| anyhow::anyhow!("--{}: {message}", field.replace('_', "-")))?;
    let k = args.k;
    if k == 0 || k > config.max_k {
        bail!("--k must be from 1 to {}, found {k}", config.max_k);
    }
    let now = Timestamp::now();
    let as_of = match &args.as_of {
        Some(t) => Timestamp::parse(t).context("--as-of")?,
        None => now,
    };
    let subjects = candidates(&ledger, as_of)?;
    let mut report = BatchReport {
        subjects: subjects.len() as u64,
        checked_at: now,
        as_of,
        out: out_path.display().to_string(),
        format: match format {
            BatchFormat::Csv => "csv",
            BatchFormat::Parquet => "parquet",
        },
        scored: 0,
        refused: BTreeMap::new(),
        rows: 0,
    };
    let span = tracing::info_span!("batch_recommendations", subjects = subjects.len(), k);
    let _entered = span.enter();
    let mut sink = Sink::create(out_path, format)?;
    let bar = progress::bar("subjects", subjects.len() as u64, g.quiet);
    for (n, subject) in subjects.iter().enumerate() {
        // Checked at the moment of scoring, not once at the start: a
        // withdrawal recorded during the run stops the subject's scoring.
        match gate(&ledger, subject, Timestamp::now().max(now), as_of, config.max_history)? {
            Gate::Refused(reason) => *report.refused.entry(reason).or_default() += 1,
            Gate::Granted(events) => {
                let scored =
                    hush_serve::score::recommend(&served, &config.kind_weights, &events, k, filter.mask(&served));
                let pseudonym = subject.to_hex();
                let rows: Vec<BatchRow> = scored
                    .items
                    .iter()
                    .enumerate()
                    .map(|(rank, r)| BatchRow {
                        subject_pseudonym: pseudonym.clone(),
                        rank: rank as u32 + 1,
                        item: r.item.to_string(),
                        title: r.title.map(str::to_string),
                        category: r.category.map(str::to_string),
                        score: r.score,
                        personalized: scored.personalized,
                    })
                    .collect();
                sink.write(&rows)?;
                report.scored += 1;
                report.rows += rows.len() as u64;
            }
        }
        bar.set_position(n as u64 + 1);
    }
    sink.finish()?;
    bar.finish_and_clear();
    tracing::info!(scored = report.scored, refused = report.subjects - report.scored, "batch recommendations written");
    if g.json {
        return print_json(&report);
    }
    let refused: Vec<String> = report.refused.iter().map(|(reason, n)| format!("{reason} {n}")).collect();
    out!(
        "{} subjects: {} scored ({} rows in {}), {} refused ({})",
        report.subjects,
        report.scored,
        report.rows,
        report.out,
        report.subjects - report.scored,
        if refused.is_empty() { "none".to_string() } else { refused.join(", ") }
    );
    Ok(())
}
