//! Model-level tests: every model recovers a known signal, updates agree with
//! refits, quantiles are monotone and calibrated.

use proptest::prelude::*;

use super::*;

const HOUR_MS: i64 = 3_600_000;

/// A deterministic uniform generator (SplitMix64), so tests are seeded.
struct Rng(u64);

impl Rng {
    fn uniform(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-12);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// Sine with a daily period plus a trend, without noise.
fn signal(t: usize) -> f64 {
    100.0 + 0.05 * t as f64 + 10.0 * (t as f64 * std::f64::consts::TAU / 24.0).sin()
}

fn noisy(n: usize, sd: f64, seed: u64) -> Vec<f64> {
    let mut rng = Rng(seed);
    (0..n).map(|t| signal(t) + sd * rng.normal()).collect()
}

fn assert_close(got: &[f64], want: impl Fn(usize) -> f64, tol: f64, what: &str) {
    let mae = got
        .iter()
        .enumerate()
        .map(|(h, v)| (v - want(h)).abs())
        .sum::<f64>()
        / got.len() as f64;
    assert!(
        mae < tol,
        "{what}: MAE {mae} against the true signal, tolerance {tol}"
    );
}

#[test]
fn every_named_model_recovers_sine_plus_trend() {
    let n = 24 * 21;
    let y = noisy(n, 0.5, 7);
    for name in ModelSpec::names() {
        let spec = ModelSpec::by_name(name).unwrap().with_horizon(24);
        let fitted = spec.fit(&y, HOUR_MS).unwrap();
        let fc = fitted.predict(24, &[0.1, 0.5, 0.9]).unwrap();
        // The seasonal naive copies one noisy season and lags the trend by it
        // (0.05 per step: 1.2 for a day; the weekly one has no week here, so a day).
        let tol = if name.starts_with("seasonal-naive") {
            2.5
        } else {
            1.2
        };
        assert_close(&fc.mean, |h| signal(n + h), tol, name);
    }
}

#[test]
fn update_matches_a_refit_on_the_longer_history() {
    let n = 24 * 21;
    let y = noisy(n + 12, 0.5, 3);
    for name in ModelSpec::names() {
        let spec = ModelSpec::by_name(name).unwrap().with_horizon(24);
        let mut updated = spec.fit(&y[..n], HOUR_MS).unwrap();
        updated.update(&y[n..]);
        let refit = spec.fit(&y, HOUR_MS).unwrap();
        let a = updated.predict(24, &[]).unwrap().mean;
        let b = refit.predict(24, &[]).unwrap().mean;
        assert_close(&a, |h| b[h], 1.0, name);
    }
}

#[test]
fn gaps_in_updates_do_not_break_the_model() {
    let y = noisy(24 * 10, 0.5, 5);
    let spec = ModelSpec::by_name("auto").unwrap();
    let mut m = spec.fit(&y, HOUR_MS).unwrap();
    m.update(&[f64::NAN, signal(240), f64::NAN]);
    let fc = m.predict(12, &[0.5, 0.9]).unwrap();
    assert!(fc.mean.iter().all(|v| v.is_finite()));
}

#[test]
fn p90_covers_about_ninety_percent_of_a_noisy_signal() {
    // Many independent series: share of outcomes below the P90 forecast.
    let (mut below, mut total) = (0usize, 0usize);
    for seed in 0..40 {
        let y = noisy(24 * 14 + 24, 2.0, 100 + seed);
        let n = 24 * 14;
        let spec = ModelSpec::by_name("auto").unwrap().with_horizon(24);
        let fc = spec
            .fit(&y[..n], HOUR_MS)
            .unwrap()
            .predict(24, &[0.9])
            .unwrap();
        let p90 = fc.quantile(0.9).unwrap();
        for h in 0..24 {
            total += 1;
            below += usize::from(y[n + h] <= p90[h]);
        }
    }
    let share = below as f64 / total as f64;
    assert!((0.8..=0.97).contains(&share), "P90 coverage {share}");
}

#[test]
fn short_history_falls_back_to_simple_models_and_says_so() {
    let y: Vec<f64> = (0..30).map(|t| 5.0 + t as f64).collect();
    let m = ModelSpec::by_name("auto")
        .unwrap()
        .fit(&y, HOUR_MS)
        .unwrap();
    let r = m.report();
    assert!(r.fell_back_to_simple);
    assert!(r.periods.is_empty());
    assert!(m
        .predict(5, &[0.5])
        .unwrap()
        .mean
        .iter()
        .all(|v| v.is_finite()));
}

#[test]
fn auto_reports_its_choice_and_scores() {
    let y = noisy(24 * 21, 0.5, 9);
    let m = ModelSpec::by_name("auto")
        .unwrap()
        .with_horizon(24)
        .fit(&y, HOUR_MS)
        .unwrap();
    let r = m.report();
    assert!(r.scores.len() >= 3, "{r:?}");
    assert_eq!(r.periods, vec![24]);
    assert!(r.backtest_windows > 0);
    assert!(!r.model.is_empty());
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let spec = ModelSpec::by_name("auto").unwrap();
    assert!(matches!(
        spec.fit(&[f64::NAN; 10], HOUR_MS),
        Err(Error::TooShort { .. })
    ));
    assert!(spec.fit(&[], HOUR_MS).is_err());
    let m = spec.fit(&noisy(100, 1.0, 1), HOUR_MS).unwrap();
    assert!(matches!(m.predict(3, &[1.5]), Err(Error::BadQuantile(_))));
    assert!(matches!(
        ModelSpec::by_name("prophet"),
        Err(Error::UnknownModel { .. })
    ));
    let err = ModelSpec::from_yaml(
        "name: x\nmodel:\n  type: linear-lags\n  lags: 0\n  fourier: 1\n  ridge: 1\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("model.lags"), "{err}");
    assert!(ModelSpec::from_yaml("name: x\nmodel:\n  type: mstl\n  colour: red\n").is_err());
}

#[test]
fn every_bundled_spec_parses() {
    for name in ModelSpec::names() {
        assert_eq!(ModelSpec::by_name(name).unwrap().name(), name);
    }
}

#[test]
fn auto_is_resolved_into_its_candidates_once() {
    let auto = ModelSpec::by_name("auto").unwrap();
    let ModelKind::Auto {
        candidates,
        combine,
    } = auto.model()
    else {
        panic!("auto is not an auto spec: {auto:?}");
    };
    let names: Vec<&str> = candidates.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "seasonal-naive",
            "seasonal-naive-weekly",
            "holt-winters-damped",
            "mstl-daily-weekly",
            "linear-lags"
        ]
    );
    assert_eq!(*combine, Combine::BestOrMean { top: 3 });
    for m in candidates {
        let ModelKind::Single(family) = ModelSpec::by_name(&m.name).unwrap().model().clone() else {
            panic!("{} is not a single model", m.name);
        };
        assert_eq!(m.family, family, "{}", m.name);
    }
    // A candidate that does not exist is an error when the spec is read, not
    // when it is first fitted.
    let err = ModelSpec::from_yaml(
        "name: x\nmodel:\n  type: auto\n  candidates: [mstl-daily-weekly, prophet]\n  combine: {mode: best}\n",
    )
    .unwrap_err();
    assert!(
        matches!(&err, Error::UnknownModel { name, .. } if name == "prophet"),
        "{err}"
    );
}

