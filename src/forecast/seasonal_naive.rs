//! Seasonal naive: the next season repeats the last one (or the mean of the last
//! few). With a period of 1 it is the naive last-value forecast.

use super::{Error, PointFit, PointModel, Result};

/// Seasonal naive spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeasonalNaive {
    /// The season length in steps (1: repeat the last value).
    pub period: usize,
    /// How many past seasons are averaged at each phase (1: the classic model).
    pub seasons: usize,
}

/// A fitted [`SeasonalNaive`]: the last `period * seasons` values, as `f32` (a
/// day of 5-minute points is 1.1 KiB per series instead of 2.3).
#[derive(Debug, Clone)]
pub struct FittedSeasonalNaive {
    period: usize,
    seasons: usize,
    tail: Vec<f32>,
}

impl PointFit for SeasonalNaive {
    type Model = FittedSeasonalNaive;

    fn min_len(&self) -> usize {
        self.period.max(1)
    }

    fn fit_point(&self, history: &[f64]) -> Result<FittedSeasonalNaive> {
        let period = self.period.max(1);
        if history.len() < period {
            return Err(Error::TooShort {
                needed: period,
                got: history.len(),
            });
        }
        // Use as many whole seasons as the history holds, up to the requested count.
        let seasons = self.seasons.clamp(1, history.len() / period);
        Ok(FittedSeasonalNaive {
            period,
            seasons,
            tail: history[history.len() - period * seasons..]
                .iter()
                .map(|&v| v as f32)
                .collect(),
        })
    }
}

impl PointModel for FittedSeasonalNaive {
    fn name(&self) -> String {
        if self.seasons == 1 {
            format!("seasonal-naive({})", self.period)
        } else {
            format!("seasonal-naive({}x{})", self.period, self.seasons)
        }
    }

    fn update(&mut self, new_points: &[f64]) {
        // Drop first, then append: the tail never outgrows its fitted length, so its
        // allocation stays that size (an append first would double it, per series).
        let keep = self.period * self.seasons;
        let new = &new_points[new_points.len().saturating_sub(keep)..];
        let excess = (self.tail.len() + new.len()).saturating_sub(keep);
        self.tail.drain(..excess.min(self.tail.len()));
        self.tail.extend(new.iter().map(|&v| v as f32));
    }

    fn point(&self, horizon: usize) -> Vec<f64> {
        let n = self.tail.len();
        let p = self.period;
        (0..horizon)
            .map(|h| {
                let phase = h % p;
                let sum: f64 = (0..self.seasons)
                    .map(|k| f64::from(self.tail[n - p * (k + 1) + phase]))
                    .sum();
                sum / self.seasons as f64
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_the_last_season() {
        let y: Vec<f64> = (0..48).map(|i| (i % 24) as f64 + (i / 24) as f64).collect();
        let f = SeasonalNaive {
            period: 24,
            seasons: 1,
        }
        .fit_point(&y)
        .unwrap();
        let p = f.point(30);
        assert_eq!(p[0], 1.0);
        assert_eq!(p[25], 2.0);
        let f2 = SeasonalNaive {
            period: 24,
            seasons: 2,
        }
        .fit_point(&y)
        .unwrap();
        assert_eq!(f2.point(1)[0], 0.5);
    }

    #[test]
    fn update_equals_refit() {
        let y: Vec<f64> = (0..100).map(|i| ((i * 7) % 13) as f64).collect();
        let spec = SeasonalNaive {
            period: 12,
            seasons: 2,
        };
        let mut a = spec.fit_point(&y[..80]).unwrap();
        a.update(&y[80..]);
        let b = spec.fit_point(&y).unwrap();
        assert_eq!(a.point(24), b.point(24));
    }
}
