//! Linear autoregression on lags and Fourier terms, fitted with linfa-linear.
//!
//! Features for the value at step `t`: an intercept, the lags `1..=lags`, one lag of
//! each confirmed season longer than that, and `fourier` sine/cosine pairs per
//! season. Values are standardised (after a log when all are positive), and the fit
//! is ridge regression: linfa's least squares solves the penalised normal equations
//! `(X'X + λI) b = X'y`, which keeps the many correlated lags stable on short
//! histories. Forecasts are recursive: each step feeds the next.

use linfa::traits::Fit as _;
use linfa::Dataset;
use linfa_linear::LinearRegression;
use ndarray::{Array1, ArrayView2};

use super::{Error, PointFit, PointModel, Result};

thread_local! {
    /// The design matrix of the thread's last linear-lags fit, reused (see
    /// `LinearLags::fit_point`).
    static DESIGN: std::cell::RefCell<Vec<f64>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Linear lags spec.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearLags {
    /// Consecutive lags `1..=lags`.
    pub lags: usize,
    /// Confirmed season lengths in steps.
    pub periods: Vec<usize>,
    /// Fourier pairs per season.
    pub fourier: usize,
    /// Ridge penalty per row of data.
    pub ridge: f64,
    /// Work on log values when every value is positive.
    pub log: bool,
}

/// The feature layout shared by fitting and forecasting.
#[derive(Debug, Clone)]
struct Design {
    lags: Vec<usize>,
    /// (period, harmonic) pairs.
    fourier: Vec<(usize, usize)>,
}

impl Design {
    fn width(&self) -> usize {
        1 + self.lags.len() + 2 * self.fourier.len()
    }

    fn max_lag(&self) -> usize {
        self.lags.iter().copied().max().unwrap_or(0)
    }

    /// Writes the features of the value at absolute step `t_abs` (at `t` in `z`;
    /// `z[t - l]` must exist). The Fourier pair of term `i` at phase `t_abs % p` is
    /// `wave(i, phase)`: [`Design::wave`] itself, or a table of it.
    fn row(
        &self,
        z: &[f64],
        t: usize,
        t_abs: usize,
        out: &mut [f64],
        wave: impl Fn(usize, usize) -> (f64, f64),
    ) {
        out[0] = 1.0;
        let mut j = 1;
        for &l in &self.lags {
            out[j] = z[t - l];
            j += 1;
        }
        for (i, &(p, _)) in self.fourier.iter().enumerate() {
            let (sin, cos) = wave(i, t_abs % p);
            out[j] = sin;
            out[j + 1] = cos;
            j += 2;
        }
    }

    /// The sine and cosine of Fourier term `i` at `phase` (of its period).
    fn wave(&self, i: usize, phase: usize) -> (f64, f64) {
        let (p, k) = self.fourier[i];
        let angle = std::f64::consts::TAU * (k * phase) as f64 / p as f64;
        (angle.sin(), angle.cos())
    }
}

/// A fitted [`LinearLags`].
#[derive(Debug, Clone)]
pub struct FittedLinearLags {
    design: Design,
    coef: Vec<f64>,
    log: bool,
    /// Standardisation of the (log) values.
    centre: f64,
    scale: f64,
    /// Bounds that keep a recursive forecast from running away.
    lower: f64,
    upper: f64,
    /// The last `max_lag` standardised values, as `f32` (a day of 5-minute lags
    /// is 1.1 KiB per series instead of 2.3).
    recent: Vec<f32>,
    /// Absolute step index of the next value (for the Fourier phase).
    next_t: usize,
}

impl LinearLags {
    fn design(&self) -> Design {
        let mut lags: Vec<usize> = (1..=self.lags).collect();
        for &p in &self.periods {
            if p > self.lags {
                lags.push(p);
            }
        }
        let fourier = self
            .periods
            .iter()
            .flat_map(|&p| (1..=self.fourier.min(p / 2)).map(move |k| (p, k)))
            .collect();
        Design { lags, fourier }
    }
}

impl PointFit for LinearLags {
    type Model = FittedLinearLags;

    fn min_len(&self) -> usize {
        let d = self.design();
        d.max_lag() + (2 * d.width()).max(24)
    }

    fn fit_point(&self, history: &[f64]) -> Result<FittedLinearLags> {
        let n = history.len();
        if n < self.min_len() {
            return Err(Error::TooShort {
                needed: self.min_len(),
                got: n,
            });
        }
        let design = self.design();
        let log = self.log && history.iter().all(|&v| v > 0.0);
        let raw: Vec<f64> = if log {
            history.iter().map(|v| v.ln()).collect()
        } else {
            history.to_vec()
        };
        let centre = raw.iter().sum::<f64>() / n as f64;
        let var = raw.iter().map(|v| (v - centre).powi(2)).sum::<f64>() / n as f64;
        let scale = if var > 0.0 { var.sqrt() } else { 1.0 };
        let z: Vec<f64> = raw.iter().map(|v| (v - centre) / scale).collect();
        let (zmin, zmax) = z
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            });
        let range = (zmax - zmin).max(1e-6);

        let m = design.max_lag();
        let w = design.width();
        let rows = n - m;
        let mut y = Array1::<f64>::zeros(rows);
        // A Fourier term depends on the phase `t % p` alone: computed once per phase,
        // not once per row.
        let waves: Vec<Vec<(f64, f64)>> = design
            .fourier
            .iter()
            .enumerate()
            .map(|(i, &(p, _))| (0..p.min(n)).map(|phase| design.wave(i, phase)).collect())
            .collect();
        // The design matrix (a week of 5-minute rows is ~440 KB) is written into a
        // buffer each thread keeps: a fresh one per fit was pages the kernel had to
        // fault in and zero every time, a sixth of a refit cycle's time.
        let (mut gram, rhs) = DESIGN.with(|cell| {
            let mut buf = cell.borrow_mut();
            buf.clear();
            buf.resize(rows * w, 0.0);
            for ((t, row), y_t) in (m..n).zip(buf.chunks_exact_mut(w)).zip(y.iter_mut()) {
                design.row(&z, t, t, row, |i, phase| waves[i][phase]);
                *y_t = z[t];
            }
            let x = ArrayView2::from_shape((rows, w), &buf[..])
                .map_err(|e| Error::Solve(e.to_string()))?;
            Ok::<_, Error>((x.t().dot(&x), x.t().dot(&y)))
        })?;
        let lambda = self.ridge * rows as f64;
        for j in 1..w {
            gram[[j, j]] += lambda;
        }
        // A tiny floor on the intercept keeps the system invertible with ridge 0.
        gram[[0, 0]] += 1e-9 * rows as f64;
        let fitted = LinearRegression::new()
            .with_intercept(false)
            .fit(&Dataset::new(gram, rhs))
            .map_err(|e| Error::Solve(e.to_string()))?;
        let coef: Vec<f64> = fitted.params().iter().copied().collect();
        if coef.iter().any(|c| !c.is_finite()) {
            return Err(Error::Solve("non-finite coefficients".to_string()));
        }
        Ok(FittedLinearLags {
            design,
            coef,
            log,
            centre,
            scale,
            lower: zmin - 0.5 * range,
            upper: zmax + 0.5 * range,
            recent: z[n - m..].iter().map(|&v| v as f32).collect(),
            next_t: n,
        })
    }
}

