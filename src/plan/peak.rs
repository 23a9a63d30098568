//! Calibration of the served value on the series' own recent outcomes.
//!
//! What an HPA needs from a forecast is not a quantile per step but one number:
//! a value that the largest demand over the coming lead time stays below with
//! probability `q`. So the tracker records, for every forecast it serves from, the
//! largest mean forecast over the lead time (`M`), and once the lead time has
//! passed, the largest observation in it (`Y`). The error `Y − M`, relative to a
//! scale of the forecast, is kept for the last [`WINDOW`] forecasts, and the
//! served quantile is `M + w-quantile_q(errors) × scale(M)`, where recent errors
//! weigh more (half-life [`HALF_LIFE`] forecasts).
//!
//! Three properties follow, each one a fix of what the model's own backtest
//! calibration did badly on real traces:
//! - an empirical quantile is not moved by a few huge errors the way a
//!   root-mean-square scale is, so one burst does not widen the band for the
//!   hours until the next refit;
//! - the band adapts to the current regime within [`HALF_LIFE`] forecasts, and
//!   decays after a burst the same way;
//! - it is calibrated at the served horizon (the lead time, usually one to a few
//!   steps), not pooled with errors many hours ahead.
//!
//! Errors are relative to `scale(M) = max(|M|, level)`, with `level` the mean of
//! the history the model was fitted on: traffic's errors grow with its level above the
//! usual, and the floor keeps near-zero forecasts of a mostly idle series from
//! making huge relative errors. Until [`PRIOR_WEIGHT`] errors exist the offset is
//! blended with the model's own (an honest, wide band for a young series).

use std::collections::VecDeque;

/// Errors kept (one per forecast served from).
pub const WINDOW: usize = 256;

/// Age, in forecasts, at which an error weighs half as much as the newest.
pub const HALF_LIFE: f64 = 48.0;

/// Errors that weigh as much as the model's own calibration in the blend.
pub const PRIOR_WEIGHT: f64 = 16.0;

/// The share of the long-run level below which the error scale does not fall.
pub const LEVEL_SHARE: f64 = 1.0;

/// A forecast waiting for its lead time to pass.
#[derive(Debug, Clone, Copy)]
struct Pending {
    /// The largest mean forecast over the lead time.
    peak_mean: f64,
    /// The error scale when the forecast was made.
    scale: f64,
    /// The largest observation so far (`NAN` while none).
    peak_seen: f64,
    /// Grid points still to come.
    remaining: usize,
}

/// Age, in forecasts, from which an error's weight is exactly 0 (`0.5^(age /
/// HALF_LIFE)` underflows `f64` long before), so older ages need not be told apart.
const AGE_CAP: u32 = 1 << 20;

// Every age from the cap on weighs 0.0, as the true age would.
const _: () = assert!(AGE_CAP as f64 / HALF_LIFE > 1_100.0);

/// Recent peak errors of one series.
#[derive(Debug, Clone)]
pub struct PeakCalibration {
    /// Grid points in the lead time (at least 1).
    horizon: usize,
    /// At most `horizon` + 1 (one forecast per grid point, each for `horizon` points).
    pending: VecDeque<Pending>,
    /// Relative errors, oldest first, with the low 32 bits of the sequence number
    /// they were made at: 8 bytes an error, 2 KiB for a full window where a `u64`
    /// took 4 KiB. An age is the wrapping difference from `seq`'s low bits, exact
    /// because [`PeakCalibration::forecast`] moves errors older than [`AGE_CAP`] up
    /// to that age (where the weight is 0 either way) every [`AGE_CAP`] forecasts,
    /// so no age reaches 2³².
    errors: VecDeque<(f32, u32)>,
    /// Forecasts registered so far.
    seq: u64,
    /// The mean of the history the model was last fitted on (`NAN` before).
    level: f64,
}

impl PeakCalibration {
    /// Calibration for a lead time of `horizon` grid points.
    pub fn new(horizon: usize) -> Self {
        Self {
            horizon: horizon.max(1),
            pending: VecDeque::new(),
            errors: VecDeque::new(),
            seq: 0,
            level: f64::NAN,
        }
    }

