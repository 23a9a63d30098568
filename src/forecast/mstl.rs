//! MSTL: multiple seasonal-trend decomposition by loess.
//!
//! Each season is extracted in turn by STL (Cleveland et al. 1990: cycle-subseries
//! loess, a low-pass filter of moving averages and loess, trend loess), iterating
//! over the seasons twice so each sees the others removed. The seasonally adjusted
//! series is forecast by damped Holt ([`super::ets`]); each season repeats its last
//! cycle.

use super::ets::{FittedHoltWinters, HoltWinters};
use super::{Error, PointFit, PointModel, Result, Warm};

/// MSTL spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mstl {
    /// Season lengths in steps, shortest first; empty means damped Holt alone.
    pub periods: Vec<usize>,
}

/// A fitted [`Mstl`].
#[derive(Debug, Clone)]
pub struct FittedMstl {
    /// Per season: its period and its last cycle, oldest first.
    cycles: Vec<(usize, Vec<f32>)>,
    /// Points taken since the fit; shifts the phase of the cycles.
    shift: usize,
    trend: FittedHoltWinters,
}

/// Tricube weight of a distance already divided by the bandwidth.
#[inline]
fn tricube(u: f64) -> f64 {
    if u >= 1.0 {
        0.0
    } else {
        let c = 1.0 - u * u * u;
        c * c * c
    }
}

/// The part of a local linear loess that does not depend on the data: for `n`
/// points, `q` neighbours and position `x`, where the window lies, its tricube
/// weights and the weighted sums of the positions. STL evaluates the same
/// kernels over and over (every cycle-subseries of one length at the same
/// positions; every interior point of a long series alike), so they are built
/// once and applied to each window; applied, a kernel gives exactly what
/// computing it anew would (the same sums in the same order).
struct Kernel {
    /// First point of the window and the point nearest `x`.
    lo: usize,
    centre: usize,
    /// Per window point: the weight, and the weight times its distance from `x`.
    w: Vec<f64>,
    wd: Vec<f64>,
    sw: f64,
    swx: f64,
    swxx: f64,
}

impl Kernel {
    fn new(n: usize, q: usize, x: f64) -> Self {
        let q_eff = q.min(n).max(1);
        let centre = x.round().clamp(0.0, (n - 1) as f64) as usize;
        let lo = centre.saturating_sub((q_eff - 1) / 2).min(n - q_eff);
        let hi = lo + q_eff - 1;
        let mut h = (x - lo as f64).max(hi as f64 - x);
        if q > n {
            h += ((q - n) / 2) as f64;
        }
        let h = h.max(1e-9) * 1.000_001;
        let (mut sw, mut swx, mut swxx) = (0.0, 0.0, 0.0);
        let (mut w, mut wd) = (Vec::with_capacity(q_eff), Vec::with_capacity(q_eff));
        for i in lo..=hi {
            let d = i as f64 - x;
            let wi = tricube(d.abs() / h);
            sw += wi;
            swx += wi * d;
            swxx += wi * d * d;
            w.push(wi);
            wd.push(wi * d);
        }
        Self {
            lo,
            centre,
            w,
            wd,
            sw,
            swx,
            swxx,
        }
    }

    /// The loess value from the window's points (`y[lo..]`, as many as weights)
    /// and the point nearest `x` (the answer when every weight is zero).
    fn apply(&self, window: &[f64], nearest: f64) -> f64 {
        let (mut swy, mut swxy) = (0.0, 0.0);
        for ((&wi, &wdi), &v) in self.w.iter().zip(&self.wd).zip(window) {
            swy += wi * v;
            swxy += wdi * v;
        }
        let (sw, swx, swxx) = (self.sw, self.swx, self.swxx);
        if sw <= 0.0 {
            return nearest;
        }
        let denom = sw * swxx - swx * swx;
        if denom.abs() <= 1e-12 * sw * sw.max(swxx) {
            return swy / sw;
        }
        // Intercept of the weighted line in coordinates centred on x.
        (swy * swxx - swx * swxy) / denom
    }

    /// The kernel applied to the whole series it was built for.
    fn on(&self, y: &[f64]) -> f64 {
        self.apply(&y[self.lo..], y[self.centre])
    }
}

/// Local linear loess of `y` (at positions `0..n`) with `q` neighbours, evaluated
/// at position `x`, which may lie outside the data (for the STL end extensions).
fn loess_at(y: &[f64], q: usize, x: f64) -> f64 {
    Kernel::new(y.len(), q, x).on(y)
}

