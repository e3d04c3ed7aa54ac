//! `hush train`: trains a model (DP unless told otherwise) under the store's budget.

use crate::out;

use anyhow::{bail, Result};
use hush_features::SplitSpec;
use serde_json::json;

use super::print_json;
use crate::cli::*;
use hush_pipeline::learn::{guarantee_line, save_with_card};

use super::learn::{budget_of, config_of, load_data, print_metrics, train_model};

pub fn run(g: &Global, args: &TrainArgs) -> Result<()> {
    // Checked before any budget is spent: a model file may be the one being served.
    if args.out.exists() && !args.force {
        bail!("{} exists (it may be the model being served): pass --force to replace it", args.out.display());
    }
    let config = config_of(&args.data)?;
    let set = load_data(g, &args.data, &config)?;
    let budget = budget_of(&args.privacy)?;
    let split = args.split.as_deref().map(str::parse::<SplitSpec>).transpose()?;
    // Research data has no consent ledger and its models are never served:
    // it spends no storefront budget, so no store is reached for it.
    let store = if set.meta.research_only { None } else { Some(super::store(g)?) };
    let trained = hush_pipeline::learn::train(
        store.as_ref(),
        hush_pipeline::learn::TrainRun {
            set,
            split,
            config: &config,
            budget,
            noise_seed: args.privacy.noise_seed,
            purpose: args.purpose.map(super::budget::purpose_of),
        },
        |set, params, privacy| train_model(g, set, params, privacy),
    )?;
    let (model, evaluated) = (trained.model, trained.evaluated);
    let cards = save_with_card(&model, &args.out, evaluated.as_ref().map(|(e, _)| e))?;
    let metrics = evaluated.map(|(_, m)| m);
    if g.json {
        return print_json(&json!({
            "model": args.out,
            "card": cards,
            "model_id": model.meta.model_id,
            "privacy": model.meta.privacy,
            "metrics": metrics,
        }));
    }
    out!("wrote {} and its card {} ({})", args.out.display(), cards.join(", "), guarantee_line(&model));
    if let Some(m) = &metrics {
        print_metrics(m)?;
    }
    Ok(())
}
