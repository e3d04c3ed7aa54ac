//! `hush evaluate`: trains on a split and evaluates against the baselines.

use anyhow::Result;
use hush_features::SplitSpec;

use super::print_json;
use crate::cli::*;

use super::learn::{budget_of, config_of, load_data, print_metrics, train_model};

pub fn run(g: &Global, args: &EvaluateArgs) -> Result<()> {
    let config = config_of(&args.data)?;
    let set = load_data(g, &args.data, &config)?;
    // A given model is evaluated as it is: no budget flag is needed for it.
    let budget = if args.model.is_some() { None } else { budget_of(&args.privacy)? };
    let store = if set.meta.research_only { None } else { Some(super::store(g)?) };
    let evaluated = hush_pipeline::learn::evaluate(
        store.as_ref(),
        hush_pipeline::learn::EvaluateRun {
            set: &set,
            split: args.split.parse::<SplitSpec>()?,
            validation: args.validation.as_deref().map(str::parse::<SplitSpec>).transpose()?,
            model: args.model.as_deref(),
            config: &config,
            budget,
            noise_seed: args.privacy.noise_seed,
            k: args.k,
            write_split: args.write_split.as_deref().map(|dir| (dir, args.split_format)),
        },
        |set, params, privacy| train_model(g, set, params, privacy),
    )?;
    let metrics = evaluated.metrics;
    if g.json {
        return print_json(&metrics);
    }
    print_metrics(&metrics)?;
    Ok(())
}
