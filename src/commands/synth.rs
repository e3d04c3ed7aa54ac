//! `hush synth`: writes a synthetic storefront.

use crate::out;

use anyhow::Result;

use super::print_json;
use crate::cli::*;
use crate::progress;

pub fn run(g: &Global, args: &SynthArgs) -> Result<()> {
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