impl FittedLinearLags {
    fn to_z(&self, v: f64) -> f64 {
        let raw = if self.log {
            // A non-positive value after a log fit sits at the lower bound.
            if v > 0.0 {
                v.ln()
            } else {
                self.lower * self.scale + self.centre
            }
        } else {
            v
        };
        ((raw - self.centre) / self.scale).clamp(self.lower, self.upper)
    }

    fn value_of(&self, z: f64) -> f64 {
        let raw = z * self.scale + self.centre;
        if self.log {
            raw.exp()
        } else {
            raw
        }
    }
}

impl PointModel for FittedLinearLags {
    fn name(&self) -> String {
        format!(
            "linear-lags({} lags, {} fourier)",
            self.design.lags.len(),
            self.design.fourier.len()
        )
    }

    fn update(&mut self, new_points: &[f64]) {
        // Drop first, then append: the lags never outgrow their fitted length, so
        // their allocation stays that size (an append first would double it).
        let m = self.recent.len();
        for &v in new_points {
            let z = self.to_z(v);
            if m > 0 {
                self.recent.drain(..1);
                self.recent.push(z as f32);
            }
            self.next_t += 1;
        }
    }

    fn point(&self, horizon: usize) -> Vec<f64> {
        let m = self.recent.len();
        let mut z: Vec<f64> = Vec::with_capacity(m + horizon);
        z.extend(self.recent.iter().map(|&v| f64::from(v)));
        let mut buf = vec![0.0; self.design.width()];
        let mut out = Vec::with_capacity(horizon);
        for h in 0..horizon {
            let t = m + h;
            let design = &self.design;
            design.row(&z, t, self.next_t + h, &mut buf, |i, phase| {
                design.wave(i, phase)
            });
            let v: f64 = buf.iter().zip(&self.coef).map(|(a, b)| a * b).sum();
            let v = v.clamp(self.lower, self.upper);
            z.push(v);
            out.push(self.value_of(v));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_a_seasonal_signal() {
        let n = 24 * 20;
        let f = |t: usize| 50.0 + 10.0 * (t as f64 * std::f64::consts::TAU / 24.0).sin();
        let y: Vec<f64> = (0..n).map(f).collect();
        let m = LinearLags {
            lags: 24,
            periods: vec![24],
            fourier: 2,
            ridge: 1e-4,
            log: true,
        }
        .fit_point(&y)
        .unwrap();
        let p = m.point(48);
        for (h, v) in p.iter().enumerate() {
            assert!((v - f(n + h)).abs() < 0.5, "step {h}: {v} vs {}", f(n + h));
        }
    }

    #[test]
    fn fits_sharing_the_design_buffer_do_not_see_each_other() {
        let wave = |n: usize, period: f64| -> Vec<f64> {
            (0..n)
                .map(|t| 50.0 + 10.0 * (t as f64 * std::f64::consts::TAU / period).sin())
                .map(|v| v + (v * 7.3).sin())
                .collect()
        };
        let big = LinearLags {
            lags: 24,
            periods: vec![24],
            fourier: 3,
            ridge: 0.1,
            log: false,
        };
        let small = LinearLags {
            lags: 3,
            periods: vec![],
            fourier: 0,
            ridge: 0.1,
            log: false,
        };
        let (a, b) = (wave(24 * 20, 24.0), wave(100, 7.0));
        let first = big.fit_point(&a).unwrap();
        let other = small.fit_point(&b).unwrap();
        let again = big.fit_point(&a).unwrap();
        assert_eq!(first.coef, again.coef);
        assert_eq!(other.coef, small.fit_point(&b).unwrap().coef);
        // And on another thread, with its own buffer, the same.
        let elsewhere = std::thread::spawn(move || big.fit_point(&a).unwrap().coef)
            .join()
            .unwrap();
        assert_eq!(first.coef, elsewhere);
    }
}
