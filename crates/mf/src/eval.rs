//! Honest evaluation: rating and ranking metrics from folded-in subjects,
//! baselines, and a fairness audit by subject activity and item popularity.
//!
//! Every subject is evaluated as serving would treat them: their vector is
//! folded in from their training interactions against the released model,
//! never taken from training memory.
//!
//! Definitions (binary relevance, training items excluded from rankings):
//! Precision@k = hits/k; Recall@k = hits/|relevant|; NDCG@k with
//! IDCG over min(k, |relevant|); MAP@k = Σ precision@i·relᵢ / min(k, |relevant|).
//! Relevant: test items rated at or above the threshold (explicit) or every
//! test item (implicit). Activity groups: subjects split into thirds by
//! training interactions. Head items: the most popular items that together
//! hold half of all training interactions; tail: the rest.

use std::collections::BTreeMap;

use hush_features::{FeatureSet, Feedback};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::Model;
use hush_privacy::NoiseSource;

/// RMSE and MAE over held-out ratings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RatingMetrics {
    /// Root mean squared error.
    pub rmse: f64,
    /// Mean absolute error.
    pub mae: f64,
    /// Held-out ratings scored.
    pub ratings: u64,
}

/// Top-k metrics, averaged over subjects with at least one relevant test item.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RankingMetrics {
    /// k.
    pub k: usize,
    /// Precision@k.
    pub precision: f64,
    /// Recall@k.
    pub recall: f64,
    /// NDCG@k.
    pub ndcg: f64,
    /// MAP@k.
    pub map: f64,
    /// Subjects evaluated.
    pub subjects: u64,
}

/// Metrics of one group in the fairness audit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupMetrics {
    /// RMSE over the group's held-out ratings (explicit).
    pub rmse: Option<f64>,
    /// Recall@k restricted to the group.
    pub recall: f64,
    /// NDCG@k restricted to the group.
    pub ndcg: f64,
    /// Subjects with a relevant item in the group.
    pub subjects: u64,
}

/// A full evaluation of a model (or a baseline) on a split.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Rating accuracy (explicit mode).
    pub rating: Option<RatingMetrics>,
    /// Ranking quality.
    pub ranking: RankingMetrics,
    /// Share of the catalogue that appears in some subject's top-k.
    pub coverage: f64,
    /// Mean popularity percentile of recommended items (1 = the most popular item).
    pub popularity_bias: f64,
    /// The audit by subject activity: `light`, `medium`, `heavy`.
    pub by_activity: BTreeMap<String, GroupMetrics>,
    /// The audit by item popularity: `head`, `tail`.
    pub by_item_popularity: BTreeMap<String, GroupMetrics>,
}

/// Non-private reference points on the same split.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Baselines {
    /// Predict the training mean (explicit).
    pub global_mean: Option<RatingMetrics>,
    /// Predict each item's training mean (explicit).
    pub item_mean: Option<RatingMetrics>,
    /// Recommend the most popular unseen items (exact counts: non-private).
    pub popularity: Evaluation,
    /// Recommend by DP popularity at a DP model's (ε, δ) and bound: what a
    /// storefront gets without personalization ([`baselines_for`]; `None`
    /// for a non-private model, or from [`baselines`]).
    pub dp_popularity: Option<Evaluation>,
}

/// How to evaluate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EvalOptions {
    /// Length of the recommendation lists.
    pub k: usize,
    /// Explicit mode: a test rating at or above this is relevant.
    pub relevance_threshold: f32,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions { k: 10, relevance_threshold: 4.0 }
    }
}

/// Per-subject outcome, merged into an [`Evaluation`].
struct SubjectOutcome {
    activity: usize,
    errors: Vec<(u32, f64)>,
    recommended: Vec<u32>,
    relevant: Vec<u32>,
}

/// Shared context: item popularity groups and percentiles from the training data.
struct Context {
    head: Vec<bool>,
    percentile: Vec<f64>,
}

