//! `hush audit`: an empirical lower bound on the ε of one DP training run,
//! from canaries (Steinke, Nasr & Jagielski 2023; statistics in `hush_audit`).
//!
//! The run trains on real data (plus the canaries), so it spends privacy:
//! on store data it is recorded on the evaluation budget, as `hush train
//! --purpose evaluation` is. The canaries are synthetic and are not subjects
//! of the store. The model is never written: only the audit's figures leave.

use crate::out;
use anyhow::{bail, Context, Result};
use hush_audit::{epsilon_lower_bound, guess_by_rank, insert_canaries, tally, CanaryPlan};
use hush_consent::BudgetPurpose;
use hush_features::Feedback;
use hush_mf::{ModelPurpose, PrivacyGuarantee};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

use super::budget::{new_run_key, train_claimed, RunSpec};
use super::learn::{budget_of, config_of, load_data_with_report, noise_of, privacy_with, train_model};
use super::print_json;
use crate::cli::{AuditArgs, Global};

/// Items per canary when not given: the contribution bound (so no canary
/// item is subsampled away), at most 20 to keep the added catalogue small.
const DEFAULT_MAX_CANARY_ITEMS: usize = 20;

pub fn run(g: &Global, args: &AuditArgs) -> Result<()> {
    if !(args.confidence > 0.0 && args.confidence < 1.0) {
        bail!("--confidence {}: must be within (0, 1), e.g. 0.95", args.confidence);
    }
    let beta = 1.0 - args.confidence;
    let guesses = args.guesses.unwrap_or(args.canaries / 2 / 2 * 2);
    if !guesses.is_multiple_of(2) || guesses > args.canaries {
        bail!("--guesses {guesses}: must be even (half in, half out) and at most --canaries {}", args.canaries);
    }
    let config = config_of(&args.data)?;
    let budget = budget_of(&args.privacy)?;
    let params = config.train_params(budget.is_some())?;
    let items_per_canary = args.canary_items.unwrap_or(params.max_items_per_subject.min(DEFAULT_MAX_CANARY_ITEMS));
    if items_per_canary > params.max_items_per_subject {
        bail!(
            "--canary-items {items_per_canary}: at most the trainer's max_items_per_subject ({}), or the \
             contribution bound would subsample the canaries' items",
            params.max_items_per_subject
        );
    }
    let (set, _) = load_data_with_report(g, &args.data, &config, None)?;
    let value = match set.meta.feedback {
        Feedback::Explicit => params.rating_max,
        Feedback::Implicit => params.max_value,
    } as f32;
    let plan = CanaryPlan { canaries: args.canaries, items_per_canary, value };
    let mut rng = match args.seed {
        Some(seed) => ChaCha8Rng::seed_from_u64(seed),
        None => ChaCha8Rng::from_os_rng(),
    };
    let (audited, canaries) = insert_canaries(&set, &plan, &mut rng)?;
    drop(set);

    let run = RunSpec {
        purpose: BudgetPurpose::Evaluation,
        budget,
        set: &audited,
        params: &params,
        run_key: new_run_key("audit"),
    };
    // Research data has no storefront budget to spend from.
    let budget_config = (!audited.meta.research_only).then_some(&config.budget);
    let privacy = privacy_with(budget, noise_of(&args.privacy), &config.dp_rules());
    let model = train_claimed(g, budget_config, run, || {
        let mut model = train_model(g, &audited, &params, privacy)?;
        model.set_purpose(ModelPurpose::Evaluation);
        Ok(model)
    })?;
    if model.items != audited.items {
        bail!("the model's item list is not the audited feature set's: cannot find the canaries' items");
    }

    // From here on only the released model and the public canary design
    // are looked at, until the guesses are scored against the truth.
    let scores = canaries.scores(&model.popularity)?;
    let guessed = guess_by_rank(&scores, guesses / 2)?;
    let counted = tally(&guessed, &canaries.included)?;
    let (claimed, delta) = match &model.meta.privacy {
        PrivacyGuarantee::Dp { epsilon, delta, .. } => (Some(*epsilon), *delta),
        PrivacyGuarantee::NonPrivate => (None, args.privacy.delta),
    };
    let bound = epsilon_lower_bound(args.canaries, counted.guesses, counted.correct, delta, beta)?;
    let result = json!({
        "claimed_epsilon": claimed,
        "delta": delta,
        "empirical_epsilon_lower_bound": bound,
        "confidence": args.confidence,
        "canaries": args.canaries,
        "canaries_included": canaries.included.iter().filter(|&&x| x).count(),
        "canary_items": items_per_canary,
        "guesses": counted.guesses,
        "correct": counted.correct,
        "score": "sum of the released noisy item counts over each canary's own items",
        "feedback": model.meta.feedback,
        "rank": model.rank,
        "iterations": model.meta.params.iterations,
        "inclusion_seeded": args.seed.is_some(),
        "noise_seeded": args.privacy.noise_seed.is_some(),
        "research_only": model.meta.data.research_only,
    });
    if let Some(path) = &args.out {
        let text = serde_json::to_string_pretty(&result).context("encoding the audit result")?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    if g.json {
        print_json(&result)?;
    } else {
        print_result(&result)?;
    }
    if let Some(epsilon) = claimed.filter(|&e| bound > e) {
        bail!(
            "the empirical lower bound {bound:.4} exceeds the claimed epsilon {epsilon:.4}: the model's DP \
             guarantee does not hold (or this audit was unlucky, which has probability at most {beta})"
        );
    }
    Ok(())
}

fn print_result(r: &Value) -> Result<()> {
    let claimed = match r["claimed_epsilon"].as_f64() {
        Some(e) => format!("DP, claimed epsilon {e:.4} at delta {}", r["delta"]),
        None => format!("NON-PRIVATE twin; bound at delta {}", r["delta"]),
    };
    out!("privacy audit of one training run ({claimed})");
    out!(
        "  canaries: {} ({} included at random), {} items each; score: {}",
        r["canaries"],
        r["canaries_included"],
        r["canary_items"],
        r["score"].as_str().unwrap_or("?")
    );
    out!("  guesses: {} made, {} correct", r["guesses"], r["correct"]);
    out!(
        "  empirical epsilon lower bound: {:.4} at {:.0}% confidence",
        r["empirical_epsilon_lower_bound"].as_f64().unwrap_or(f64::NAN),
        r["confidence"].as_f64().unwrap_or(f64::NAN) * 100.0
    );
    Ok(())
}
