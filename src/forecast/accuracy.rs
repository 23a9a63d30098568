//! Accuracy measures, as the M4 competition defines them.
//!
//! - sMAPE = mean over the horizon of `200 |y - f| / (|y| + |f|)`;
//! - MASE = MAE of the forecast / in-sample MAE of the seasonal naive forecast
//!   with period `m` (`mean |y_t - y_{t-m}|` over `t = m+1..n` of the training data);
//! - pinball loss of a quantile forecast, and interval coverage.
//!
//! Every function takes paired slices and uses the common length; a pair whose
//! sMAPE denominator is 0 (both zero) contributes 0, since the forecast is exact.

/// Mean absolute error.
pub fn mae(actual: &[f64], forecast: &[f64]) -> f64 {
    mean(actual.iter().zip(forecast).map(|(y, f)| (y - f).abs()))
}

/// Symmetric mean absolute percentage error, in percent (0..200).
pub fn smape(actual: &[f64], forecast: &[f64]) -> f64 {
    mean(actual.iter().zip(forecast).map(|(y, f)| {
        let d = y.abs() + f.abs();
        if d == 0.0 {
            0.0
        } else {
            200.0 * (y - f).abs() / d
        }
    }))
}

/// The MASE scale: in-sample MAE of the seasonal naive forecast with period `m`.
/// `NAN` when the training data is not longer than `m`.
pub fn mase_scale(insample: &[f64], m: usize) -> f64 {
    let m = m.max(1);
    if insample.len() <= m {
        return f64::NAN;
    }
    mean((m..insample.len()).map(|t| (insample[t] - insample[t - m]).abs()))
}

/// Mean absolute scaled error with seasonal period `m`.
pub fn mase(insample: &[f64], actual: &[f64], forecast: &[f64], m: usize) -> f64 {
    mae(actual, forecast) / mase_scale(insample, m)
}

/// Mean pinball (quantile) loss of the `q` quantile forecast.
pub fn pinball(actual: &[f64], forecast: &[f64], q: f64) -> f64 {
    mean(actual.iter().zip(forecast).map(|(y, f)| {
        let d = y - f;
        if d >= 0.0 {
            q * d
        } else {
            (q - 1.0) * d
        }
    }))
}

/// Share of actuals at or below the upper bound (coverage of a one-sided interval).
pub fn coverage_below(actual: &[f64], upper: &[f64]) -> f64 {
    mean(
        actual
            .iter()
            .zip(upper)
            .map(|(y, u)| if y <= u { 1.0 } else { 0.0 }),
    )
}

/// Share of actuals inside `[lower, upper]`.
pub fn coverage(actual: &[f64], lower: &[f64], upper: &[f64]) -> f64 {
    mean(
        actual
            .iter()
            .zip(lower.iter().zip(upper))
            .map(|(y, (l, u))| if l <= y && y <= u { 1.0 } else { 0.0 }),
    )
}

fn mean(it: impl Iterator<Item = f64>) -> f64 {
    let (s, c) = it.fold((0.0, 0usize), |(s, c), v| (s + v, c + 1));
    if c == 0 {
        f64::NAN
    } else {
        s / c as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn hand_computed_values() {
        let y = [100.0, 200.0, 50.0];
        let f = [110.0, 180.0, 50.0];
        assert!(close(mae(&y, &f), 10.0));
        // 200*10/210, 200*20/380, 0
        let want = (2000.0 / 210.0 + 4000.0 / 380.0) / 3.0;
        assert!(close(smape(&y, &f), want));
        // In-sample with m = 2: |3-1|, |4-2|, |8-3| -> mean 3.
        let insample = [1.0, 2.0, 3.0, 4.0, 8.0];
        assert!(close(mase_scale(&insample, 2), 3.0));
        assert!(close(mase(&insample, &y, &f, 2), 10.0 / 3.0));
        assert!(close(smape(&[0.0], &[0.0]), 0.0));
    }

    #[test]
    fn pinball_and_coverage() {
        let y = [1.0, 2.0, 3.0, 4.0];
        let f = [2.0, 2.0, 2.0, 2.0];
        // q=0.9: under-forecast costs 0.9 per unit, over-forecast 0.1.
        assert!(close(pinball(&y, &f, 0.9), (0.1 + 0.0 + 0.9 + 1.8) / 4.0));
        assert!(close(coverage_below(&y, &f), 0.5));
        assert!(close(coverage(&y, &[1.5; 4], &[3.0; 4]), 0.5));
    }
}