impl Context {
    fn new(train: &FeatureSet) -> Self {
        let n = train.n_items();
        let counts: Vec<usize> = (0..n).map(|i| train.by_item.range(i).len()).collect();
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| counts[b].cmp(&counts[a]).then(a.cmp(&b)));
        let total: usize = counts.iter().sum();
        let mut head = vec![false; n];
        let mut percentile = vec![0.0; n];
        let mut running = 0;
        for (rank, &item) in order.iter().enumerate() {
            if running * 2 < total {
                head[item] = true;
            }
            running += counts[item];
            percentile[item] = 1.0 - rank as f64 / n.max(1) as f64;
        }
        Context { head, percentile }
    }
}

fn ranking_terms(recommended: &[u32], relevant: &[u32], k: usize) -> (f64, f64, f64, f64) {
    let mut hits = 0.0;
    let mut dcg = 0.0;
    let mut ap = 0.0;
    for (position, item) in recommended.iter().take(k).enumerate() {
        if relevant.contains(item) {
            hits += 1.0;
            dcg += 1.0 / ((position + 2) as f64).log2();
            ap += hits / (position + 1) as f64;
        }
    }
    let ideal = relevant.len().min(k);
    let idcg: f64 = (0..ideal).map(|p| 1.0 / ((p + 2) as f64).log2()).sum();
    (hits / k as f64, hits / relevant.len() as f64, dcg / idcg, ap / ideal as f64)
}

fn summarize(outcomes: &[SubjectOutcome], context: &Context, n_items: usize, k: usize, explicit: bool) -> Evaluation {
    let mut evaluation = Evaluation::default();
    if explicit {
        let errors: Vec<f64> = outcomes.iter().flat_map(|o| o.errors.iter().map(|e| e.1)).collect();
        let n = errors.len().max(1) as f64;
        evaluation.rating = Some(RatingMetrics {
            rmse: (errors.iter().map(|e| e * e).sum::<f64>() / n).sqrt(),
            mae: errors.iter().map(|e| e.abs()).sum::<f64>() / n,
            ratings: errors.len() as u64,
        });
    }
    let ranked: Vec<&SubjectOutcome> = outcomes.iter().filter(|o| !o.relevant.is_empty()).collect();
    let mut totals = (0.0, 0.0, 0.0, 0.0);
    for o in &ranked {
        let t = ranking_terms(&o.recommended, &o.relevant, k);
        totals = (totals.0 + t.0, totals.1 + t.1, totals.2 + t.2, totals.3 + t.3);
    }
    let n = ranked.len().max(1) as f64;
    evaluation.ranking = RankingMetrics {
        k,
        precision: totals.0 / n,
        recall: totals.1 / n,
        ndcg: totals.2 / n,
        map: totals.3 / n,
        subjects: ranked.len() as u64,
    };
    let mut seen = vec![false; n_items];
    let mut percentiles = (0.0, 0usize);
    for o in outcomes {
        for &item in &o.recommended {
            seen[item as usize] = true;
            percentiles = (percentiles.0 + context.percentile[item as usize], percentiles.1 + 1);
        }
    }
    evaluation.coverage = seen.iter().filter(|&&s| s).count() as f64 / n_items.max(1) as f64;
    evaluation.popularity_bias = percentiles.0 / percentiles.1.max(1) as f64;

    // Activity thirds by training interactions.
    let mut activities: Vec<usize> = outcomes.iter().map(|o| o.activity).collect();
    activities.sort_unstable();
    let cut = |q: f64| activities.get(((activities.len() as f64) * q) as usize).copied().unwrap_or(0);
    let (low, high) = (cut(1.0 / 3.0), cut(2.0 / 3.0));
    let group_of = |a: usize| {
        if a < low {
            "light"
        } else if a < high {
            "medium"
        } else {
            "heavy"
        }
    };
    for name in ["light", "medium", "heavy"] {
        let members: Vec<&SubjectOutcome> = outcomes.iter().filter(|o| group_of(o.activity) == name).collect();
        evaluation.by_activity.insert(name.into(), group_metrics(&members, |_| true, k, explicit));
    }
    for (name, in_head) in [("head", true), ("tail", false)] {
        let all: Vec<&SubjectOutcome> = outcomes.iter().collect();
        let metrics = group_metrics(&all, |item| context.head[item as usize] == in_head, k, explicit);
        evaluation.by_item_popularity.insert(name.into(), metrics);
    }
    evaluation
}