#[test]
fn fill_gaps_interpolates() {
    let y = [f64::NAN, 1.0, f64::NAN, 3.0, f64::NAN];
    assert_eq!(fill_gaps(&y), vec![1.0, 1.0, 2.0, 3.0, 3.0]);
}

#[test]
fn periods_follow_the_step() {
    assert_eq!(candidate_periods(300_000), vec![288, 2016]);
    assert_eq!(candidate_periods(3_600_000), vec![24, 168]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn quantiles_are_monotone_at_every_step(
        values in proptest::collection::vec(0.0f64..1000.0, 30..200),
        qs in proptest::collection::vec(0.01f64..0.99, 1..6),
        horizon in 1usize..40,
        model in 0usize..6,
    ) {
        let names = ModelSpec::names();
        let spec = ModelSpec::by_name(names[model % names.len()]).unwrap();
        let fitted = spec.fit(&values, 300_000).unwrap();
        let fc = fitted.predict(horizon, &qs).unwrap();
        prop_assert_eq!(fc.mean.len(), horizon);
        for w in fc.quantiles.windows(2) {
            prop_assert!(w[0].q < w[1].q);
            for h in 0..horizon {
                prop_assert!(w[0].values[h] <= w[1].values[h],
                    "step {}: q{} = {} > q{} = {}", h, w[0].q, w[0].values[h], w[1].q, w[1].values[h]);
            }
        }
    }
}

/// A flat-ish per-minute series around 500 with noise of sd 20.
fn flatish(n: usize, seed: u64) -> Vec<f64> {
    let mut rng = Rng(seed);
    (0..n).map(|_| 500.0 + 20.0 * rng.normal()).collect()
}

/// The band a young series gets must be centred on its data: the 10 % quantile
/// at or below the mean, the 90 % at or above it, and the peak of the 90 %
/// quantile over a short lead within a few MAEs of the last observations.
fn assert_centred(history: &[f64], label: &str) {
    let spec = ModelSpec::by_name("auto").unwrap().with_horizon(120);
    let model = spec.fit(history, 60_000).unwrap();
    let fc = model.predict(72, &[0.1, 0.5, 0.9, 0.95]).unwrap();
    let q10 = fc.quantile(0.1).unwrap();
    let q90 = fc.quantile(0.9).unwrap();
    for h in 0..72 {
        assert!(
            q10[h] <= fc.mean[h] + 1e-9,
            "{label}: q0.1 {} above the mean {} at {h}",
            q10[h],
            fc.mean[h]
        );
        assert!(
            q90[h] >= fc.mean[h] - 1e-9,
            "{label}: q0.9 below the mean at {h}"
        );
    }
    let recent: Vec<f64> = history
        .iter()
        .rev()
        .filter(|v| v.is_finite())
        .take(30)
        .copied()
        .collect();
    let level = recent.iter().sum::<f64>() / recent.len() as f64;
    let mae = recent.iter().map(|v| (v - level).abs()).sum::<f64>() / recent.len() as f64;
    let served = q90[..3].iter().copied().fold(f64::MIN, f64::max);
    assert!(
        (served - level).abs() <= 4.0 * mae,
        "{label}: served {served} vs level {level} (MAE {mae})"
    );
    assert!(
        (fc.mean[0] - level).abs() <= 2.0 * mae,
        "{label}: mean {} vs level {level}",
        fc.mean[0]
    );
}

#[test]
fn a_stray_early_point_does_not_shift_a_young_series_band() {
    // One sample an hour before the rest (as a fresh queue or a new Prometheus
    // target gives), far below the level, then 72 minutes of data.
    let mut h = vec![40.0];
    h.extend(std::iter::repeat_n(f64::NAN, 60));
    h.extend(flatish(72, 11));
    assert_centred(&h, "stray point");
    // The same data without the stray point.
    assert_centred(&flatish(72, 11), "no stray point");
}

#[test]
fn a_series_that_starts_inside_the_window_gets_a_centred_band() {
    // The tracker's window is a day; the series exists for the last hour only.
    let mut h = vec![f64::NAN; 1380];
    h.extend(flatish(60, 5));
    assert_centred(&h, "leading gap");
}

#[test]
fn usable_history_skips_stubs_behind_long_gaps_only() {
    let mut h = vec![f64::NAN; 5];
    h.extend([1.0, 2.0]);
    h.extend(vec![f64::NAN; 20]);
    h.extend(vec![3.0; 40]);
    assert_eq!(
        usable_start(&h, 12),
        27,
        "leading gap and a stub of two points"
    );
    // A short gap keeps everything; a long one behind a long stretch too.
    let mut g = vec![1.0; 30];
    g.extend(vec![f64::NAN; 5]);
    g.extend(vec![2.0; 30]);
    assert_eq!(usable_start(&g, 12), 0);
    let mut g = vec![1.0; 30];
    g.extend(vec![f64::NAN; 50]);
    g.extend(vec![2.0; 30]);
    assert_eq!(usable_start(&g, 12), 0);
}
