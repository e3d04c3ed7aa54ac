//! The privacy budget ledger from the command line: `hush budget`, and the
//! claim every DP training run makes on it before any noise is drawn.

use crate::out;
use anyhow::{bail, Context, Result};
use hush_consent::{BudgetCap, BudgetPurpose, BudgetSpend, Timestamp};
use hush_mf::Model;
use serde::Serialize;

use super::{open_ledger, print_json};
use crate::cli::{BudgetCommand, BudgetPurposeArg, Global, SetCapArgs};

pub use hush_pipeline::budget::{cap_rho, epsilon_of, new_run_key, RunSpec};
pub use hush_pipeline::config::BudgetConfig;

/// The budget's name for this store: `store-` and the first 16 hex digits of
/// its model-signing public key. Derived from the store's key, not chosen.
pub fn store_dataset(g: &Global) -> Result<String> {
    Ok(super::store(g)?.dataset())
}

pub fn purpose_of(arg: BudgetPurposeArg) -> BudgetPurpose {
    match arg {
        BudgetPurposeArg::Release => BudgetPurpose::Release,
        BudgetPurposeArg::Evaluation => BudgetPurpose::Evaluation,
    }
}

/// The budget a training run spends (see [`hush_pipeline::budget::purpose_for`]).
pub fn purpose_for(
    asked: Option<BudgetPurposeArg>,
    budget: Option<hush_privacy::Budget>,
    seeded_noise: bool,
    data: &hush_features::FeatureMeta,
) -> Result<BudgetPurpose> {
    Ok(hush_pipeline::budget::purpose_for(asked.map(purpose_of), budget, seeded_noise, data)?)
}

/// Trains under a budget claim (see [`hush_pipeline::budget::train_claimed`]):
/// the store is reached only when there is a budget to claim.
pub fn train_claimed(
    g: &Global,
    config: Option<&BudgetConfig>,
    run: RunSpec<'_>,
    train: impl FnOnce() -> Result<Model>,
) -> Result<Model> {
    let store = config.map(|_| super::store(g)).transpose()?;
    hush_pipeline::budget::train_claimed(store.as_ref(), config, run, train)
}

pub fn run(g: &Global, command: &BudgetCommand) -> Result<()> {
    match command {
        BudgetCommand::Show => show(g),
        BudgetCommand::SetCap(args) => set_cap(g, args),
        BudgetCommand::Runs(args) => {
            let runs = open_ledger(g)?.budget_runs(args.dataset.as_deref())?;
            if g.json {
                return print_json(&runs);
            }
            for r in runs {
                let guarantee = match r.guarantee {
                    Some(x) => format!("epsilon {:.4} delta {:e} rho {:.6}", x.epsilon, x.delta, x.rho),
                    None => "NON-PRIVATE (never releasable)".into(),
                };
                out!(
                    "{} {} {:<10} {} {} model {} snapshot {} ({})",
                    r.created_at,
                    r.dataset,
                    r.purpose.as_str(),
                    super::wire_name(&r.state),
                    guarantee,
                    r.model_id.as_deref().unwrap_or("-"),
                    r.snapshot_at,
                    r.run_key
                );
            }
            Ok(())
        }
    }
}

fn set_cap(g: &Global, args: &SetCapArgs) -> Result<()> {
    let dataset = store_dataset(g)?;
    let mut ledger = open_ledger(g)?;
    let purpose = purpose_of(args.purpose);
    let cap = BudgetCap {
        dataset: dataset.clone(),
        purpose,
        epsilon: args.epsilon,
        delta: args.delta,
        rho: cap_rho(args.epsilon, args.delta).context("the cap")?,
        set_at: Timestamp::now(),
    };
    let spent = ledger
        .budget_spending()?
        .into_iter()
        .find(|s| s.dataset == dataset && s.purpose == purpose)
        .map_or(0.0, |s| s.spent_rho);
    let current = ledger.budget_cap(&dataset, purpose)?;
    if let Some(current) = current.as_ref().filter(|c| cap.rho > c.rho || cap.delta > c.delta) {
        if !args.force {
            bail!(
                "raising the {purpose} cap of `{dataset}` from epsilon {} (delta {:e}) to {} (delta {:e}) lets every \
                 model on this store reveal more; pass --force to do it",
                current.epsilon,
                current.delta,
                cap.epsilon,
                cap.delta
            );
        }
    }
    if spent > cap.rho && !args.force {
        bail!(
            "`{dataset}` has already spent rho {spent:.6} of its {purpose} budget, more than the new cap's rho {:.6}; \
             pass --force to set it anyway (no further run will fit)",
            cap.rho
        );
    }
    ledger.set_budget_cap(&cap)?;
    if g.json {
        return print_json(&cap);
    }
    out!(
        "lifetime {purpose} cap of `{}`: epsilon {} at delta {:e} (rho {:.6})",
        cap.dataset,
        cap.epsilon,
        cap.delta,
        cap.rho
    );
    Ok(())
}

