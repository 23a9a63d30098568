//! Quantiles from a model's own out-of-sample errors.
//!
//! A rolling-origin backtest refits the model at the last few window starts of the
//! history and records the error at each horizon step. The spread of those errors
//! per step (smoothed across neighbouring steps and never shrinking with the
//! horizon) scales one pooled distribution of standardised errors, so the
//! quantile of level `q` at step `h` is `mean[h] + z_q * scale[h]`. Because `z_q`
//! grows with `q` and the scale is positive, quantiles are monotone in `q` at every
//! step by construction.

use super::{
    checked_quantiles, empirical_quantile, Forecast, ModelReport, PointModel, Predict,
    QuantilePath, Result, Warm,
};

/// The per-step spread and the pooled standardised errors.
#[derive(Debug, Clone, PartialEq)]
pub struct Calibration {
    /// Error scale at steps `1..=len` (non-decreasing).
    scale: Vec<f64>,
    /// Standardised errors, sorted.
    z: Vec<f64>,
}

impl Calibration {
    /// Builds the calibration from backtest errors: `errors[w][h]` is the error
    /// (actual − forecast) of window `w` at step `h + 1`; `NAN` where the actual
    /// was a gap. `fallback_sigma` is the one-step error scale used when there are
    /// no errors at all (a random-walk widening, normal shape).
    pub fn from_errors(errors: &[Vec<f64>], horizon: usize, fallback_sigma: f64) -> Self {
        let horizon = horizon.max(1);
        let mut sum_sq = vec![0.0; horizon];
        let mut count = vec![0usize; horizon];
        for window in errors {
            for (h, &e) in window.iter().enumerate().take(horizon) {
                if e.is_finite() {
                    sum_sq[h] += e * e;
                    count[h] += 1;
                }
            }
        }
        if count.iter().all(|&c| c == 0) {
            return Self::fallback(horizon, fallback_sigma);
        }
        // Few windows make each step's spread noisy: pool neighbouring steps.
        let half = (horizon / 4).max(1);
        let mut scale: Vec<f64> = (0..horizon)
            .map(|h| {
                let lo = h.saturating_sub(half);
                let hi = (h + half).min(horizon - 1);
                let s: f64 = sum_sq[lo..=hi].iter().sum();
                let c: usize = count[lo..=hi].iter().sum();
                if c > 0 {
                    (s / c as f64).sqrt()
                } else {
                    f64::NAN
                }
            })
            .collect();
        // Fill steps with no data from the previous step, then never shrink.
        let first = scale.iter().copied().find(|v| v.is_finite()).unwrap_or(0.0);
        let mut running = first;
        for s in &mut scale {
            if s.is_finite() {
                running = running.max(*s);
            }
            *s = running;
        }
        let floor = scale.iter().copied().fold(0.0, f64::max) * 1e-6 + 1e-12;
        scale.iter_mut().for_each(|s| *s = s.max(floor));
        let mut z: Vec<f64> = errors
            .iter()
            .flat_map(|w| w.iter().take(horizon).enumerate())
            .filter(|(_, e)| e.is_finite())
            .map(|(h, e)| e / scale[h])
            .collect();
        z.sort_by(f64::total_cmp);
        Self { scale, z }
    }

    /// Normal errors widening like a random walk, for histories too short to backtest.
    fn fallback(horizon: usize, sigma: f64) -> Self {
        let sigma = if sigma.is_finite() && sigma > 0.0 {
            sigma
        } else {
            1e-12
        };
        let scale = (1..=horizon).map(|h| sigma * (h as f64).sqrt()).collect();
        // Standard normal quantiles on a fine grid stand in for observed errors.
        let z = (1..200)
            .map(|i| normal_quantile(i as f64 / 200.0))
            .collect();
        Self { scale, z }
    }

    /// The error scale at step `h` (0-based); beyond the calibrated horizon it
    /// keeps growing like a random walk.
    fn scale_at(&self, h: usize) -> f64 {
        let n = self.scale.len();
        if h < n {
            self.scale[h]
        } else {
            self.scale[n - 1] * ((h + 1) as f64 / n as f64).sqrt()
        }
    }

    /// The offset of quantile `q` from the mean at step `h` (0-based).
    pub fn offset(&self, h: usize, q: f64) -> f64 {
        conformal_quantile(&self.z, q) * self.scale_at(h)
    }
}

/// The `q` quantile of `n` sorted errors with the split-conformal finite-sample
/// correction: the level moves away from the median by the share one new outcome
/// adds (`q (n + 1) / n` above the median, symmetric below), so an interval from
/// few windows still covers its level when errors are exchangeable.
pub(crate) fn conformal_quantile(sorted: &[f64], q: f64) -> f64 {
    let n = sorted.len() as f64;
    if n < 1.0 {
        return 0.0;
    }
    let adjusted = if q >= 0.5 {
        q * (n + 1.0) / n
    } else {
        1.0 - (1.0 - q) * (n + 1.0) / n
    };
    empirical_quantile(sorted, adjusted.clamp(0.0, 1.0))
}

/// Inverse of the standard normal distribution function (Acklam's rational
/// approximation, relative error below 1.2e-9).
pub(crate) fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    let p = p.clamp(1e-12, 1.0 - 1e-12);
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < 0.02425 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.02425 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

/// A point model with calibrated quantiles: what [`super::Fit::fit`] gives.
pub struct Calibrated {
    model: Box<dyn PointModel>,
    calibration: Calibration,
    report: ModelReport,
    /// The history never went below zero, so neither do forecasts.
    non_negative: bool,
}