fn group_metrics(
    members: &[&SubjectOutcome],
    in_group: impl Fn(u32) -> bool,
    k: usize,
    explicit: bool,
) -> GroupMetrics {
    let errors: Vec<f64> =
        members.iter().flat_map(|o| o.errors.iter().filter(|e| in_group(e.0)).map(|e| e.1)).collect();
    let rmse = (explicit && !errors.is_empty())
        .then(|| (errors.iter().map(|e| e * e).sum::<f64>() / errors.len() as f64).sqrt());
    let (mut recall, mut ndcg, mut subjects) = (0.0, 0.0, 0u64);
    for o in members {
        let relevant: Vec<u32> = o.relevant.iter().copied().filter(|&i| in_group(i)).collect();
        if relevant.is_empty() {
            continue;
        }
        let t = ranking_terms(&o.recommended, &relevant, k);
        recall += t.1;
        ndcg += t.2;
        subjects += 1;
    }
    let n = subjects.max(1) as f64;
    GroupMetrics { rmse, recall: recall / n, ndcg: ndcg / n, subjects }
}

fn relevant_items(test: &FeatureSet, s: usize, explicit: bool, threshold: f32) -> Vec<u32> {
    test.subject_interactions(s).filter(|i| !explicit || i.value >= threshold).map(|i| i.item).collect()
}

/// Evaluates `model` on `test`, folding each subject in from `train`.
///
/// `train` and `test` must be the two parts of one split (same subject and item indices).
pub fn evaluate(model: &Model, train: &FeatureSet, test: &FeatureSet, options: EvalOptions) -> Evaluation {
    let _span = tracing::info_span!("evaluate", subjects = test.n_subjects()).entered();
    let explicit = model.meta.feedback == Feedback::Explicit;
    let context = Context::new(train);
    let outcomes: Vec<SubjectOutcome> = (0..test.n_subjects())
        .into_par_iter()
        .map(|s| {
            let history: Vec<(u32, f32)> = train.subject_interactions(s).map(|i| (i.item, i.value)).collect();
            let vector = model.fold_in(&history);
            let errors = if explicit {
                test.subject_interactions(s)
                    .map(|i| (i.item, f64::from(i.value) - model.score(&vector, i.item as usize)))
                    .collect()
            } else {
                Vec::new()
            };
            let relevant = relevant_items(test, s, explicit, options.relevance_threshold);
            let recommended = if relevant.is_empty() {
                Vec::new()
            } else {
                let seen = train.by_subject.row_indices(s);
                model
                    .top_k(&vector, options.k, |i| seen.contains(&(i as u32)))
                    .into_iter()
                    .map(|(i, _)| i as u32)
                    .collect()
            };
            SubjectOutcome { activity: history.len(), errors, recommended, relevant }
        })
        .collect();
    summarize(&outcomes, &context, model.n_items(), options.k, explicit)
}

