//! Scoring one subject whose consent was already checked: fold in their
//! recent events, rank the catalogue, explain each item. The HTTP route and
//! batch recommendations (`hush recommend --all`) share it, so a campaign
//! gets exactly what the API would have answered.
//!
//! Nothing here checks consent: callers do that first, and call this only
//! for a subject whose personalization consent is granted.

use std::collections::BTreeMap;

use hush_consent::{Event, EventKind};
use hush_features::{DropReason, Feedback};
use hush_mf::Model;
use serde::Serialize;

use crate::ServedModel;

/// Which items a list may hold: ids never to list, and categories to keep
/// (`category=`) or drop (`exclude_categories=`), as the catalogue in the
/// store names them. A category no item has is not an error: it matches nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ItemFilter {
    /// Item ids never to list.
    pub exclude_items: Vec<String>,
    /// Only items in one of these categories (`None`: any category, or none).
    pub categories: Option<Vec<String>>,
    /// Never items in one of these categories.
    pub exclude_categories: Vec<String>,
}

impl ItemFilter {
    /// A filter from the query values of the API (comma-separated lists).
    ///
    /// # Errors
    /// `(field, message)` for a category list with an empty or invalid name
    /// (see [`hush_consent::catalogue::validate_category`]).
    pub fn parse(
        exclude: Option<&str>,
        category: Option<&str>,
        exclude_categories: Option<&str>,
    ) -> Result<Self, (&'static str, String)> {
        let categories = |field: &'static str, raw: &str| -> Result<Vec<String>, (&'static str, String)> {
            raw.split(',')
                .enumerate()
                .map(|(i, name)| {
                    let name = name.trim();
                    hush_consent::catalogue::validate_category(name)
                        .map(|()| name.to_string())
                        .map_err(|e| (field, format!("{field}: entry {}: {e}", i + 1)))
                })
                .collect()
        };
        Ok(ItemFilter {
            exclude_items: exclude
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
            categories: category.map(|raw| categories("category", raw)).transpose()?,
            exclude_categories: exclude_categories
                .map(|raw| categories("exclude_categories", raw))
                .transpose()?
                .unwrap_or_default(),
        })
    }

    /// A per-item mask over the model's items, `true` for an item the list
    /// must skip: checked once per item per request, so a flat vector.
    pub fn mask(&self, served: &ServedModel) -> Vec<bool> {
        let mut skip = vec![false; served.model.n_items()];
        for id in &self.exclude_items {
            if let Some(&i) = served.index.get(id.as_str()) {
                skip[i] = true;
            }
        }
        let ids = |names: &[String]| -> Vec<u32> {
            names.iter().filter_map(|n| served.category_ids.get(n.as_str()).copied()).collect()
        };
        let keep = self.categories.as_deref().map(ids);
        let drop = ids(&self.exclude_categories);
        if keep.is_none() && drop.is_empty() {
            return skip;
        }
        for (i, skipped) in skip.iter_mut().enumerate() {
            let category = served.category_of.get(i).copied().flatten();
            let kept = match (&keep, category) {
                (None, _) => true,
                (Some(keep), Some(c)) => keep.contains(&c),
                (Some(_), None) => false,
            };
            if !kept || category.is_some_and(|c| drop.contains(&c)) {
                *skipped = true;
            }
        }
        skip
    }
}

/// A scored list for one subject.
#[derive(Debug, Serialize)]
pub struct Scored<'a> {
    /// The items, best first.
    pub items: Vec<Recommended<'a>>,
    /// Whether the subject's own events shaped the list (otherwise it is the
    /// popular list, as for a subject without usable history).
    pub personalized: bool,
}

/// One recommended item, with why.
#[derive(Debug, Serialize)]
pub struct Recommended<'a> {
    /// The item id.
    pub item: &'a str,
    /// Its title in the store's catalogue (`null` if it has none).
    pub title: Option<&'a str>,
    /// Its category in the store's catalogue (`null` if it has none).
    pub category: Option<&'a str>,
    /// The model's score.
    pub score: f64,
    /// The subject's own items behind it.
    pub because: Vec<Because<'a>>,
}

/// One of the subject's own items behind a recommendation.
#[derive(Debug, Serialize)]
pub struct Because<'a> {
    /// The item id.
    pub item: &'a str,
    /// Its title in the store's catalogue (`null` if it has none).
    pub title: Option<&'a str>,
    /// The kind of the subject's most recent event on it.
    pub kind: &'a EventKind,
    /// A sentence for people, naming the item by its title when it has one.
    pub text: String,
}