/// Loess of the whole series, computed every `jump` points and interpolated.
/// Every point whose window lies wholly inside the series has the same kernel,
/// shifted: it is built once.
fn loess(y: &[f64], q: usize, jump: usize) -> Vec<f64> {
    let n = y.len();
    if n == 0 {
        return Vec::new();
    }
    let jump = jump.max(1);
    let half = (q.min(n).max(1) - 1) / 2;
    let interior = (q <= n).then(|| Kernel::new(n, q, half as f64));
    let mut out = vec![0.0; n];
    let mut prev: Option<(usize, f64)> = None;
    let mut i = 0;
    loop {
        let v = match &interior {
            Some(k) if i >= half && i - half + q <= n => k.apply(&y[i - half..], y[i]),
            _ => loess_at(y, q, i as f64),
        };
        out[i] = v;
        if let Some((j, pv)) = prev {
            for (k, slot) in out.iter_mut().enumerate().take(i).skip(j + 1) {
                let w = (k - j) as f64 / (i - j) as f64;
                *slot = pv + (v - pv) * w;
            }
        }
        prev = Some((i, v));
        if i == n - 1 {
            break;
        }
        i = (i + jump).min(n - 1);
    }
    out
}

/// Moving average of width `w`: `len - w + 1` values.
fn moving_average(a: &[f64], w: usize) -> Vec<f64> {
    if a.len() < w || w == 0 {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(a.len() - w + 1);
    let mut sum: f64 = a[..w].iter().sum();
    out.push(sum / w as f64);
    for i in w..a.len() {
        sum += a[i] - a[i - w];
        out.push(sum / w as f64);
    }
    out
}

fn next_odd(x: f64) -> usize {
    let v = x.ceil().max(3.0) as usize;
    if v % 2 == 0 {
        v + 1
    } else {
        v
    }
}

/// One STL decomposition (no robustness iterations): returns the seasonal component.
pub(crate) fn stl_seasonal(y: &[f64], period: usize, seasonal_window: usize) -> Vec<f64> {
    let n = y.len();
    let p = period;
    let ns = seasonal_window;
    let nl = next_odd(p as f64);
    let nt = next_odd(1.5 * p as f64 / (1.0 - 1.5 / ns as f64));
    let mut trend = vec![0.0; n];
    let mut seasonal = vec![0.0; n];
    let mut cycle = vec![0.0; n + 2 * p];
    let mut sub = Vec::with_capacity(n / p + 1);
    // The subseries' kernels by subseries length (they come in one or two
    // lengths), one per position from one before the first to one after the last.
    let mut kernels: Vec<(usize, Vec<Kernel>)> = Vec::new();
    for _ in 0..2 {
        // Cycle-subseries smoothing, extended one season at each end.
        for phase in 0..p.min(n) {
            sub.clear();
            sub.extend((phase..n).step_by(p).map(|t| y[t] - trend[t]));
            let k = sub.len();
            let at = match kernels.iter().position(|(len, _)| *len == k) {
                Some(at) => at,
                None => {
                    let built = (-1..=k as isize)
                        .map(|pos| Kernel::new(k, ns, pos as f64))
                        .collect();
                    kernels.push((k, built));
                    kernels.len() - 1
                }
            };
            for (pos, kernel) in (-1..=k as isize).zip(&kernels[at].1) {
                let t = phase as isize + pos * p as isize + p as isize;
                cycle[t as usize] = kernel.on(&sub);
            }
        }
        // Low-pass filter of the cycle-subseries, removed from them.
        let low = moving_average(&moving_average(&moving_average(&cycle, p), p), 3);
        let low = loess(&low, nl, nl.div_ceil(10));
        for t in 0..n {
            seasonal[t] = cycle[t + p] - low[t];
        }
        let adjusted: Vec<f64> = (0..n).map(|t| y[t] - seasonal[t]).collect();
        trend = loess(&adjusted, nt, nt.div_ceil(10));
    }
    seasonal
}

impl PointFit for Mstl {
    type Model = FittedMstl;

    fn min_len(&self) -> usize {
        self.periods.first().map_or(3, |p| 2 * p).max(3)
    }

    fn fit_point(&self, history: &[f64]) -> Result<FittedMstl> {
        self.fit_from(history, None)
    }
}

impl Mstl {
    /// Fits as [`PointFit::fit_point`], the trend's parameter search starting from
    /// `warm` (see [`HoltWinters::fit_from`]).
    ///
    /// # Errors
    /// As [`PointFit::fit_point`].
    pub fn fit_from(&self, history: &[f64], warm: Option<Warm>) -> Result<FittedMstl> {
        let n = history.len();
        if n < self.min_len() {
            return Err(Error::TooShort {
                needed: self.min_len(),
                got: n,
            });
        }
        // Only seasons with two full cycles in the history are decomposed.
        let periods: Vec<usize> = self
            .periods
            .iter()
            .copied()
            .filter(|&p| p >= 2 && n >= 2 * p)
            .collect();
        let mut components = vec![vec![0.0; n]; periods.len()];
        let mut adjusted = history.to_vec();
        let iterations = if periods.len() > 1 { 2 } else { 1 };
        for _ in 0..iterations {
            for (i, &p) in periods.iter().enumerate() {
                for t in 0..n {
                    adjusted[t] += components[i][t];
                }
                components[i] = stl_seasonal(&adjusted, p, 7 + 4 * i);
                for t in 0..n {
                    adjusted[t] -= components[i][t];
                }
            }
        }
        let trend = HoltWinters {
            period: 0,
            damped: true,
        }
        .fit_from(&adjusted, warm)?;
        let cycles = periods
            .iter()
            .zip(components)
            .map(|(&p, c)| (p, c[n - p..].iter().map(|&v| v as f32).collect()))
            .collect();
        Ok(FittedMstl {
            cycles,
            shift: 0,
            trend,
        })
    }
}

impl FittedMstl {
    fn season_at(&self, k: usize) -> f64 {
        self.cycles
            .iter()
            .map(|(p, c)| f64::from(c[(self.shift + k) % p]))
            .sum()
    }
}

impl PointModel for FittedMstl {
    fn name(&self) -> String {
        let ps: Vec<String> = self.cycles.iter().map(|(p, _)| p.to_string()).collect();
        format!("mstl({})", ps.join(","))
    }

    fn update(&mut self, new_points: &[f64]) {
        for &v in new_points {
            let s = self.season_at(0);
            self.trend.update(&[v - s]);
            self.shift += 1;
        }
    }

    fn point(&self, horizon: usize) -> Vec<f64> {
        self.trend
            .point(horizon)
            .into_iter()
            .enumerate()
            .map(|(k, v)| v + self.season_at(k))
            .collect()
    }

    fn warm(&self, member: usize) -> Option<Warm> {
        self.trend.warm(member)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loess_reproduces_a_line() {
        let y: Vec<f64> = (0..50).map(|t| 3.0 + 2.0 * t as f64).collect();
        for x in [-1.0, 0.0, 10.0, 49.0, 50.0] {
            assert!((loess_at(&y, 7, x) - (3.0 + 2.0 * x)).abs() < 1e-9);
        }
        let s = loess(&y, 15, 4);
        for (t, v) in s.iter().enumerate() {
            assert!((v - y[t]).abs() < 1e-9);
        }
    }

    #[test]
    fn stl_separates_two_seasons_from_a_trend() {
        let n = 24 * 7 * 4;
        let daily = |t: usize| 5.0 * (t as f64 * std::f64::consts::TAU / 24.0).sin();
        let weekly = |t: usize| 3.0 * (t as f64 * std::f64::consts::TAU / 168.0).cos();
        let y: Vec<f64> = (0..n)
            .map(|t| 100.0 + 0.05 * t as f64 + daily(t) + weekly(t))
            .collect();
        let f = Mstl {
            periods: vec![24, 168],
        }
        .fit_point(&y)
        .unwrap();
        let p = f.point(48);
        for (k, v) in p.iter().enumerate() {
            let t = n + k;
            let want = 100.0 + 0.05 * t as f64 + daily(t) + weekly(t);
            assert!((v - want).abs() < 1.0, "step {k}: {v} vs {want}");
        }
    }

    #[test]
    fn shared_kernels_give_what_each_window_computed_anew_gives() {
        let y: Vec<f64> = (0..301)
            .map(|t| ((t * 7919) % 97) as f64 * 0.37 + (t as f64 * 0.05).sin() * 20.0)
            .collect();
        for q in [1, 2, 6, 7, 50, 51, 300, 301, 400] {
            for jump in [1, 5, 31] {
                let got = loess(&y, q, jump);
                // Every evaluated point from its own kernel, interpolated alike.
                let n = y.len();
                let mut want = vec![0.0; n];
                let mut points: Vec<usize> = (0..n).step_by(jump).collect();
                if points.last() != Some(&(n - 1)) {
                    points.push(n - 1);
                }
                for (a, &i) in points.iter().enumerate() {
                    want[i] = Kernel::new(n, q, i as f64).on(&y);
                    if a > 0 {
                        let j = points[a - 1];
                        for k in j + 1..i {
                            let w = (k - j) as f64 / (i - j) as f64;
                            want[k] = want[j] + (want[i] - want[j]) * w;
                        }
                    }
                }
                assert_eq!(got, want, "q {q}, jump {jump}");
            }
        }
    }
}