/// One row of `hush budget`: what a dataset and purpose spent, in ρ and in ε.
#[derive(Serialize)]
struct SpendSummary<'a> {
    #[serde(flatten)]
    spend: &'a BudgetSpend,
    /// ε at `at_delta` of everything spent.
    spent_epsilon: f64,
    /// δ of the cap, or 1e-6 without one.
    at_delta: f64,
    remaining_rho: Option<f64>,
    /// ρ composes by addition, ε does not: what is left is stated as the ε
    /// of one run that would spend all the remaining ρ.
    remaining_epsilon_for_one_run: Option<f64>,
}

fn summary(s: &BudgetSpend) -> Result<SpendSummary<'_>> {
    let delta = s.cap.as_ref().map_or(1e-6, |c| c.delta);
    Ok(SpendSummary {
        spend: s,
        spent_epsilon: epsilon_of(s.spent_rho, delta)?,
        at_delta: delta,
        remaining_rho: s.remaining_rho(),
        remaining_epsilon_for_one_run: s.remaining_rho().map(|rho| epsilon_of(rho, delta)).transpose()?,
    })
}

/// One line on what this store's lifetime budget has spent (releases and
/// evaluations together) and has left.
pub fn release_line(g: &Global) -> Result<String> {
    let dataset = store_dataset(g)?;
    let ledger = open_ledger(g)?;
    let spent: f64 = ledger.budget_spending()?.iter().filter(|s| s.dataset == dataset).map(|s| s.spent_rho).sum();
    Ok(match ledger.budget_cap(&dataset, BudgetPurpose::Release)? {
        Some(cap) => format!(
            "privacy budget of this store ({dataset}): epsilon {:.3} of a lifetime {} spent by releases and \
             evaluations together (delta {:e}); one more run of up to epsilon {:.3} fits (`hush budget show`)",
            epsilon_of(spent, cap.delta)?,
            cap.epsilon,
            cap.delta,
            epsilon_of((cap.rho - spent).max(0.0), cap.delta)?
        ),
        None => format!("privacy budget of this store ({dataset}): nothing spent, no lifetime cap set yet"),
    })
}

fn show(g: &Global) -> Result<()> {
    let spending = open_ledger(g)?.budget_spending()?;
    let rows = spending.iter().map(summary).collect::<Result<Vec<_>>>()?;
    if g.json {
        return print_json(&rows);
    }
    if rows.is_empty() {
        out!("no training runs and no caps recorded; set one with `hush budget set-cap --epsilon E`");
    }
    for row in &rows {
        let s = row.spend;
        let spent =
            format!("spent rho {:.6} (epsilon {:.3} at delta {:e})", s.spent_rho, row.spent_epsilon, row.at_delta);
        let cap = match &s.cap {
            Some(c) => format!(
                "of cap epsilon {} (rho {:.6}); remaining rho {:.6}, enough for one run of epsilon {:.3}",
                c.epsilon,
                c.rho,
                row.remaining_rho.unwrap_or(0.0),
                row.remaining_epsilon_for_one_run.unwrap_or(0.0)
            ),
            None => "no cap set".into(),
        };
        let label = match s.purpose {
            BudgetPurpose::Release => "release",
            BudgetPurpose::Evaluation => "evaluation (not for release)",
        };
        out!(
            "{} / {label}: {spent} {cap}; {} private runs, {} non-private runs",
            s.dataset,
            s.private_runs,
            s.non_private_runs
        );
    }
    Ok(())
}
