//! `hush consent`: grants, withdrawals and imports of consent records, and a subject's status.

use crate::out;

use anyhow::{Context, Result};
use hush_consent::import::{self};
use hush_consent::{ConsentChange, ConsentSource, Ledger, PseudonymKey, Purpose, Timestamp};
use hush_formats::ConsentFormat;

use super::{load_key, open_ledger, options, parse_time, print_import, print_json, wire_name};
use crate::cli::*;
use crate::progress;

pub fn run(g: &Global, command: &ConsentCommand) -> Result<()> {
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
