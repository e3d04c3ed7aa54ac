//! The model card: what a model is for, what it was trained on, what it
//! promises about privacy (in numbers and in words), how well it does, and
//! where it falls short. Written beside every model and served by
//! `GET /v1/model`.

use std::fmt::Write as _;

use hush_features::Feedback;
use hush_mf::eval::{Evaluation, GroupMetrics};
use hush_mf::{Model, PrivacyGuarantee};

use crate::html::{markdown_to_html, md_text, page};
use crate::words;

/// Unix milliseconds as an RFC 3339 UTC time.
pub(crate) fn utc(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map_or_else(|| format!("{ms} ms since 1970"), |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

/// The card as JSON: the model's provenance, guarantee and settings as
/// structured fields, with the Markdown card (`GET /v1/model`, `hush model card --json`).
pub fn json(model: &Model) -> serde_json::Value {
    let m = &model.meta;
    serde_json::json!({
        "model_id": m.model_id,
        "hush_version": m.hush_version,
        "created_at": utc(m.created_at_ms),
        "feedback": m.feedback,
        "privacy": m.privacy,
        "personalized_share": model.personalized_share(),
        "data": m.data,
        "snapshot_at": utc(m.data.snapshot_at_ms),
        "params": m.params,
        "purpose": m.purpose,
        "items": model.n_items(),
        "rank": model.rank,
        "card_markdown": markdown(model),
    })
}

/// The card as Markdown.
pub fn markdown(model: &Model) -> String {
    let mut md = String::new();
    for section in [intro, intended_use, data_section, guarantee_section, limitations] {
        section(&mut md, model);
    }
    md
}

/// The title and what kind of model it is.
fn intro(md: &mut String, model: &Model) {
    let m = &model.meta;
    let _ = writeln!(md, "# Model card: hush model `{}`\n", m.model_id);
    let kind = match m.feedback {
        Feedback::Explicit => "explicit ratings (predicts ratings and ranks by them)".to_string(),
        Feedback::Implicit => {
            let w = &m.data.weighting;
            let weights: Vec<String> = w.kind_weights.iter().map(|(kind, weight)| format!("{kind} {weight}")).collect();
            format!(
                "implicit signals weighed {} (a rating counts from {}; ranks items by predicted preference; \
                 serving weighs a customer's events the same way)",
                md_text(&weights.join(", ")),
                w.rating_positive_threshold
            )
        }
    };
    let _ = writeln!(
        md,
        "Matrix factorization (alternating least squares) on {kind}. Trained {} by hush {}.\n",
        utc(m.created_at_ms),
        md_text(&m.hush_version),
    );
}

/// Who may use the model for what, and why not when it may not be released.
fn intended_use(md: &mut String, model: &Model) {
    let m = &model.meta;
    md.push_str("## Intended use\n\n");
    let blockers = model.not_releasable_because();
    if !blockers.is_empty() {
        let _ = writeln!(md, "**Not for release**: {}. `hush serve` refuses it.\n", blockers.join("; "));
    }
    match (&m.privacy, m.data.research_only) {
        (_, true) => md.push_str(
            "**Research only.** Trained on research data without a consent ledger: hush refuses to serve it. Use it \
             to study quality and privacy trade-offs, not to recommend to anyone.\n\n",
        ),
        (PrivacyGuarantee::NonPrivate, false) => md.push_str(
            "**Evaluation only.** This is the non-private twin: trained without noise, so it carries no privacy \
             guarantee. It exists to measure what privacy costs; do not serve or share it.\n\n",
        ),
        (PrivacyGuarantee::Dp { noise_seeded: true, .. }, false) => md.push_str(
            "**Research only.** Its noise came from a fixed seed, so the guarantee below does not hold against \
             anyone who knows the seed. Do not release it.\n\n",
        ),
        (PrivacyGuarantee::Dp { .. }, false) => md.push_str(
            "Personalized recommendations in a storefront for customers who granted *personalization* consent, \
             served by `hush serve`, which checks that consent on every request and falls back to the model's \
             noisy popularity for everyone else. Each customer's vector is folded in at request time from their \
             own events; nothing about them is stored in the model.\n\n",
        ),
    }
}

/// The data behind the model, without any exact statistic of it.
fn data_section(md: &mut String, model: &Model) {
    let m = &model.meta;
    md.push_str("## Data\n\n| | |\n|---|---|\n");
    let _ = writeln!(md, "| Consent snapshot (training consent as of) | {} |", utc(m.data.snapshot_at_ms));
    let _ = writeln!(
        md,
        "| Consent filter | {} |",
        if m.data.research_only {
            "none: research data".to_string()
        } else {
            "only customers who granted *training* consent as of the snapshot and had not withdrawn it; erased \
             customers excluded"
                .to_string()
        }
    );
    let _ = writeln!(
        md,
        "| Items | {} ({}) |",
        model.n_items(),
        m.data.catalogue.as_deref().map_or("seen in the private rows: not a public catalogue".into(), |c| format!(
            "the public catalogue `{}`",
            md_text(c)
        ))
    );
    let _ = writeln!(md, "| Split | {} |", m.data.split.as_deref().map_or("whole feature set".into(), md_text));
    let _ = writeln!(md, "| Extraction report digest (HMAC under the store's key) | `{}` |\n", m.data.report_digest);
    md.push_str(
        "How many customers and interactions were used, and how well the model did on held-out data, are exact \
         statistics of private data: they are not in this card. Evaluation goes to a private report beside the \
         model file, which the server never serves.\n\n",
    );
}

/// The privacy guarantee, its releases and its assumptions, in numbers and in words.
fn guarantee_section(md: &mut String, model: &Model) {
    let m = &model.meta;
    md.push_str("## Privacy guarantee\n\n");
    match &m.privacy {
        PrivacyGuarantee::NonPrivate => {
            md.push_str("**None.** No clipping, no contribution bound, no noise.\n\n");
        }
        PrivacyGuarantee::Dp {
            target_epsilon,
            epsilon,
            epsilon_gdp,
            epsilon_zcdp,
            delta,
            rho,
            epsilon_simple_bound,
            releases,
            clip_norm,
            residual_bound,
            max_items_per_subject,
            iterations,
            noise_seeded,
        } => {
            md.push_str("| | |\n|---|---|\n");
            let _ = writeln!(md, "| Privacy unit | one customer (user-level) |");
            let _ = writeln!(md, "| ε (achieved; target {target_epsilon}) | {epsilon:.4} |");
            let _ = writeln!(md, "| δ | {delta:e} |");
            let _ = writeln!(md, "| ε by the exact Gaussian-DP curve | {epsilon_gdp:.4} |");
            let _ = writeln!(md, "| ε by OpenDP's zCDP conversion | {epsilon_zcdp:.4} |");
            let _ = writeln!(md, "| ρ (zero-concentrated DP) | {rho:.6} |");
            let _ = writeln!(md, "| ε by the simple bound ρ + 2√(ρ ln 1/δ) | {epsilon_simple_bound:.4} |");
            let _ = writeln!(md, "| Contribution bound | at most {max_items_per_subject} items per customer |");
            let _ = writeln!(md, "| Clip norm of customer vectors | {clip_norm} |");
            if m.feedback == Feedback::Explicit {
                let _ = writeln!(md, "| Residual clip bound | ±{residual_bound} |");
            }
            let _ = writeln!(md, "| Iterations (releases of the item statistics) | {iterations} |");
            let share = model.personalized_share();
            let _ = writeln!(md, "| Interactions on items with personalized factors | {:.0}% |", share * 100.0);
            let _ =
                writeln!(md, "| Noise | {} |\n", if *noise_seeded { "SEEDED: research only" } else { "OS entropy" });
            md.push_str("| Release | noise | L2 sensitivity | times | noise σ |\n|---|---|---:|---:|---:|\n");
            for r in releases {
                let _ = writeln!(
                    md,
                    "| {} | {} | {:.4} | {} | {:.4} |",
                    md_text(&r.name),
                    match r.noise {
                        hush_privacy::NoiseKind::Gaussian => "Gaussian",
                        hush_privacy::NoiseKind::DiscreteGaussian => "exact discrete Gaussian",
                    },
                    r.l2_sensitivity,
                    r.count,
                    r.noise_std
                );
            }
            let _ = writeln!(md, "\n**In plain words.** {}\n", words::epsilon_in_words(*epsilon, *delta));
            if *iterations == 0 {
                let _ = writeln!(
                    md,
                    "**Popularity only.** At this ε the noisy item counts showed that personalized factors would be \
                     mostly noise, so this model spent its whole budget on item counts: it recommends the most \
                     popular items (DP popularity) to everyone. More customers per item, or a larger ε, would change \
                     that.\n"
                );
            } else if share < hush_mf::MOSTLY_POPULARITY {
                let _ = writeln!(
                    md,
                    "**Mostly popularity.** The noise left personalized factors only for items covering {:.0}% of \
                     interactions: for the rest this model ranks by noisy popularity, and its personalization may \
                     not beat DP popularity. More customers per item, or a larger ε, would change that.\n",
                    share * 100.0
                );
            }
            md.push_str("**Assumptions behind the guarantee.**\n\n");
            for a in words::assumptions(*max_items_per_subject, *clip_norm, Some(*iterations)) {
                let _ = writeln!(md, "- {a}");
            }
            md.push('\n');
        }
    }
}

/// What the guarantee does not cover, and the known limitations.
fn limitations(md: &mut String, model: &Model) {
    let m = &model.meta;
    md.push_str("## Outside the guarantee\n\n");
    for item in words::outside_the_guarantee() {
        let _ = writeln!(md, "- {item}");
    }
    md.push('\n');

    md.push_str("## Known limitations\n\n");
    let mut limits = vec![
        "Noise falls hardest on light customers and on tail items: check the breakdown above before relying on \
         quality for them.",
        "Items with few interactions carry mostly noise; under DP the ranking leans on the (noisy) popularity for \
         them.",
        "The model reflects customers' data as of the consent snapshot. A customer who withdraws or is erased \
         afterwards is excluded from the next retrain; until then the DP guarantee bounds what this model can \
         reveal about them.",
        "Recommendations explain themselves by the customer's own items that contributed most; this is a view of \
         the factorization, not a causal account.",
    ];
    if m.data.research_only {
        limits.push("Research data: no consent ledger stands behind it, so it must not be served.");
    }
    for l in limits {
        let _ = writeln!(md, "- {l}");
    }
}

/// The private evaluation report of a model: exact metrics on held-out
/// private data. Written beside the model file; never served or released.
pub fn evaluation_markdown(model: &Model, e: &Evaluation) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Private evaluation of hush model `{}`\n", model.meta.model_id);
    md.push_str(
        "Exact metrics on held-out private data: **not covered by the model's privacy guarantee**. Keep this \
         report with the operator; `hush serve` never serves it.\n\n",
    );
    evaluation_section(&mut md, e);
    md
}

fn evaluation_section(md: &mut String, e: &Evaluation) {
    let k = e.ranking.k;
    md.push_str("| Metric | Value |\n|---|---:|\n");
    if let Some(r) = e.rating {
        let _ = writeln!(md, "| RMSE | {:.4} |\n| MAE | {:.4} |", r.rmse, r.mae);
    }
    let _ = writeln!(md, "| Precision@{k} | {:.4} |", e.ranking.precision);
    let _ = writeln!(md, "| Recall@{k} | {:.4} |", e.ranking.recall);
    let _ = writeln!(md, "| NDCG@{k} | {:.4} |", e.ranking.ndcg);
    let _ = writeln!(md, "| MAP@{k} | {:.4} |", e.ranking.map);
    let _ = writeln!(md, "| Catalogue coverage | {:.4} |", e.coverage);
    let _ = writeln!(md, "| Popularity bias (mean popularity percentile) | {:.4} |\n", e.popularity_bias);
    md.push_str("**Fairness breakdown.** Who pays for privacy: the same metrics by customer activity (thirds) and by item popularity.\n\n");
    let _ = writeln!(md, "| Group | customers | RMSE | Recall@{k} | NDCG@{k} |\n|---|---:|---:|---:|---:|");
    let groups =
        |md: &mut String, prefix: &str, map: &std::collections::BTreeMap<String, GroupMetrics>, order: &[&str]| {
            for name in order {
                if let Some(g) = map.get(*name) {
                    let rmse = g.rmse.map_or("–".into(), |r| format!("{r:.4}"));
                    let _ =
                        writeln!(md, "| {prefix} {name} | {} | {rmse} | {:.4} | {:.4} |", g.subjects, g.recall, g.ndcg);
                }
            }
        };
    groups(md, "customers:", &e.by_activity, &["light", "medium", "heavy"]);
    groups(md, "items:", &e.by_item_popularity, &["head", "tail"]);
    md.push('\n');
}

/// The card as a self-contained HTML page in the report style.
pub fn html(model: &Model) -> String {
    page(&format!("Model card: hush model {}", model.meta.model_id), &markdown_to_html(&markdown(model)))
}

#[cfg(test)]
mod tests {
    use super::utc;

    #[test]
    fn utc_times_are_rfc3339() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_700_000_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(utc(-1000), "1969-12-31T23:59:59Z");
    }
}