    /// Errors recorded (at most [`WINDOW`]).
    pub fn len(&self) -> usize {
        self.errors.len()
    }

    /// True before the first error.
    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// The error scale of a forecast `m`.
    fn scale(&self, m: f64) -> f64 {
        let level = if self.level.is_finite() {
            self.level.abs()
        } else {
            0.0
        };
        m.abs().max(LEVEL_SHARE * level).max(1e-9)
    }

    /// Sets the series' usual level: the mean of the history at a refit. Taken from
    /// the history window (not a running average of everything seen), so that two
    /// replicas that started apart agree once they hold the same window.
    pub fn set_level(&mut self, level: f64) {
        self.level = level;
    }

    /// Takes the next grid point (`NAN` for a gap).
    pub fn observe(&mut self, v: f64) {
        for p in &mut self.pending {
            if v.is_finite() && (p.peak_seen.is_nan() || p.peak_seen < v) {
                p.peak_seen = v;
            }
            p.remaining = p.remaining.saturating_sub(1);
        }
        while self.pending.front().is_some_and(|p| p.remaining == 0) {
            let Some(p) = self.pending.pop_front() else {
                break;
            };
            if p.peak_seen.is_finite() && p.peak_mean.is_finite() {
                let e = (p.peak_seen - p.peak_mean) / p.scale;
                if self.errors.len() >= WINDOW {
                    self.errors.pop_front();
                } else if self.errors.capacity() == 0 {
                    // Exactly the window: growing by doubling would leave 512 slots for 256.
                    self.errors.reserve_exact(WINDOW);
                }
                self.errors.push_back((e as f32, self.seq as u32));
            }
        }
    }

    /// Registers a forecast whose largest mean over the lead time is `peak_mean`,
    /// made after the newest grid point.
    pub fn forecast(&mut self, peak_mean: f64) {
        if !peak_mean.is_finite() {
            return;
        }
        self.seq += 1;
        if self.seq % u64::from(AGE_CAP) == 0 {
            // Ages stay below 2 × AGE_CAP < 2³², so the wrapping difference is exact.
            let now = self.seq as u32;
            for (_, s) in &mut self.errors {
                if now.wrapping_sub(*s) > AGE_CAP {
                    *s = now.wrapping_sub(AGE_CAP);
                }
            }
        }
        let scale = self.scale(peak_mean);
        if self.pending.capacity() == 0 {
            self.pending.reserve_exact(self.horizon + 1);
        }
        self.pending.push_back(Pending {
            peak_mean,
            scale,
            peak_seen: f64::NAN,
            remaining: self.horizon,
        });
    }

    /// The offsets above `peak_mean` at each of `levels` (sorted ascending), from
    /// the recent errors blended with the model's own offsets `prior` (same order):
    /// non-decreasing in the level.
    pub fn offsets(&self, levels: &[f64], peak_mean: f64, prior: &[f64]) -> Vec<f64> {
        let n = self.errors.len() as f64;
        if n == 0.0 {
            return prior.to_vec();
        }
        let mut weighted: Vec<(f64, f64)> = self
            .errors
            .iter()
            .map(|&(e, s)| {
                let age = f64::from((self.seq as u32).wrapping_sub(s));
                (f64::from(e), 0.5f64.powf(age / HALF_LIFE))
            })
            .collect();
        weighted.sort_by(|a, b| a.0.total_cmp(&b.0));
        let total: f64 = weighted.iter().map(|w| w.1).sum();
        let scale = self.scale(peak_mean);
        let w = n / (n + PRIOR_WEIGHT);
        levels
            .iter()
            .zip(prior)
            .map(|(&q, &p)| {
                let emp = weighted_quantile(&weighted, total, q) * scale;
                w * emp + (1.0 - w) * p
            })
            .collect()
    }
}

