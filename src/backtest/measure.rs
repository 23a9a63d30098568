//! What a run is measured by: cost and shortfall ([`Measures`]) and the accuracy of
//! the forecasts it served ([`ForecastAccuracy`]). `sim` fills them in, `report`
//! and `frontier` read them.

use serde::Serialize;

use crate::plan::Decision;

/// What one strategy cost on one trace (or summed over traces) and how often it
/// fell short of demand.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Measures {
    /// Integral of (min(demand, maxReplicas) − ready replicas) where positive, in
    /// replica-minutes; demand in replicas is value / capacity per replica.
    pub under_provisioned_replica_minutes: f64,
    /// Time during which demand (up to maxReplicas) exceeded ready capacity, in minutes.
    pub under_provisioned_minutes: f64,
    /// Integral of demand beyond maxReplicas, in replica-minutes: what no strategy
    /// could serve, kept out of the shortfall.
    pub beyond_max_replica_minutes: f64,
    /// Time during which demand exceeded maxReplicas, in minutes.
    pub beyond_max_minutes: f64,
    /// Integral of demand over observed time, in replica-minutes (the scale that
    /// shortfall is a share of).
    pub demand_replica_minutes: f64,
    /// Integral of placed (starting or ready) pods, in replica-hours.
    pub replica_hours: f64,
    /// Integral of nodes (ready or being provisioned), in node-hours; 0 without a
    /// node pool.
    pub node_hours: f64,
    /// How many times the HPA changed the replica count.
    pub scale_events: u64,
    /// The largest shortfall of ready replicas below demand, in replicas.
    pub peak_shortfall_replicas: f64,
}

impl Measures {
    /// Adds another trace's measures (peaks take the maximum).
    pub fn add(&mut self, o: &Measures) {
        self.under_provisioned_replica_minutes += o.under_provisioned_replica_minutes;
        self.under_provisioned_minutes += o.under_provisioned_minutes;
        self.beyond_max_replica_minutes += o.beyond_max_replica_minutes;
        self.beyond_max_minutes += o.beyond_max_minutes;
        self.demand_replica_minutes += o.demand_replica_minutes;
        self.replica_hours += o.replica_hours;
        self.node_hours += o.node_hours;
        self.scale_events += o.scale_events;
        self.peak_shortfall_replicas = self.peak_shortfall_replicas.max(o.peak_shortfall_replicas);
    }
}

/// How well the predictive run's forecasts matched what followed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ForecastAccuracy {
    /// The model of the last decision (`last-value` if it never left warm-up).
    pub model: String,
    /// The quantile served.
    pub quantile: f64,
    /// Mean absolute error of the mean forecast over horizons 1..=lead, scaled by
    /// the trace's mean absolute one-step change; `None` without forecasts or for a
    /// constant trace.
    pub mase: Option<f64>,
    /// Share of outcomes at or below the served quantile's forecast (0.9 is
    /// calibrated for a P90); `None` without forecasts.
    pub coverage: Option<f64>,
    /// Forecast points scored.
    pub scored: usize,
    /// Grid steps at which the tracker was still warming up (served the latest value).
    pub warming_steps: usize,
    /// The last fit error, if fitting failed at some point.
    pub last_fit_error: Option<String>,
}

/// Accumulates forecast errors during a predictive run.
#[derive(Debug, Clone)]
pub(crate) struct AccuracyAcc {
    quantile: f64,
    naive_scale: Option<f64>,
    abs_err: f64,
    covered: usize,
    scored: usize,
    warming_steps: usize,
    model: String,
    last_fit_error: Option<String>,
    /// The trace (scoring compares forecasts with what followed them).
    actual: Vec<f64>,
}

impl AccuracyAcc {
    pub(crate) fn new(raw: &[f64], quantile: f64) -> Self {
        let diffs: Vec<f64> = raw
            .windows(2)
            .map(|w| (w[1] - w[0]).abs())
            .filter(|d| d.is_finite())
            .collect();
        let scale = if diffs.is_empty() {
            None
        } else {
            Some(diffs.iter().sum::<f64>() / diffs.len() as f64).filter(|s| *s > 0.0)
        };
        Self {
            quantile,
            naive_scale: scale,
            abs_err: 0.0,
            covered: 0,
            scored: 0,
            warming_steps: 0,
            model: "last-value".to_string(),
            last_fit_error: None,
            actual: raw.to_vec(),
        }
    }

    /// Scores the decision made at grid point `idx` against the points after it.
    pub(crate) fn record(&mut self, idx: usize, d: &Decision) {
        self.model.clone_from(&d.model);
        if d.fit_error.is_some() {
            self.last_fit_error.clone_from(&d.fit_error);
        }
        let Some(fc) = d.forecast.as_ref().filter(|_| !d.warming) else {
            self.warming_steps += 1;
            return;
        };
        let q = fc.quantile(self.quantile);
        for (h, mean) in fc.mean.iter().enumerate() {
            let Some(&y) = self.actual.get(idx + 1 + h) else {
                break;
            };
            if !y.is_finite() || !mean.is_finite() {
                continue;
            }
            self.abs_err += (y - mean).abs();
            if q.and_then(|q| q.get(h)).is_some_and(|&qv| y <= qv) {
                self.covered += 1;
            }
            self.scored += 1;
        }
    }

    pub(crate) fn finish(self) -> ForecastAccuracy {
        let n = self.scored;
        ForecastAccuracy {
            model: self.model,
            quantile: self.quantile,
            mase: self
                .naive_scale
                .filter(|_| n > 0)
                .map(|s| self.abs_err / n as f64 / s),
            coverage: (n > 0).then(|| self.covered as f64 / n as f64),
            scored: n,
            warming_steps: self.warming_steps,
            last_fit_error: self.last_fit_error,
        }
    }
}
