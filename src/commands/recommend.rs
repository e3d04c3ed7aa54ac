//! `hush recommend` and `hush similar`: offline recommendations from a model file.

use crate::out;

use anyhow::{bail, Context, Result};
use hush_mf::Model;
use serde_json::{json, Value};

use super::print_json;
use crate::cli::*;

/// Titles and categories of the store's catalogue (`hush items import`),
/// when there is a store: offline answers show them as the API does. An
/// offline run with only a model file has none, and that is no error.
struct Titles(std::collections::HashMap<String, hush_consent::CatalogueItem>);

impl Titles {
    fn of_store(g: &Global) -> Titles {
        let existing = Global { create: false, ..g.clone() };
        let items = super::open_ledger(&existing).and_then(|l| Ok(l.catalogue_items()?));
        Titles(items.map(|items| items.into_iter().map(|i| (i.id.clone(), i)).collect()).unwrap_or_default())
    }

    /// The `title` and `category` of `item` (null when unknown), for JSON.
    fn json(&self, item: &str) -> (Value, Value) {
        let entry = self.0.get(item);
        (json!(entry.and_then(|e| e.title.as_deref())), json!(entry.and_then(|e| e.category.as_deref())))
    }

    /// `  Title (category)` after an id in text output, or nothing.
    fn text(&self, item: &str) -> String {
        match self.0.get(item) {
            Some(e) => match (&e.title, &e.category) {
                (Some(t), Some(c)) => format!("  {t} ({c})"),
                (Some(t), None) => format!("  {t}"),
                (None, Some(c)) => format!("  ({c})"),
                (None, None) => String::new(),
            },
            None => String::new(),
        }
    }
}

pub fn run(g: &Global, args: &RecommendArgs) -> Result<()> {
    let model = Model::load(&args.model)?;
    let found = hush_pipeline::learn::recommend(&model, &args.items, &args.values, args.k)?;
    let (recommendations, unknown) = (found.items, found.unknown_items);
    let titles = Titles::of_store(g);
    let list: Vec<Value> = recommendations
        .iter()
        .map(|(i, s)| {
            let (title, category) = titles.json(&model.items[*i]);
            json!({ "item": model.items[*i], "title": title, "category": category, "score": s })
        })
        .collect();
    if g.json {
        return print_json(
            &json!({ "recommendations": list, "unknown_items": unknown, "personalized": found.personalized }),
        );
    }
    if !unknown.is_empty() {
        eprintln!("note: {} items are not in the model and were ignored: {}", unknown.len(), unknown.join(", "));
    }
    for (rank, (i, score)) in recommendations.iter().enumerate() {
        out!("{:>3}. {}  {score:.4}{}", rank + 1, model.items[*i], titles.text(&model.items[*i]));
    }
    Ok(())
}

/// `hush similar`: the model's exact cosine neighbours of one item.
pub fn similar(g: &Global, args: &SimilarArgs) -> Result<()> {
    let model = Model::load(&args.model).with_context(|| format!("loading {}", args.model.display()))?;
    let position = |id: &str| model.items.iter().position(|i| i == id);
    let Some(item) = position(&args.item) else {
        bail!("--item {}: the model's catalogue has no such item", args.item);
    };
    let excluded: std::collections::HashSet<usize> = args.exclude.iter().filter_map(|id| position(id)).collect();
    let similar = model.similar(item, args.k, |i| excluded.contains(&i));
    let titles = Titles::of_store(g);
    if g.json {
        let list: Vec<Value> = similar
            .iter()
            .map(|&(i, s)| {
                let (title, category) = titles.json(&model.items[i]);
                json!({ "item": model.items[i], "title": title, "category": category, "similarity": s })
            })
            .collect();
        let basis = if model.has_factors(item) { "item_factors" } else { "none" };
        return print_json(&json!({ "item": args.item, "items": list, "basis": basis }));
    }
    if !model.has_factors(item) {
        eprintln!("note: the model learned no factors for {}: it knows nothing it is like", args.item);
    }
    for (rank, (i, similarity)) in similar.iter().enumerate() {
        out!("{:>3}. {}  {similarity:.4}{}", rank + 1, model.items[*i], titles.text(&model.items[*i]));
    }
    Ok(())
}
