//! Exponential smoothing: additive Holt-Winters with an optionally damped trend
//! (ETS(A,Ad,A) in error-correction form), and without a season (ETS(A,Ad,N)) when
//! the period is below 2.
//!
//! The smoothing parameters minimise the one-step squared error, found by a small
//! Nelder–Mead search over a bounded reparametrisation, so every trial point is a
//! valid model (`beta < alpha`, `gamma < 1 - alpha`, `phi` in [0.8, 0.98]).

use super::{Error, PointFit, PointModel, Result};

/// Holt-Winters spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoltWinters {
    /// Season length in steps; below 2 means no season (damped Holt).
    pub period: usize,
    /// Damp the trend (`phi` fitted in [0.8, 0.98]) instead of extrapolating it.
    pub damped: bool,
}

/// Smoothing parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    /// Level smoothing.
    pub alpha: f64,
    /// Trend smoothing.
    pub beta: f64,
    /// Season smoothing.
    pub gamma: f64,
    /// Trend damping (1 = undamped).
    pub phi: f64,
}

/// The filter state after the last observation.
#[derive(Debug, Clone)]
struct State {
    level: f64,
    trend: f64,
    season: Vec<f64>,
    /// The next season slot (observations processed modulo the period), kept
    /// incrementally: a division per step was most of a fit's time.
    t: usize,
}

impl State {
    fn init(y: &[f64], period: usize) -> Self {
        if period >= 2 && y.len() >= 2 * period {
            let m = period as f64;
            let l0 = y[..period].iter().sum::<f64>() / m;
            let l1 = y[period..2 * period].iter().sum::<f64>() / m;
            let b0 = (l1 - l0) / m;
            let mid = (m - 1.0) / 2.0;
            let season = (0..period)
                .map(|i| y[i] - (l0 + (i as f64 - mid) * b0))
                .collect();
            // The level at time -1, so the first step forecasts y[0].
            State {
                level: l0 - (mid + 1.0) * b0,
                trend: b0,
                season,
                t: 0,
            }
        } else {
            let k = (y.len().saturating_sub(1)).min(10);
            let b0 = if k > 0 { (y[k] - y[0]) / k as f64 } else { 0.0 };
            State {
                level: y.first().copied().unwrap_or(0.0) - b0,
                trend: b0,
                season: Vec::new(),
                t: 0,
            }
        }
    }

    /// Takes one observation; returns the one-step error.
    #[inline]
    fn step(&mut self, y: f64, p: &Params) -> f64 {
        let m = self.season.len();
        let damped = p.phi * self.trend;
        if m > 0 {
            let slot = self.t;
            let si = self.season[slot];
            let e = y - (self.level + damped + si);
            self.level += damped + p.alpha * e;
            self.trend = damped + p.beta * e;
            self.season[slot] = si + p.gamma * e;
            self.t = if slot + 1 == m { 0 } else { slot + 1 };
            e
        } else {
            let e = y - (self.level + damped);
            self.level += damped + p.alpha * e;
            self.trend = damped + p.beta * e;
            e
        }
    }

    fn forecast(&self, horizon: usize, p: &Params) -> Vec<f64> {
        let m = self.season.len();
        let mut damp = 0.0;
        let mut pow = 1.0;
        (0..horizon)
            .map(|h| {
                pow *= p.phi;
                damp += pow;
                let s = if m > 0 {
                    self.season[(self.t + h) % m]
                } else {
                    0.0
                };
                self.level + damp * self.trend + s
            })
            .collect()
    }
}

/// A fitted [`HoltWinters`].
#[derive(Debug, Clone)]
pub struct FittedHoltWinters {
    params: Params,
    state: State,
    damped: bool,
}