/// Ranks the model's items for a subject whose personalization consent is
/// granted, from their recent `events` (newest first): folded in when the
/// model knows some of their items, else the popular list. The subject's
/// own items and those `skip` marks (see [`ItemFilter::mask`]) are never
/// listed.
pub fn recommend<'a>(
    served: &'a ServedModel,
    serving_weights: &BTreeMap<String, f32>,
    events: &'a [Event],
    k: usize,
    mut skip: Vec<bool>,
) -> Scored<'a> {
    let model = &served.model;
    let events: Vec<(Option<usize>, &Event)> = events.iter().map(|e| (served.index.get(&e.item).copied(), e)).collect();
    let history = History::of(model.meta.feedback, &events, |event| fold_in_value(model, serving_weights, event));
    for item in events.iter().filter_map(|&(item, _)| item) {
        skip[item] = true;
    }
    let interactions: Vec<(u32, f32)> = history.0.iter().map(|&(i, v, _)| (i as u32, v)).collect();
    let personalized = !interactions.is_empty();
    let ranked = if personalized {
        let vector = model.fold_in(&interactions);
        model.top_k(&vector, k, |i| skip[i])
    } else {
        model.popular(k, |i| skip[i])
    };
    let items = ranked
        .into_iter()
        .map(|(i, score)| Recommended {
            item: &model.items[i],
            title: served.title(i),
            category: served.category(i),
            score,
            because: history.explain(served, i),
        })
        .collect();
    Scored { items, personalized }
}

/// The weight an event contributes to fold-in: exactly what training made
/// of it (the model carries its event weighting: ratings for explicit
/// models, kind weights and the rating threshold for implicit ones). A kind
/// training did not use may carry a serving-only weight (negative feedback
/// such as `dislike`); a rating below the threshold is no signal.
fn fold_in_value(model: &Model, serving_weights: &BTreeMap<String, f32>, event: &Event) -> Option<f32> {
    match model.meta.data.weighting.weigh(model.meta.feedback, &event.kind, event.value) {
        Ok(value) => Some(value),
        Err(DropReason::ExcludedKind) if model.meta.feedback == Feedback::Implicit => {
            serving_weights.get(event.kind.as_str()).copied()
        }
        Err(_) => None,
    }
}

/// What a subject's recent events say about each item they touched: its
/// fold-in weight and its most recent event, in item order.
struct History<'a>(Vec<(usize, f32, &'a Event)>);

impl<'a> History<'a> {
    /// From events newest first, each with its item index if the model
    /// knows the item, and `value`, an event's fold-in weight (if it counts):
    /// an explicit model keeps an item's highest rating, an implicit one sums
    /// its weights. Items whose total is not positive (negative feedback can
    /// cancel an item out) are left out.
    fn of(feedback: Feedback, events: &[(Option<usize>, &'a Event)], value: impl Fn(&Event) -> Option<f32>) -> Self {
        let mut entries: Vec<(usize, f32, &Event)> =
            events.iter().filter_map(|&(item, event)| Some((item?, value(event)?, event))).collect();
        // Stable, so an item's newest event stays first among its own.
        entries.sort_by_key(|&(item, _, _)| item);
        let mut merged: Vec<(usize, f32, &Event)> = Vec::with_capacity(entries.len());
        for (item, value, event) in entries {
            match merged.last_mut() {
                Some(last) if last.0 == item => {
                    last.1 = match feedback {
                        Feedback::Explicit => last.1.max(value),
                        Feedback::Implicit => last.1 + value,
                    }
                }
                _ => merged.push((item, value, event)),
            }
        }
        merged.retain(|&(_, weight, _)| weight > 0.0);
        History(merged)
    }

    /// Why `item` was recommended: the subject's own items most similar to
    /// it in the model's latent space, weighted by how strongly the subject
    /// engaged with them (the terms that dominate the item's score in the
    /// fold-in). The two largest positive contributions, lower item index
    /// first on ties, in one pass: this runs for every recommended item of
    /// every request.
    fn explain(&self, served: &'a ServedModel, item: usize) -> Vec<Because<'a>> {
        let model = &served.model;
        let mut best: [Option<(f32, usize, &Event)>; 2] = [None, None];
        for &(j, weight, event) in &self.0 {
            let contribution = weight * model.cosine(item, j);
            if contribution <= 0.0 {
                continue;
            }
            if best[0].is_none_or(|(c, _, _)| contribution > c) {
                best = [Some((contribution, j, event)), best[0]];
            } else if best[1].is_none_or(|(c, _, _)| contribution > c) {
                best[1] = Some((contribution, j, event));
            }
        }
        best.into_iter()
            .flatten()
            .map(|(_, j, event)| {
                let verb = match event.kind {
                    EventKind::View => "viewed",
                    EventKind::Cart => "added to cart",
                    EventKind::Purchase => "bought",
                    EventKind::Rating => "rated",
                    EventKind::Other(_) => "interacted with",
                };
                let item = model.items[j].as_str();
                let title = served.title(j);
                Because {
                    item,
                    title,
                    kind: &event.kind,
                    text: format!("because you {verb} {}", title.unwrap_or(item)),
                }
            })
            .collect()
    }
}
