//! `hush sweep`: every epsilon and seed, the non-private twin and the
//! baselines on one split, in parallel, resumable, ending in a report.

use crate::out;

use anyhow::Result;
use hush_pipeline::sweep::{SweepProgress, SweepRequest};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use super::learn::{config_of, load_data_with_report};
use super::print_json;
use crate::cli::{Global, SweepArgs};

pub fn run(g: &Global, args: &SweepArgs) -> Result<()> {
    let request = SweepRequest {
        name: hush_pipeline::sweep::sweep_name(args.data.config.as_deref()),
        epsilons: args.epsilons.clone(),
        seeds: args.seeds,
        delta: args.delta,
        split: args.split.clone(),
        k: args.k,
        tolerance: args.tolerance,
        out: args.out.clone(),
        fresh: args.fresh,
    };
    hush_pipeline::sweep::check_request(&request)?;
    let config = config_of(&args.data)?;
    config.train_params(false)?;
    config.train_params(true)?;
    let (set, extraction) = load_data_with_report(g, &args.data, &config, args.extraction_report.as_deref())?;
    let store = if set.meta.research_only { None } else { Some(super::store(g)?) };
    let bar = if g.quiet { ProgressBar::hidden() } else { ProgressBar::new(0) };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} sweep {bar:30} {pos}/{len} cells, last {msg} [{elapsed_precise}, eta {eta}]",
        )
        .expect("a valid progress template"),
    );
    let outcome =
        hush_pipeline::sweep::sweep(store.as_ref(), &config, &set, extraction, &request, &|event| match event {
            SweepProgress::Planned { to_compute } => bar.set_length(to_compute as u64),
            SweepProgress::CellDone { cell } => {
                bar.inc(1);
                bar.set_message(cell);
            }
        })?;
    bar.finish_and_clear();
    let (results, computed_count, reused, written) = (outcome.results, outcome.computed, outcome.reused, outcome.files);
    if g.json {
        return print_json(&json!({
            "computed": computed_count,
            "reused": reused,
            "wall_seconds": results.wall_seconds,
            "recommendation": results.recommendation,
            "files": written,
        }));
    }
    out!(
        "sweep of {} cells: {computed_count} computed, {reused} resumed from {} in {:.1} s",
        computed_count + reused,
        args.out.join("cells").display(),
        results.wall_seconds
    );
    out!("{}", results.recommendation.sentence);
    out!("wrote {}", written.join(", "));
    Ok(())
}