/// The baselines on the same split: global mean, item mean, most popular
/// (by the exact training counts: non-private popularity).
pub fn baselines(train: &FeatureSet, test: &FeatureSet, options: EvalOptions) -> Baselines {
    let explicit = train.meta.feedback == Feedback::Explicit;
    let n_items = train.n_items();
    let total: f64 = train.by_subject.values.iter().map(|&v| f64::from(v)).sum();
    let mean = total / train.nnz().max(1) as f64;
    let item_mean: Vec<f64> = (0..n_items)
        .map(|i| {
            let values = &train.by_item.values[train.by_item.range(i)];
            if values.is_empty() {
                mean
            } else {
                values.iter().map(|&v| f64::from(v)).sum::<f64>() / values.len() as f64
            }
        })
        .collect();
    let mut global = Vec::new();
    let mut per_item = Vec::new();
    if explicit {
        for s in 0..test.n_subjects() {
            for i in test.subject_interactions(s) {
                global.push(f64::from(i.value) - mean);
                per_item.push(f64::from(i.value) - item_mean[i.item as usize]);
            }
        }
    }
    let metrics = |errors: &[f64]| {
        let n = errors.len().max(1) as f64;
        RatingMetrics {
            rmse: (errors.iter().map(|e| e * e).sum::<f64>() / n).sqrt(),
            mae: errors.iter().map(|e| e.abs()).sum::<f64>() / n,
            ratings: errors.len() as u64,
        }
    };
    let counts: Vec<f64> = (0..n_items).map(|i| train.by_item.range(i).len() as f64).collect();
    Baselines {
        global_mean: explicit.then(|| metrics(&global)),
        item_mean: explicit.then(|| metrics(&per_item)),
        popularity: popularity_ranking(train, test, options, &counts),
        dp_popularity: None,
    }
}

/// [`baselines`], and for a DP model also DP popularity at its target
/// (ε, δ) and contribution bound, from one release of the item counts with
/// `noise` ([`crate::dp_popularity_counts`]): the bar a DP model should
/// never fall below.
///
/// # Privacy
/// The noisy counts stay in memory; only their ranking metrics on the test
/// part are reported, exact statistics of private data like every metric
/// here (the non-private popularity baseline reads the exact counts).
///
/// # Errors
/// As [`crate::dp_popularity_counts`].
pub fn baselines_for(
    model: &Model,
    train: &FeatureSet,
    test: &FeatureSet,
    options: EvalOptions,
    noise: NoiseSource,
) -> crate::Result<Baselines> {
    let mut baselines = baselines(train, test, options);
    if let crate::PrivacyGuarantee::Dp { target_epsilon, delta, .. } = &model.meta.privacy {
        let budget = hush_privacy::Budget::new(*target_epsilon, *delta)?;
        let counts = crate::dp_popularity_counts(train, &model.meta.params, budget, noise)?;
        baselines.dp_popularity = Some(popularity_ranking(train, test, options, &counts));
    }
    Ok(baselines)
}

/// Ranking metrics of recommending everyone the items with the largest
/// `counts` (one per item; ties by lower index) that they have not seen:
/// exact counts for [`baselines`], noisy ones for DP popularity
/// ([`crate::dp_popularity_counts`]).
pub fn popularity_ranking(train: &FeatureSet, test: &FeatureSet, options: EvalOptions, counts: &[f64]) -> Evaluation {
    let explicit = train.meta.feedback == Feedback::Explicit;
    let context = Context::new(train);
    let n_items = train.n_items();
    let mut by_popularity: Vec<usize> = (0..n_items).collect();
    by_popularity.sort_by(|&a, &b| counts[b].total_cmp(&counts[a]).then(a.cmp(&b)));
    let outcomes: Vec<SubjectOutcome> = (0..test.n_subjects())
        .map(|s| {
            let seen = train.by_subject.row_indices(s);
            let relevant = relevant_items(test, s, explicit, options.relevance_threshold);
            let recommended = if relevant.is_empty() {
                Vec::new()
            } else {
                by_popularity
                    .iter()
                    .filter(|&&i| !seen.contains(&(i as u32)))
                    .take(options.k)
                    .map(|&i| i as u32)
                    .collect()
            };
            SubjectOutcome { activity: seen.len(), errors: Vec::new(), recommended, relevant }
        })
        .collect();
    summarize(&outcomes, &context, n_items, options.k, false)
}

