//! Fit and predict throughput of the forecast models: one series and a batch.
//!
//! Data are generated before timing (a seeded daily/weekly signal with noise, the
//! length of a long M4 hourly series); only fitting or predicting is measured.

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};
use prescale::forecast::{Fit, ModelSpec, Predict};

const HOUR_MS: i64 = 3_600_000;
const LEN: usize = 960;
const HORIZON: usize = 48;

/// A seeded hourly series: daily and weekly cycles, a trend and noise.
fn series(seed: u64) -> Vec<f64> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..LEN)
        .map(|t| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let noise = (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
            let tf = t as f64;
            1000.0
                + 0.2 * tf
                + 200.0 * (tf * std::f64::consts::TAU / 24.0).sin()
                + 80.0 * (tf * std::f64::consts::TAU / 168.0).cos()
                + 40.0 * noise
        })
        .collect()
}

fn spec(name: &str) -> ModelSpec {
    match ModelSpec::by_name(name) {
        Ok(s) => s.with_horizon(HORIZON),
        Err(e) => panic!("bundled model {name}: {e}"),
    }
}

fn fit_one(c: &mut Criterion) {
    let y = series(1);
    let mut group = c.benchmark_group("fit_one_series");
    for name in ModelSpec::names() {
        let spec = spec(name);
        group.bench_function(name, |b| {
            b.iter(|| black_box(&spec).fit(black_box(&y), HOUR_MS))
        });
    }
    group.finish();
}

fn predict_one(c: &mut Criterion) {
    let y = series(2);
    let mut group = c.benchmark_group("predict_one_series");
    for name in ModelSpec::names() {
        let fitted = match spec(name).fit(&y, HOUR_MS) {
            Ok(f) => f,
            Err(e) => panic!("fit {name}: {e}"),
        };
        group.bench_function(name, |b| {
            b.iter(|| fitted.predict(black_box(HORIZON), black_box(&[0.5, 0.9])))
        });
    }
    group.finish();
}

fn batch(c: &mut Criterion) {
    let batch: Vec<Vec<f64>> = (0..64).map(series).collect();
    let auto = spec("auto");
    let mut group = c.benchmark_group("batch_64_series");
    group.sample_size(10);
    group.bench_function("fit_auto", |b| {
        b.iter(|| {
            batch
                .iter()
                .map(|y| auto.fit(y, HOUR_MS).is_ok())
                .filter(|ok| *ok)
                .count()
        })
    });
    group.bench_function("predict_auto", |b| {
        b.iter_batched(
            || {
                batch
                    .iter()
                    .filter_map(|y| auto.fit(y, HOUR_MS).ok())
                    .collect::<Vec<_>>()
            },
            |fitted| {
                fitted
                    .iter()
                    .filter_map(|f| f.predict(HORIZON, &[0.5, 0.9]).ok())
                    .count()
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, fit_one, predict_one, batch);
criterion_main!(benches);
