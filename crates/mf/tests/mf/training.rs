//! Training behaviour: determinism, the zero-noise twin, quality on
//! MovieLens-shaped data (the real ml-latest-small checks are the root bench
//! `benches/movielens.rs`).

use hush_features::split::split;
use hush_features::{ConsentView, ExtractParams, Extractor, Feedback, SplitSpec};
use hush_formats::EventFormat;
use hush_mf::eval::{self, EvalOptions};
use hush_mf::{train, train_with_mechanics, DpRules, Mechanics, Model, Privacy, PrivacyGuarantee, TrainParams};
use hush_privacy::{Budget, NoiseSource};
use hush_vocab::{PseudonymKey, Timestamp};

use super::clustered;

fn params(rank: usize, iterations: u32) -> TrainParams {
    TrainParams { rank, iterations, lambda: 0.1, ..TrainParams::default() }
}

fn same_numbers(a: &Model, b: &Model) -> bool {
    a.item_factors == b.item_factors
        && a.item_bias == b.item_bias
        && a.global_mean == b.global_mean
        && a.popularity == b.popularity
}

#[test]
fn seeded_training_is_deterministic_and_noise_changes_it() {
    let set = clustered(200, 40, 8, Feedback::Explicit, 1);
    let dp = |seed| Privacy::Dp {
        budget: Budget::new(4.0, 1e-6).unwrap(),
        noise: Box::new(NoiseSource::seeded(seed)),
        rules: None,
    };
    let a = train(&set, &params(4, 3), dp(7), &mut |_| {}).unwrap();
    let b = train(&set, &params(4, 3), dp(7), &mut |_| {}).unwrap();
    let c = train(&set, &params(4, 3), dp(8), &mut |_| {}).unwrap();
    assert!(same_numbers(&a, &b), "same seeds must give the same model");
    assert!(!same_numbers(&a, &c), "other noise must give another model");
    let np1 = train(&set, &params(4, 3), Privacy::NonPrivate, &mut |_| {}).unwrap();
    let np2 = train(&set, &params(4, 3), Privacy::NonPrivate, &mut |_| {}).unwrap();
    assert!(same_numbers(&np1, &np2));
    match &a.meta.privacy {
        PrivacyGuarantee::Dp { epsilon, noise_seeded, releases, .. } => {
            assert!(*epsilon <= 4.0 && *epsilon > 3.9);
            assert!(*noise_seeded);
            assert_eq!(
                releases.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
                ["rating_sum", "item_counts", "item_gram", "item_rhs"]
            );
        }
        other => panic!("expected a DP guarantee, found {other:?}"),
    }
}

#[test]
fn dp_training_with_zero_noise_and_no_bounds_is_the_non_private_twin() {
    for feedback in [Feedback::Explicit, Feedback::Implicit] {
        let set = clustered(120, 30, 6, feedback, 2);
        let p = params(5, 4);
        let twin = train(&set, &p, Privacy::NonPrivate, &mut |_| {}).unwrap();
        let zero_noise = Mechanics { noise: Some(NoiseSource::seeded(3)), ..Mechanics::non_private() };
        let dp = train_with_mechanics(&set, &p, &zero_noise, PrivacyGuarantee::NonPrivate, &mut |_| {}).unwrap();
        assert!(same_numbers(&twin, &dp), "{feedback:?}: zero noise must reproduce the twin exactly");
        // With real noise the numbers move.
        let noisy = Mechanics { item_gram_std: 0.5, item_rhs_std: 0.5, ..zero_noise };
        let moved = train_with_mechanics(&set, &p, &noisy, PrivacyGuarantee::NonPrivate, &mut |_| {}).unwrap();
        assert!(!same_numbers(&twin, &moved));
    }
}

#[test]
fn fold_in_recommends_from_the_subjects_own_cluster() {
    for feedback in [Feedback::Explicit, Feedback::Implicit] {
        let set = clustered(400, 40, 10, feedback, 4);
        let p = TrainParams { rank: 4, iterations: 8, lambda: 0.1, alpha: 5.0, ..TrainParams::default() };
        let model = train(&set, &p, Privacy::NonPrivate, &mut |_| {}).unwrap();
        let value = if feedback == Feedback::Explicit { 4.5 } else { 1.0 };
        let history: Vec<(u32, f32)> = (0..5).map(|i| (i, value)).collect();
        let vector = model.fold_in(&history);
        let top = model.top_k(&vector, 5, |i| i < 5);
        let own = top.iter().filter(|(i, _)| *i < 20).count();
        assert!(own >= 4, "{feedback:?}: top-5 {top:?} should come from the first cluster");
        assert!(top.iter().all(|(i, _)| *i >= 5), "seen items are excluded");
    }
}