#[cfg(test)]
mod tests {
    //! Known answers, computed by hand from the definitions in the module doc.
    use super::*;
    use hush_features::{FeatureMeta, Interaction};

    const TOLERANCE: f64 = 1e-12;

    fn close(got: f64, want: f64, what: &str) {
        assert!((got - want).abs() < TOLERANCE, "{what}: got {got}, want {want}");
    }

    #[test]
    fn ranking_terms_of_a_list_with_two_hits() {
        // Relevant {1, 5, 7}; the list 3 1 4 5 9 hits at ranks 2 and 4.
        let (precision, recall, ndcg, map) = ranking_terms(&[3, 1, 4, 5, 9], &[1, 5, 7], 5);
        close(precision, 2.0 / 5.0, "precision");
        close(recall, 2.0 / 3.0, "recall");
        // DCG = 1/log2(3) + 1/log2(5); IDCG over min(5, 3) = 3 ranks = 1 + 1/log2(3) + 1/2.
        close(ndcg, 0.498_189_257_466_412_85, "ndcg");
        // AP = (1/2 + 2/4) / min(5, 3).
        close(map, 1.0 / 3.0, "map");
    }

    #[test]
    fn ranking_terms_count_only_the_first_k_and_a_perfect_list_scores_one() {
        let (precision, recall, ndcg, map) = ranking_terms(&[7, 8, 1, 2], &[7, 8], 2);
        close(precision, 1.0, "precision");
        close(recall, 1.0, "recall");
        close(ndcg, 1.0, "ndcg");
        close(map, 1.0, "map");
        // A hit past k does not count.
        let (precision, recall, ndcg, map) = ranking_terms(&[4, 5, 6], &[6], 2);
        for (value, what) in [(precision, "precision"), (recall, "recall"), (ndcg, "ndcg"), (map, "map")] {
            close(value, 0.0, what);
        }
    }

    fn implicit(rows: &[&[u32]]) -> FeatureSet {
        let rows: Vec<Vec<Interaction>> = rows
            .iter()
            .map(|items| items.iter().map(|&item| Interaction { item, value: 1.0, time: 0 }).collect())
            .collect();
        let items = (0..4).map(|i| format!("item-{i}")).collect();
        FeatureSet::from_subject_rows(FeatureMeta::assembled(Feedback::Implicit), items, &rows)
    }

    #[test]
    fn the_popularity_baseline_on_a_tiny_split_has_the_hand_computed_metrics() {
        // Training counts: item 0 thrice, item 1 twice, item 2 once, item 3 never,
        // so popularity recommends 0 1 2 3, each subject's seen items skipped.
        let train = implicit(&[&[0], &[0, 1], &[0, 1, 2]]);
        let test = implicit(&[&[2], &[3], &[3]]);
        let popularity = baselines(&train, &test, EvalOptions { k: 2, relevance_threshold: 0.0 }).popularity;
        // Subject 0 gets [1, 2] (hit at rank 2), subject 1 [2, 3] (hit at rank 2),
        // subject 2 only [3] (hit at rank 1).
        let ranking = &popularity.ranking;
        assert_eq!((ranking.k, ranking.subjects), (2, 3));
        close(ranking.precision, 0.5, "precision");
        close(ranking.recall, 1.0, "recall");
        close(ranking.ndcg, (2.0 / 3f64.log2() + 1.0) / 3.0, "ndcg");
        close(ranking.map, (0.5 + 0.5 + 1.0) / 3.0, "map");
        // Items 1, 2 and 3 are recommended to someone: 3 of 4.
        close(popularity.coverage, 0.75, "coverage");
        // Percentiles 1 - rank/4: item 1 0.75, item 2 0.5, item 3 0.25; five recommendations.
        close(popularity.popularity_bias, (0.75 + 0.5 + 0.5 + 0.25 + 0.25) / 5.0, "popularity bias");
    }
}
