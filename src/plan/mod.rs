//! From forecasts to decisions: what an HPA should see.
//!
//! Pure and synchronous; the engine and the backtester call the same functions.

pub mod choice;
pub mod nodepool;
pub mod tracker;

pub use tracker::{Decision, Tracker, TrackerSettings};

use crate::forecast::Forecast;

/// How a signal's forecast becomes the value served to an HPA.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ServePolicy {
    /// How many steps ahead new capacity must be planned for (lead time / step), at least 1.
    pub lead_steps: usize,
    /// Which forecast quantile to serve, in (0, 1).
    pub quantile: f64,
    /// Never serve less than the latest observation (predictive scaling only brings
    /// capacity forward; it never scales below what a reactive HPA would do).
    pub reactive_floor: bool,
}

/// The value an HPA should see: the largest `quantile` forecast over the next
/// `lead_steps` steps, and not below `latest` when the floor is on.
///
/// Falls back to the mean path when the quantile was not forecast, and to `latest`
/// when the forecast is empty. Non-finite forecast values are ignored. Returns
/// `None` only when there is neither a usable forecast nor a latest observation.
pub fn served_value(forecast: &Forecast, policy: &ServePolicy, latest: Option<f64>) -> Option<f64> {
    let path = forecast
        .quantile(policy.quantile)
        .unwrap_or(forecast.mean.as_slice());
    let lead = policy.lead_steps.max(1).min(path.len());
    let peak = path[..lead]
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(None, |acc: Option<f64>, v| {
            Some(acc.map_or(v, |a| a.max(v)))
        });
    let latest = latest.filter(|v| v.is_finite());
    match (peak, latest) {
        (Some(p), Some(l)) if policy.reactive_floor => Some(p.max(l)),
        (Some(p), _) => Some(p),
        (None, l) => l,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forecast::QuantilePath;

    fn fc(mean: &[f64], q90: &[f64]) -> Forecast {
        Forecast {
            mean: mean.to_vec(),
            quantiles: vec![QuantilePath {
                q: 0.9,
                values: q90.to_vec(),
            }],
        }
    }

    fn policy(lead_steps: usize, reactive_floor: bool) -> ServePolicy {
        ServePolicy {
            lead_steps,
            quantile: 0.9,
            reactive_floor,
        }
    }

    #[test]
    fn serves_the_peak_quantile_within_the_lead_time() {
        let f = fc(&[1.0, 2.0, 3.0, 9.0], &[2.0, 5.0, 4.0, 50.0]);
        assert_eq!(served_value(&f, &policy(3, true), Some(1.0)), Some(5.0));
    }

    #[test]
    fn floor_keeps_the_latest_observation() {
        let f = fc(&[1.0, 2.0], &[2.0, 3.0]);
        assert_eq!(served_value(&f, &policy(2, true), Some(10.0)), Some(10.0));
        assert_eq!(served_value(&f, &policy(2, false), Some(10.0)), Some(3.0));
    }

    #[test]
    fn falls_back_to_mean_then_latest() {
        let f = Forecast {
            mean: vec![4.0, 6.0],
            quantiles: vec![],
        };
        assert_eq!(served_value(&f, &policy(5, false), None), Some(6.0));
        let empty = Forecast {
            mean: vec![],
            quantiles: vec![],
        };
        assert_eq!(served_value(&empty, &policy(5, true), Some(2.0)), Some(2.0));
        assert_eq!(served_value(&empty, &policy(5, true), None), None);
    }
}