/// A MovieLens-shaped data set from `hush-synth` (610 users, 1,000 movies,
/// seed 1), generated into Cargo's temporary directory and read as research
/// data: the tests need nothing beside the project.
fn movielens_shaped(feedback: Feedback) -> hush_features::FeatureSet {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("hush-mf-movielens-shaped");
    hush_synth::generate(&hush_synth::SynthParams::movielens_shaped(), &dir, &mut |_| {}).unwrap();
    let now = Timestamp::now();
    let config =
        // A fixed sampling seed: the holdout split is keyed by each subject's
        // key, and a fresh OS secret per run made these figures vary from run to run.
        ExtractParams {
            feedback,
            research_data: true,
            max_events_per_subject: None,
            sampling_seed: Some(1),
            ..ExtractParams::default()
        }
            .validate(now)
            .unwrap();
    let view = ConsentView::research(&config);
    let key = PseudonymKey::from_bytes([0; 32]);
    let mut extractor = Extractor::new(&config, &view, &key);
    extractor.add_file(&dir.join("ratings.csv"), &EventFormat::MovielensCsv, &mut |_| {}).unwrap();
    extractor.finish(now).unwrap().0
}

#[test]
fn movielens_shaped_data_reaches_a_sane_rmse_private_and_not() {
    let set = movielens_shaped(Feedback::Explicit);
    let parts = split(&set, &SplitSpec::Holdout { fraction: 0.2, seed: 42 });
    let options = EvalOptions::default();
    let twin = train(&parts.train, &params(32, 8), Privacy::NonPrivate, &mut |_| {}).unwrap();
    let twin_rmse = eval::evaluate(&twin, &parts.train, &parts.test, options).rating.unwrap().rmse;
    let base = eval::baselines(&parts.train, &parts.test, options);
    let (item_mean, global_mean) = (base.item_mean.unwrap().rmse, base.global_mean.unwrap().rmse);
    eprintln!("twin RMSE {twin_rmse}, item mean {item_mean}, global mean {global_mean}");
    // The ratings carry noise of standard deviation 0.5 before rounding to half
    // stars; seed 1 gives about 0.68 against an item mean of about 0.76.
    assert!(twin_rmse < 0.75, "non-private RMSE {twin_rmse}");
    assert!(
        twin_rmse < 0.95 * item_mean,
        "non-private RMSE {twin_rmse} should clearly beat the item mean {item_mean}: the users have tastes"
    );
    let dp_params = TrainParams { rank: 16, iterations: 2, clip_norm: 1.0, ..params(16, 2) };
    let privacy =
        Privacy::Dp { budget: Budget::new(8.0, 1e-6).unwrap(), noise: Box::new(NoiseSource::seeded(1)), rules: None };
    let dp = train(&parts.train, &dp_params, privacy, &mut |_| {}).unwrap();
    let dp_rmse = eval::evaluate(&dp, &parts.train, &parts.test, options).rating.unwrap().rmse;
    eprintln!("DP RMSE {dp_rmse}");
    assert!(dp_rmse < global_mean, "DP RMSE {dp_rmse} should beat the global mean {global_mean}");
}

