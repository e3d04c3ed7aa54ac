//! `hush model inspect|card|dump`: what a model file holds.

use crate::{out, out_partial};
use std::path::Path;

use anyhow::{Context, Result};
use hush_consent::Timestamp;
use hush_mf::Model;

use super::print_json;
use crate::cli::*;
use hush_pipeline::learn::guarantee_line;

pub fn card(g: &Global, args: &CardArgs) -> Result<()> {
    let model = Model::load(&args.model).with_context(|| format!("loading {}", args.model.display()))?;
    if g.json {
        return print_json(&hush_report::card::json(&model));
    }
    let text = if args.html { hush_report::card::html(&model) } else { hush_report::card::markdown(&model) };
    out_partial!("{text}");
    Ok(())
}

/// `hush model dump`: the released arrays exactly as stored. The factors
/// are written row by row from the model's items × rank matrix; every value
/// is the stored `f32`, printed in its shortest round-tripping form.
pub fn dump(args: &DumpArgs) -> Result<()> {
    let model = Model::load(&args.model).with_context(|| format!("loading {}", args.model.display()))?;
    print_json(&hush_pipeline::learn::dump_json(&model))
}

pub fn inspect(g: &Global, args: &InspectArgs) -> Result<()> {
    let model = Model::load(&args.model).with_context(|| format!("loading {}", args.model.display()))?;
    if g.json {
        return print_json(&hush_pipeline::learn::inspect_json(&model));
    }
    print_card(&model, &args.model)?;
    Ok(())
}

fn print_card(model: &Model, path: &Path) -> Result<()> {
    let m = &model.meta;
    out!("{}: hush model {} (hush {})", path.display(), m.model_id, m.hush_version);
    out!("  privacy: {}", guarantee_line(model));
    out!(
        "  data: {} items ({}), consent snapshot {}",
        model.n_items(),
        m.data.catalogue.as_deref().unwrap_or("seen in private rows"),
        Timestamp::from_unix_millis(m.data.snapshot_at_ms),
    );
    out!(
        "  training: {} feedback, rank {}, {} iterations, lambda {}, purpose {}",
        super::wire_name(&m.feedback),
        model.rank,
        m.params.iterations,
        m.params.lambda,
        super::wire_name(&m.purpose)
    );
    let blockers = model.not_releasable_because();
    if blockers.is_empty() {
        out!("  release: may be served (with the store's release entry)");
    } else {
        out!("  release: NOT servable: {}", blockers.join("; "));
    }
    Ok(())
}