impl Calibrated {
    /// Wraps a fitted point model with its calibration and report.
    pub fn new(
        model: Box<dyn PointModel>,
        calibration: Calibration,
        report: ModelReport,
        non_negative: bool,
    ) -> Self {
        Self {
            model,
            calibration,
            report,
            non_negative,
        }
    }
}

impl Calibrated {
    /// Its quantile calibration (a reused selection keeps it).
    pub(crate) fn calibration(&self) -> &Calibration {
        &self.calibration
    }

    /// Its report, by reference.
    pub(crate) fn report_ref(&self) -> &ModelReport {
        &self.report
    }

    /// The point model (a reused selection's refit starts from its parameters).
    pub(crate) fn point_model(&self) -> &dyn PointModel {
        self.model.as_ref()
    }
}

impl std::fmt::Debug for Calibrated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Calibrated")
            .field("model", &self.model.name())
            .field("report", &self.report)
            .finish()
    }
}

impl Predict for Calibrated {
    fn name(&self) -> String {
        self.model.name()
    }

    fn update(&mut self, new_points: &[f64]) {
        for &v in new_points {
            // A gap takes the model's own one-step forecast, so it moves nothing.
            let v = if v.is_finite() {
                v
            } else {
                self.model.point(1).first().copied().unwrap_or(0.0)
            };
            self.model.update(&[v]);
        }
    }

    fn predict(&self, horizon: usize, quantiles: &[f64]) -> Result<Forecast> {
        let qs = checked_quantiles(quantiles)?;
        let floor = if self.non_negative {
            0.0
        } else {
            f64::NEG_INFINITY
        };
        let mean: Vec<f64> = self
            .model
            .point(horizon)
            .into_iter()
            .map(|v| v.max(floor))
            .collect();
        let quantiles = qs
            .into_iter()
            .map(|q| QuantilePath {
                q,
                values: mean
                    .iter()
                    .enumerate()
                    .map(|(h, m)| (m + self.calibration.offset(h, q)).max(floor))
                    .collect(),
            })
            .collect();
        Ok(Forecast { mean, quantiles })
    }

    fn report(&self) -> ModelReport {
        self.report.clone()
    }
}

/// Window starts of a rolling-origin backtest: the last `windows` blocks of
/// `horizon` steps, newest first, each leaving at least `min_len` points to fit on.
pub(crate) fn origins(n: usize, horizon: usize, windows: usize, min_len: usize) -> Vec<usize> {
    (1..=windows)
        .map_while(|k| n.checked_sub(k * horizon))
        .filter(|&o| o >= min_len.max(1))
        .collect()
}

/// Errors of forecasts against the raw history (gaps give `NAN`).
pub(crate) fn errors(history: &[f64], origins: &[usize], forecasts: &[Vec<f64>]) -> Vec<Vec<f64>> {
    origins
        .iter()
        .zip(forecasts)
        .map(|(&o, f)| {
            f.iter()
                .enumerate()
                .map(|(h, v)| history.get(o + h).map_or(f64::NAN, |a| a - v))
                .collect()
        })
        .collect()
}

/// Mean absolute value of the finite errors (`INFINITY` when there are none).
pub(crate) fn mean_abs(errors: &[Vec<f64>]) -> f64 {
    let (s, c) = errors
        .iter()
        .flatten()
        .filter(|e| e.is_finite())
        .fold((0.0, 0usize), |(s, c), e| (s + e.abs(), c + 1));
    if c == 0 {
        f64::INFINITY
    } else {
        s / c as f64
    }
}

/// In-sample MAE of the seasonal naive forecast with `period` (the MASE scale).
pub(crate) fn naive_scale(filled: &[f64], period: usize) -> f64 {
    let p = period.max(1);
    if filled.len() <= p {
        return f64::NAN;
    }
    let s: f64 = (p..filled.len())
        .map(|t| (filled[t] - filled[t - p]).abs())
        .sum();
    s / (filled.len() - p) as f64
}

impl PointModel for Box<dyn PointModel> {
    fn name(&self) -> String {
        (**self).name()
    }
    fn update(&mut self, new_points: &[f64]) {
        (**self).update(new_points);
    }
    fn point(&self, horizon: usize) -> Vec<f64> {
        (**self).point(horizon)
    }
    fn warm(&self, member: usize) -> Option<Warm> {
        (**self).warm(member)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_quantiles_are_right() {
        assert!(normal_quantile(0.5).abs() < 1e-9);
        assert!((normal_quantile(0.9) - 1.281_551_565_5).abs() < 1e-6);
        assert!((normal_quantile(0.01) + 2.326_347_874).abs() < 1e-6);
    }

    #[test]
    fn scale_grows_and_quantiles_follow_errors() {
        // Errors that grow with the step: the scale must grow too.
        let errors: Vec<Vec<f64>> = (0..4)
            .map(|w| {
                (0..12)
                    .map(|h| (h + 1) as f64 * if w % 2 == 0 { 1.0 } else { -1.0 })
                    .collect()
            })
            .collect();
        let c = Calibration::from_errors(&errors, 12, 1.0);
        assert!(c.scale_at(11) > c.scale_at(0));
        assert!(c.offset(5, 0.9) > 0.0 && c.offset(5, 0.1) < 0.0);
        assert!(c.scale_at(30) > c.scale_at(11));
    }
}