impl FittedHoltWinters {
    /// The fitted smoothing parameters.
    pub fn params(&self) -> Params {
        self.params
    }
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn params_from(x: &[f64], seasonal: bool, damped: bool) -> Params {
    let alpha = 0.01 + 0.98 * sigmoid(x[0]);
    let beta = alpha * 0.98 * sigmoid(x[1]);
    let gamma = if seasonal {
        (1.0 - alpha) * 0.98 * sigmoid(x[2])
    } else {
        0.0
    };
    let phi = if damped {
        0.8 + 0.18 * sigmoid(x[3])
    } else {
        1.0
    };
    Params {
        alpha,
        beta,
        gamma,
        phi,
    }
}

fn sse(y: &[f64], init: &State, p: &Params) -> f64 {
    let mut s = init.clone();
    let mut total = 0.0;
    for &v in y {
        let e = s.step(v, p);
        total += e * e;
    }
    if total.is_finite() {
        total
    } else {
        f64::MAX
    }
}

/// Minimises `f` from `x0` with the Nelder–Mead simplex method, at most
/// `max_evals` evaluations. Small and dependency-free: the problems here have at
/// most a handful of parameters.
pub(crate) fn nelder_mead(
    f: &mut dyn FnMut(&[f64]) -> f64,
    x0: &[f64],
    step: f64,
    max_evals: usize,
) -> Vec<f64> {
    let d = x0.len();
    let mut simplex: Vec<(Vec<f64>, f64)> = Vec::with_capacity(d + 1);
    simplex.push((x0.to_vec(), f(x0)));
    for i in 0..d {
        let mut x = x0.to_vec();
        x[i] += step;
        let v = f(&x);
        simplex.push((x, v));
    }
    let mut evals = d + 1;
    while evals < max_evals {
        simplex.sort_by(|a, b| a.1.total_cmp(&b.1));
        let best = simplex[0].1;
        let worst = simplex[d].1;
        if (worst - best).abs() <= 1e-10 * (best.abs() + 1e-12) {
            break;
        }
        let centroid: Vec<f64> = (0..d)
            .map(|j| simplex[..d].iter().map(|(x, _)| x[j]).sum::<f64>() / d as f64)
            .collect();
        let towards = |t: f64| -> Vec<f64> {
            centroid
                .iter()
                .zip(&simplex[d].0)
                .map(|(c, w)| c + t * (w - c))
                .collect()
        };
        let xr = towards(-1.0);
        let fr = f(&xr);
        evals += 1;
        if fr < simplex[0].1 {
            let xe = towards(-2.0);
            let fe = f(&xe);
            evals += 1;
            simplex[d] = if fe < fr { (xe, fe) } else { (xr, fr) };
        } else if fr < simplex[d - 1].1 {
            simplex[d] = (xr, fr);
        } else {
            let xc = if fr < worst {
                towards(-0.5)
            } else {
                towards(0.5)
            };
            let fc = f(&xc);
            evals += 1;
            if fc < worst.min(fr) {
                simplex[d] = (xc, fc);
            } else {
                let x_best = simplex[0].0.clone();
                for item in simplex.iter_mut().skip(1) {
                    let x: Vec<f64> = x_best
                        .iter()
                        .zip(&item.0)
                        .map(|(b, v)| b + 0.5 * (v - b))
                        .collect();
                    let v = f(&x);
                    *item = (x, v);
                }
                evals += d;
            }
        }
    }
    simplex.sort_by(|a, b| a.1.total_cmp(&b.1));
    simplex.swap_remove(0).0
}

/// Evaluations the parameter search may spend. On M4 Hourly, 60 gives the same
/// accuracy as 120 (sMAPE within 0.01) at two thirds of the fitting time.
const MAX_EVALS: usize = 60;

impl PointFit for HoltWinters {
    type Model = FittedHoltWinters;

    fn min_len(&self) -> usize {
        if self.period >= 2 {
            2 * self.period + 2
        } else {
            3
        }
    }

    fn fit_point(&self, history: &[f64]) -> Result<FittedHoltWinters> {
        if history.len() < self.min_len() {
            return Err(Error::TooShort {
                needed: self.min_len(),
                got: history.len(),
            });
        }
        let seasonal = self.period >= 2;
        let init = State::init(history, if seasonal { self.period } else { 0 });
        // Start at alpha ~ 0.3, beta ~ 0.1 alpha, gamma ~ 0.1, phi ~ 0.95.
        let x0 = [-1.0, -2.2, -2.0, 1.4];
        let mut objective = |x: &[f64]| sse(history, &init, &params_from(x, seasonal, self.damped));
        let x = nelder_mead(&mut objective, &x0, 1.0, MAX_EVALS);
        let params = params_from(&x, seasonal, self.damped);
        let mut state = init;
        for &v in history {
            state.step(v, &params);
        }
        if !(state.level.is_finite() && state.trend.is_finite()) {
            return Err(Error::Solve("Holt-Winters state diverged".to_string()));
        }
        Ok(FittedHoltWinters {
            params,
            state,
            damped: self.damped,
        })
    }
}

impl PointModel for FittedHoltWinters {
    fn name(&self) -> String {
        let m = self.state.season.len();
        match (m, self.damped) {
            (0, true) => "holt-damped".to_string(),
            (0, false) => "holt".to_string(),
            (m, true) => format!("holt-winters-damped({m})"),
            (m, false) => format!("holt-winters({m})"),
        }
    }

    fn update(&mut self, new_points: &[f64]) {
        for &v in new_points {
            self.state.step(v, &self.params);
        }
    }

    fn point(&self, horizon: usize) -> Vec<f64> {
        self.state.forecast(horizon, &self.params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nelder_mead_finds_a_quadratic_minimum() {
        let mut f = |x: &[f64]| (x[0] - 1.5).powi(2) + 3.0 * (x[1] + 0.5).powi(2);
        let x = nelder_mead(&mut f, &[0.0, 0.0], 1.0, 400);
        assert!(
            (x[0] - 1.5).abs() < 1e-3 && (x[1] + 0.5).abs() < 1e-3,
            "{x:?}"
        );
    }

    #[test]
    fn damped_holt_follows_a_line() {
        let y: Vec<f64> = (0..100).map(|t| 10.0 + 0.5 * t as f64).collect();
        let f = HoltWinters {
            period: 0,
            damped: false,
        }
        .fit_point(&y)
        .unwrap();
        let p = f.point(5);
        for (h, v) in p.iter().enumerate() {
            let want = 10.0 + 0.5 * (100 + h) as f64;
            assert!((v - want).abs() < 0.05, "step {h}: {v} vs {want}");
        }
    }
}
