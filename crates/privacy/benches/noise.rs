//! Gaussian samples per second: hush's sampler (ChaCha8, one 32-bit word per
//! draw, block-generated ziggurat) against `rand_distr::StandardNormal` on
//! the same generator and on the standard one, and against OpenDP's exact
//! discrete Gaussian, in one run. `cargo bench -p hush-privacy --bench noise`
// `criterion_group!` defines a public function without a doc comment.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hush_privacy::{NoiseSource, StreamId};
use rand::{Rng, SeedableRng};
use rand_distr::{Normal, StandardNormal};

fn samplers(c: &mut Criterion) {
    const N: u64 = 10_000;
    let mut group = c.benchmark_group("gaussian_samples");
    group.throughput(Throughput::Elements(N));

    let mut hush = NoiseSource::seeded(1).stream(StreamId { release: 1, iteration: 0, index: 0 });
    let mut buffer = vec![0.0f64; N as usize];
    group.bench_function("hush_noise_source", |b| {
        b.iter(|| {
            hush.add_gaussian(&mut buffer, 1.5);
            buffer[0]
        })
    });

    let mut narrow = vec![0.0f32; N as usize];
    group.bench_function("hush_noise_source_f32", |b| {
        b.iter(|| {
            hush.fill_gaussian_f32(&mut narrow, 1.5);
            narrow[0]
        })
    });

    let mut chacha = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    group.bench_function("rand_distr_standard_normal_chacha8", |b| {
        b.iter(|| {
            for v in buffer.iter_mut() {
                *v += 1.5 * chacha.sample::<f64, _>(StandardNormal);
            }
            buffer[0]
        })
    });

    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let normal = Normal::new(0.0, 1.5).expect("a valid normal");
    group.bench_function("rand_distr_normal_stdrng", |b| {
        b.iter(|| {
            for v in buffer.iter_mut() {
                *v += rng.sample(normal);
            }
            buffer[0]
        })
    });
    group.finish();

    // OpenDP's exact sampler is far slower; measure it on fewer draws.
    const M: u64 = 200;
    let mut group = c.benchmark_group("gaussian_samples_exact");
    group.throughput(Throughput::Elements(M));
    group.sample_size(10);
    let scale = dashu::rational::RBig::try_from(1.5f64).expect("a finite scale");
    group.bench_function("opendp_discrete_gaussian", |b| {
        b.iter(|| {
            for _ in 0..M {
                let draw = opendp::traits::samplers::sample_discrete_gaussian(scale.clone()).expect("a sample");
                std::hint::black_box(draw);
            }
        })
    });
    // hush's port of the same algorithm over a seeded ChaCha8 stream: what
    // count releases use (one draw per item, not per matrix entry).
    group.bench_function("hush_discrete_gaussian", |b| {
        b.iter(|| {
            for _ in 0..M {
                std::hint::black_box(hush.discrete_gaussian(1.5));
            }
        })
    });
    group.finish();
}

criterion_group!(benches, samplers);
criterion_main!(benches);
