//! Integration tests of `hush-mf`: training, the model file, fold-in and evaluation.

mod model_file;
mod neighbours;
mod training;

use hush_features::{FeatureMeta, FeatureSet, Feedback, Interaction};
use rand::{Rng, SeedableRng};

/// A small world with two taste clusters: subjects in cluster c mostly
/// interact with items of cluster c. Items 0..half are cluster 0.
pub fn clustered(subjects: usize, items: usize, per_subject: usize, feedback: Feedback, seed: u64) -> FeatureSet {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let half = items / 2;
    let rows: Vec<Vec<Interaction>> = (0..subjects)
        .map(|s| {
            let cluster = s % 2;
            let mut chosen = std::collections::BTreeSet::new();
            while chosen.len() < per_subject {
                let own = rng.random::<f64>() < 0.9;
                let base = if (cluster == 0) == own { 0 } else { half };
                chosen.insert((base + rng.random_range(0..half)) as u32);
            }
            chosen
                .into_iter()
                .map(|item| {
                    let liked = (item as usize >= half) == (cluster == 1);
                    let value = match feedback {
                        Feedback::Explicit => {
                            if liked {
                                4.5
                            } else {
                                1.5
                            }
                        }
                        Feedback::Implicit => 1.0,
                    };
                    Interaction { item, value, time: 0 }
                })
                .collect()
        })
        .collect();
    let meta = FeatureMeta::assembled(feedback);
    FeatureSet::from_subject_rows(meta, (0..items).map(|i| format!("item-{i}")).collect(), &rows)
}
