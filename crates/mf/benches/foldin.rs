//! In-process cost of one personalized request: fold-in of 50 interactions
//! and scoring a 10k-item, rank-64 catalogue for the top 10; and of one
//! similar-items request (exact cosine) at 10k and 100k items.
//! `cargo bench -p hush-mf --bench foldin`
// `criterion_group!` defines a public function without a doc comment.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion};
use hush_features::{FeatureMeta, FeatureSet, Feedback, Interaction};
use hush_mf::{train, Privacy, TrainParams};
use rand::{Rng, SeedableRng};

fn model() -> hush_mf::Model {
    model_of(10_000, 5_000)
}

/// A rank-64 implicit model of `items` items trained on `subjects` random subjects.
fn model_of(items: u32, subjects: usize) -> hush_mf::Model {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let rows: Vec<Vec<Interaction>> = (0..subjects)
        .map(|_| {
            let mut chosen = std::collections::BTreeSet::new();
            while chosen.len() < 30 {
                chosen.insert(rng.random_range(0..items));
            }
            chosen.into_iter().map(|item| Interaction { item, value: 1.0, time: 0 }).collect()
        })
        .collect();
    let meta = FeatureMeta { ..FeatureMeta::assembled(Feedback::Implicit) };
    let set = FeatureSet::from_subject_rows(meta, (0..items).map(|i| format!("sku-{i}")).collect(), &rows);
    let params = TrainParams { rank: 64, iterations: 2, lambda: 10.0, alpha: 1.0, ..TrainParams::default() };
    train(&set, &params, Privacy::NonPrivate, &mut |_| {}).expect("a model")
}

fn request(c: &mut Criterion) {
    let model = model();
    let history: Vec<(u32, f32)> = (0..50).map(|i| (i * 37 % 10_000, 1.0)).collect();
    let mut seen = vec![false; model.n_items()];
    history.iter().for_each(|&(i, _)| seen[i as usize] = true);
    c.bench_function("fold_in_50_rank64", |b| b.iter(|| model.fold_in(&history)));
    let vector = model.fold_in(&history);
    c.bench_function("top10_of_10k_rank64", |b| b.iter(|| model.top_k(&vector, 10, |i| seen[i])));
    c.bench_function("fold_in_50_and_top10_of_10k_rank64", |b| {
        b.iter(|| {
            let vector = model.fold_in(&history);
            model.top_k(&vector, 10, |i| seen[i])
        })
    });
}

fn similar(c: &mut Criterion) {
    for (items, subjects) in [(10_000, 5_000), (100_000, 50_000)] {
        let model = model_of(items, subjects);
        let name = format!("similar_top10_of_{}k_rank64", items / 1000);
        let mut item = 0;
        c.bench_function(&name, |b| {
            b.iter(|| {
                item = (item + 7919) % model.n_items();
                model.similar(item, 10, |_| false)
            })
        });
    }
}

criterion_group!(benches, request, similar);
criterion_main!(benches);