/// A DP run with the rules takes its iterations from the noisy counts: more
/// budget or more subjects per item buys more iterations, the guarantee
/// states the iterations run, and re-counting never raises ε.
#[test]
fn the_rules_choose_iterations_from_noisy_counts_and_keep_the_guarantee() {
    let run = |set: &hush_features::FeatureSet, epsilon: f64| {
        let privacy = Privacy::Dp {
            budget: Budget::new(epsilon, 1e-6).unwrap(),
            noise: Box::new(NoiseSource::seeded(3)),
            rules: Some(DpRules::default()),
        };
        train(set, &TrainParams::default(), privacy, &mut |_| {}).unwrap()
    };
    let iterations = |model: &Model| match &model.meta.privacy {
        PrivacyGuarantee::Dp { iterations, epsilon, target_epsilon, releases, .. } => {
            assert!(epsilon <= target_epsilon, "{epsilon} over {target_epsilon}");
            for r in releases.iter().filter(|r| ["global_gram", "item_rhs"].contains(&r.name.as_str())) {
                assert_eq!(r.count, *iterations, "{} is released once per iteration run", r.name);
            }
            assert_eq!(model.meta.params.iterations, *iterations);
            *iterations
        }
        other => panic!("expected a DP guarantee, found {other:?}"),
    };
    let small = clustered(300, 40, 10, Feedback::Implicit, 5);
    let large = clustered(6000, 40, 10, Feedback::Implicit, 5);
    assert_eq!(iterations(&run(&small, 0.5)), 0, "300 subjects at ε 0.5: popularity only");
    let (tight, loose) = (iterations(&run(&small, 2.0)), iterations(&run(&small, 50.0)));
    assert!(tight < loose, "ε 2 bought {tight} iterations, ε 50 {loose}");
    assert!(tight >= 1, "300 subjects at ε 2 support an iteration");
    assert!(iterations(&run(&large, 2.0)) > tight, "more subjects per item support more iterations");
    // Implicit DP releases no per-item Gram statistic: it is estimated from the counts.
    let model = run(&large, 4.0);
    let PrivacyGuarantee::Dp { releases, .. } = &model.meta.privacy else { unreachable!() };
    assert_eq!(
        releases.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        ["item_counts", "global_gram", "item_rhs"]
    );
    // The rules' settings are the model's: binary preferences, k = 60.
    assert_eq!((model.meta.params.max_value, model.meta.params.max_items_per_subject), (1.0, 60));
}

/// Where the noisy counts show that even one iteration's factors would be
/// noise, an implicit DP model is DP popularity: no iteration, no factor,
/// the iterations' budget spent on a second count release, and everyone's
/// ranking is the popularity ranking.
#[test]
fn counts_below_the_noise_make_a_popularity_only_model() {
    // 40 subjects over 2,000 items at ε = 1: a handful of subjects per item.
    let set = clustered(40, 2000, 8, Feedback::Implicit, 23);
    let budget = Budget::new(1.0, 1e-6).unwrap();
    let privacy = Privacy::Dp { budget, noise: Box::new(NoiseSource::seeded(3)), rules: Some(DpRules::default()) };
    let model = train(&set, &TrainParams::default(), privacy, &mut |_| {}).unwrap();
    let PrivacyGuarantee::Dp { iterations, epsilon, releases, .. } = &model.meta.privacy else {
        panic!("expected a DP guarantee")
    };
    assert_eq!((*iterations, model.meta.params.iterations), (0, 0));
    assert_eq!(releases.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["item_counts", "item_counts_again"]);
    assert!(*epsilon <= 1.0 && *epsilon > 0.99, "the whole budget is spent, within it: ε {epsilon}");
    assert!(model.item_factors.iter().all(|&v| v == 0.0), "no factor is released");
    // The second release carries the planned iterations' loss: its noise is
    // below the first's, which had 30% of ρ against their 70%.
    assert!(releases[1].noise_std < releases[0].noise_std, "{releases:?}");
    let subject = model.fold_in(&[(0, 1.0), (7, 1.0), (300, 1.0)]);
    let items = |list: Vec<(usize, f64)>| list.into_iter().map(|(i, _)| i).collect::<Vec<_>>();
    assert_eq!(items(model.top_k(&subject, 10, |_| false)), items(model.popular(10, |_| false)));
}

