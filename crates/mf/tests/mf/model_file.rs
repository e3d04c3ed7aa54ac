//! The model file: round trip, refusals, and no subject data inside.

use hush_features::Feedback;
use hush_mf::{train, Model, Privacy, TrainParams, MODEL_KIND};
use hush_privacy::{Budget, NoiseSource};

use super::clustered;

fn model(subjects: usize) -> Model {
    let set = clustered(subjects, 50, 8, Feedback::Explicit, 9);
    let privacy =
        Privacy::Dp { budget: Budget::new(2.0, 1e-6).unwrap(), noise: Box::new(NoiseSource::seeded(2)), rules: None };
    train(&set, &TrainParams { rank: 6, iterations: 2, ..TrainParams::default() }, privacy, &mut |_| {}).unwrap()
}

#[test]
fn round_trip_and_every_corruption_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.hmdl");
    let trained = model(100);
    trained.save(&path).unwrap();
    let loaded = Model::load(&path).unwrap();
    assert_eq!(loaded, trained);

    let bytes = std::fs::read(&path).unwrap();
    let write = |b: &[u8]| std::fs::write(&path, b).unwrap();
    let err = |_: ()| Model::load(&path).unwrap_err().to_string();

    write(&bytes[..bytes.len() / 2]);
    assert!(err(()).contains("truncated hush model file"), "{}", err(()));
    let mut flipped = bytes.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x01;
    write(&flipped);
    assert!(err(()).ends_with("hush model file is corrupted (checksum mismatch)"), "{}", err(()));
    let mut version = bytes.clone();
    version[8] = MODEL_KIND.version as u8 + 1;
    write(&version);
    assert!(
        err(()).contains(&format!(
            "hush model format version {} is not supported (this hush reads version {})",
            MODEL_KIND.version + 1,
            MODEL_KIND.version
        )),
        "{}",
        err(())
    );
    write(b"HUSHFSET and then some bytes that are not a model at all");
    assert!(err(()).contains("not a hush model file"), "{}", err(()));
}

#[test]
fn the_released_model_holds_no_subject_factors() {
    let dir = tempfile::tempdir().unwrap();
    let small = model(100);
    let large = model(2000);
    // The decoded structure: item-side arrays only, sized by items and rank.
    for m in [&small, &large] {
        assert_eq!(m.item_factors.len(), m.n_items() * m.rank);
        assert_eq!(m.item_bias.len(), m.n_items());
        assert_eq!(m.popularity.len(), m.n_items());
    }
    // Nor does its metadata state how many subjects there were.
    let meta = serde_json::to_string(&large.meta).unwrap();
    assert!(!meta.contains("2000") && !meta.contains("subjects") && !meta.contains("interactions"), "{meta}");
    // The file size does not grow with the number of subjects: twenty times
    // more subjects, each with a rank-6 vector, would add 2000·6·4 bytes.
    small.save(&dir.path().join("small.hmdl")).unwrap();
    large.save(&dir.path().join("large.hmdl")).unwrap();
    let size = |name: &str| std::fs::metadata(dir.path().join(name)).unwrap().len() as i64;
    assert!((size("large.hmdl") - size("small.hmdl")).abs() < 64, "{} vs {}", size("large.hmdl"), size("small.hmdl"));
    assert!(size("small.hmdl") < 50 * 6 * 4 + 50 * 4 * 2 + 50 * 12 + 4096);
}

#[test]
fn the_popularity_prior_ranks_items_where_factors_say_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let set = clustered(60, 20, 4, Feedback::Implicit, 5);
    let params = TrainParams { rank: 3, iterations: 2, popularity_weight: 1.0, ..TrainParams::default() };
    let mut m = train(&set, &params, Privacy::NonPrivate, &mut |_| {}).unwrap();
    // As if noise had shrunk every factor to zero: only the (released) popularity remains.
    m.item_factors.iter_mut().for_each(|v| *v = 0.0);
    m.popularity = (0..20).map(|i| ((i * 7) % 20) as f32).collect();
    let path = dir.path().join("m.hmdl");
    m.save(&path).unwrap();
    let m = Model::load(&path).unwrap();
    let vector = m.fold_in(&[(0, 1.0)]);
    let ranked: Vec<usize> = m.top_k(&vector, 3, |i| i == 0).into_iter().map(|(i, _)| i).collect();
    let popular: Vec<usize> = m.popular(3, |i| i == 0).into_iter().map(|(i, _)| i).collect();
    assert_eq!(ranked, popular);
}