/// The `q` quantile of sorted `(value, weight)` pairs: the smallest value whose
/// cumulative weight reaches `q` of the total.
fn weighted_quantile(sorted: &[(f64, f64)], total: f64, q: f64) -> f64 {
    let target = q.clamp(0.0, 1.0) * total;
    let mut acc = 0.0;
    for &(v, w) in sorted {
        acc += w;
        if acc >= target {
            return v;
        }
    }
    sorted.last().map_or(0.0, |p| p.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_arrive_after_the_lead_time_and_take_its_peak() {
        let mut c = PeakCalibration::new(3);
        c.observe(10.0);
        c.forecast(10.0);
        c.observe(12.0);
        c.observe(f64::NAN);
        assert!(c.is_empty(), "two of three points seen");
        c.observe(11.0);
        assert_eq!(c.len(), 1);
        // Peak 12 against 10, relative to max(10, level) with no level yet.
        let off = c.offsets(&[0.5], 10.0, &[0.0]);
        let w = 1.0 / (1.0 + PRIOR_WEIGHT);
        assert!((off[0] - w * 2.0).abs() < 1e-6, "{off:?}");
    }

    #[test]
    fn offsets_are_monotone_in_the_level() {
        let mut c = PeakCalibration::new(1);
        for i in 0..300 {
            let v = 100.0 + ((i * 37) % 23) as f64;
            c.forecast(105.0);
            c.observe(v);
        }
        let levels = [0.1, 0.5, 0.9, 0.99];
        let off = c.offsets(&levels, 100.0, &[-5.0, 0.0, 5.0, 9.0]);
        assert!(off.windows(2).all(|w| w[0] <= w[1]), "{off:?}");
    }

    #[test]
    fn a_burst_stops_widening_the_band_after_some_half_lives() {
        let mut c = PeakCalibration::new(1);
        let noise = |i: usize| ((i * 7919) % 11) as f64 - 5.0;
        for i in 0..200 {
            c.forecast(100.0);
            c.observe(100.0 + noise(i));
        }
        let calm = c.offsets(&[0.9], 100.0, &[0.0])[0];
        // A burst of 10 points at 30 times the level.
        for _ in 0..10 {
            c.forecast(100.0);
            c.observe(3000.0);
        }
        let burst = c.offsets(&[0.9], 100.0, &[0.0])[0];
        assert!(burst > 10.0 * calm, "{burst} vs {calm}");
        for i in 0..(4.0 * HALF_LIFE) as usize {
            c.forecast(100.0);
            c.observe(100.0 + noise(i));
        }
        let after = c.offsets(&[0.9], 100.0, &[0.0])[0];
        assert!(after < 1.5 * calm + 1e-9, "{after} vs calm {calm}");
    }

    #[test]
    fn ages_survive_the_sequence_number_wrapping() {
        // The same errors and forecasts, once from 0 and once across 2³²: equal
        // offsets, including an error left far older than the cap.
        let run = |start: u64| {
            let mut c = PeakCalibration::new(1);
            c.seq = start;
            for i in 0..40 {
                c.forecast(100.0);
                c.observe(100.0 + ((i * 13) % 7) as f64);
            }
            let young = c.offsets(&[0.1, 0.5, 0.9], 100.0, &[0.0; 3]);
            // A long run of forecasts without outcomes (gaps): every error ages
            // past the cap and weighs 0, the quantile of equal zero weights.
            for _ in 0..(3 * u64::from(AGE_CAP) + 5) {
                c.forecast(100.0);
                c.observe(f64::NAN);
            }
            let old = c.offsets(&[0.1, 0.5, 0.9], 100.0, &[0.0; 3]);
            c.forecast(100.0);
            c.observe(150.0);
            (young, old, c.offsets(&[0.1, 0.5, 0.9], 100.0, &[0.0; 3]))
        };
        let from_zero = run(0);
        assert_eq!(from_zero, run(u64::from(u32::MAX) - 10));
        assert_eq!(from_zero, run((5 << 32) - u64::from(AGE_CAP) + 3));
        // The new error alone carries weight: the 0.9 offset is it.
        let w = 41.0 / (41.0 + PRIOR_WEIGHT);
        assert!(
            (from_zero.2[2] - w * 50.0).abs() < 1e-9,
            "{:?}",
            from_zero.2
        );
    }
}