/// DP popularity, the bar a DP model is compared with: its counts are the
/// bounded counts plus noise of the calibrated scale, its ranking matches
/// exact popularity when the budget is large and not when it is tiny, and a
/// non-private model gets no such baseline.
#[test]
fn dp_popularity_is_bounded_counts_with_calibrated_noise() {
    let set = clustered(400, 300, 8, Feedback::Implicit, 31);
    let exact: Vec<f64> = (0..set.n_items()).map(|i| set.by_item.range(i).len() as f64).collect();
    let params = TrainParams { max_items_per_subject: 8, ..TrainParams::default() };
    let counts = |epsilon: f64, seed: u64| {
        let budget = Budget::new(epsilon, 1e-6).unwrap();
        hush_mf::dp_popularity_counts(&set, &params, budget, NoiseSource::seeded(seed)).unwrap()
    };
    // Every subject has at most 8 items, so the bound keeps them all: the
    // noise is what separates the release from the exact counts.
    let sigma = |epsilon: f64| {
        let plan = hush_privacy::Plan::default().with(hush_privacy::PlannedRelease {
            name: "item_counts".into(),
            code: 2,
            noise: hush_privacy::NoiseKind::DiscreteGaussian,
            l2_sensitivity: 8f64.sqrt(),
            count: 1,
            share: 1.0,
        });
        plan.calibrate(Budget::new(epsilon, 1e-6).unwrap()).unwrap().releases[0].noise_std
    };
    for epsilon in [0.5, 4.0] {
        let noisy = counts(epsilon, 1);
        let drawn = (noisy.iter().zip(&exact).map(|(a, b)| (a - b).powi(2)).sum::<f64>() / exact.len() as f64).sqrt();
        assert!(
            (drawn / sigma(epsilon) - 1.0).abs() < 0.15,
            "ε {epsilon}: drawn σ {drawn}, calibrated {}",
            sigma(epsilon)
        );
        assert!(noisy.iter().all(|c| c.fract() == 0.0), "integer counts");
    }
    // A subject bounded to one item adds one to one count.
    let one = TrainParams { max_items_per_subject: 1, ..params.clone() };
    let total: f64 = hush_mf::dp_popularity_counts(&set, &one, Budget::new(1e4, 1e-6).unwrap(), NoiseSource::seeded(2))
        .unwrap()
        .iter()
        .sum();
    assert!((total - 400.0).abs() < 40.0, "400 subjects, one item each: {total}");
    let zero = TrainParams { max_items_per_subject: 0, ..params.clone() };
    assert!(
        hush_mf::dp_popularity_counts(&set, &zero, Budget::new(1.0, 1e-6).unwrap(), NoiseSource::seeded(2)).is_err()
    );

    // As a baseline: DP models get it, the twin does not.
    let parts = split(&set, &SplitSpec::Holdout { fraction: 0.2, seed: 4 });
    let options = EvalOptions::default();
    let dp = |epsilon: f64| {
        let privacy = Privacy::Dp {
            budget: Budget::new(epsilon, 1e-6).unwrap(),
            noise: Box::new(NoiseSource::seeded(3)),
            rules: Some(DpRules::default()),
        };
        train(&parts.train, &TrainParams::default(), privacy, &mut |_| {}).unwrap()
    };
    let twin = train(&parts.train, &params, Privacy::NonPrivate, &mut |_| {}).unwrap();
    let of =
        |model: &Model| eval::baselines_for(model, &parts.train, &parts.test, options, NoiseSource::seeded(5)).unwrap();
    assert_eq!(of(&twin).dp_popularity, None);
    let exact_recall = of(&twin).popularity.ranking.recall;
    let loose = of(&dp(1e4)).dp_popularity.unwrap().ranking.recall;
    assert!((loose - exact_recall).abs() < 0.02, "ε 10⁴: {loose} against exact {exact_recall}");
    let tight = of(&dp(0.1)).dp_popularity.unwrap();
    assert_ne!(tight, of(&twin).popularity, "ε 0.1: noisy counts rank differently from exact ones");
}

/// A value that is not a finite number never reaches the released sums.
#[test]
fn a_non_finite_value_is_refused_before_any_release() {
    let mut set = clustered(20, 10, 3, Feedback::Implicit, 1);
    let rows: Vec<Vec<hush_features::Interaction>> = (0..set.n_subjects())
        .map(|s| {
            set.subject_interactions(s)
                .map(|mut i| {
                    if s == 3 {
                        i.value = f32::NAN;
                    }
                    i
                })
                .collect()
        })
        .collect();
    set = hush_features::FeatureSet::from_keyed_rows(
        set.meta.clone(),
        set.items.clone(),
        &rows,
        set.subject_keys.clone(),
    );
    let privacy =
        Privacy::Dp { budget: Budget::new(1.0, 1e-6).unwrap(), noise: Box::new(NoiseSource::seeded(1)), rules: None };
    let err = train(&set, &params(4, 2), privacy, &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("subject 3 has a value that is not a finite number"), "{err}");
}
