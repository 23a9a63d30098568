//! Reports of backtests: terminal tables and JSON of the measures, summed over traces.

use std::fmt::Write as _;

use serde::Serialize;

use super::measure::{ForecastAccuracy, Measures};
use super::sim::{Strategy, TraceResult};

/// Measures summed over traces, per strategy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Aggregate {
    /// Traces summed.
    pub traces: usize,
    /// Reactive HPA.
    pub reactive: Measures,
    /// Predictive (prescale).
    pub predictive: Measures,
    /// Perfect foresight.
    pub oracle: Measures,
    /// Mean of the traces' forecast MASE, where defined.
    pub mean_forecast_mase: Option<f64>,
    /// Mean of the traces' quantile coverage, where defined.
    pub mean_forecast_coverage: Option<f64>,
    /// Change of under-provisioned replica-minutes, predictive vs reactive, in %
    /// (negative is better).
    pub predictive_under_provisioned_change_pct: Option<f64>,
    /// Change of replica-hours, predictive vs reactive, in %.
    pub predictive_replica_hours_change_pct: Option<f64>,
    /// The per-trace change of under-provisioned replica-minutes, averaged with
    /// every trace weighing the same (the sums above are dominated by the traces
    /// with the largest spikes), in %.
    pub mean_trace_under_provisioned_change_pct: Option<f64>,
    /// The per-trace change of replica-hours, averaged over traces, in %.
    pub mean_trace_replica_hours_change_pct: Option<f64>,
}

fn change_pct(new: f64, old: f64) -> Option<f64> {
    (old > 0.0).then(|| (new - old) / old * 100.0)
}

fn mean(v: impl Iterator<Item = f64>) -> Option<f64> {
    let (s, n) = v.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    (n > 0).then(|| s / n as f64)
}

impl Aggregate {
    /// Sums the results of several traces.
    pub fn new(results: &[TraceResult]) -> Self {
        let sum = |s: Strategy| {
            let mut m = Measures::default();
            for r in results.iter().filter_map(|t| t.run(s)) {
                m.add(&r.measures);
            }
            m
        };
        let (reactive, predictive, oracle) = (
            sum(Strategy::Reactive),
            sum(Strategy::Predictive),
            sum(Strategy::Oracle),
        );
        let accuracies = || {
            results
                .iter()
                .filter_map(|t| t.run(Strategy::Predictive))
                .filter_map(|r| r.forecast.as_ref())
        };
        let per_trace = |f: fn(&Measures) -> f64| {
            mean(results.iter().filter_map(|t| {
                let (r, p) = (t.run(Strategy::Reactive)?, t.run(Strategy::Predictive)?);
                change_pct(f(&p.measures), f(&r.measures))
            }))
        };
        Self {
            traces: results.len(),
            mean_trace_under_provisioned_change_pct: per_trace(|m| {
                m.under_provisioned_replica_minutes
            }),
            mean_trace_replica_hours_change_pct: per_trace(|m| m.replica_hours),
            reactive,
            predictive,
            oracle,
            mean_forecast_mase: mean(accuracies().filter_map(|a| a.mase)),
            mean_forecast_coverage: mean(accuracies().filter_map(|a| a.coverage)),
            predictive_under_provisioned_change_pct: change_pct(
                predictive.under_provisioned_replica_minutes,
                reactive.under_provisioned_replica_minutes,
            ),
            predictive_replica_hours_change_pct: change_pct(
                predictive.replica_hours,
                reactive.replica_hours,
            ),
        }
    }

    /// The measures of one strategy.
    pub fn get(&self, s: Strategy) -> &Measures {
        match s {
            Strategy::Reactive => &self.reactive,
            Strategy::Predictive => &self.predictive,
            Strategy::Oracle => &self.oracle,
        }
    }
}

/// A duration in milliseconds as `30s`, `5m`, `1h`, `1h30m`.
pub fn human_ms(ms: i64) -> String {
    if ms % 1000 != 0 || ms < 1000 {
        return format!("{ms}ms");
    }
    let s = ms / 1000;
    let (h, m, s) = (s / 3600, s / 60 % 60, s % 60);
    let mut out = String::new();
    if h > 0 {
        let _ = write!(out, "{h}h");
    }
    if m > 0 {
        let _ = write!(out, "{m}m");
    }
    if s > 0 || out.is_empty() {
        let _ = write!(out, "{s}s");
    }
    out
}

fn measure_rows(out: &mut String, rows: &[(Strategy, &Measures)], nodes: bool, base: &Measures) {
    let _ = writeln!(
        out,
        "  {:<11} {:>14} {:>10} {:>13} {:>11} {:>8} {:>10}   {:>9} {:>9}",
        "strategy",
        "under rep-min",
        "under min",
        "replica-h",
        "node-h",
        "scales",
        "peak short",
        "Δunder",
        "Δrep-h"
    );
    for (s, m) in rows {
        let node_h = if nodes {
            format!("{:.1}", m.node_hours)
        } else {
            "-".to_string()
        };
        let delta = |new: f64, old: f64| {
            change_pct(new, old).map_or("-".to_string(), |p| format!("{p:+.1}%"))
        };
        let (du, dr) = if *s == Strategy::Reactive {
            (String::new(), String::new())
        } else {
            (
                delta(
                    m.under_provisioned_replica_minutes,
                    base.under_provisioned_replica_minutes,
                ),
                delta(m.replica_hours, base.replica_hours),
            )
        };
        let _ = writeln!(
            out,
            "  {:<11} {:>14.1} {:>10.1} {:>13.1} {:>11} {:>8} {:>10.2}   {:>9} {:>9}",
            s.as_str(),
            m.under_provisioned_replica_minutes,
            m.under_provisioned_minutes,
            m.replica_hours,
            node_h,
            m.scale_events,
            m.peak_shortfall_replicas,
            du,
            dr
        );
    }
}

/// The terminal table of one trace.
pub fn trace_table(r: &TraceResult, nodes: bool) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "{} — {} points every {}, capacity {} per replica",
        r.name,
        r.points,
        human_ms(r.step_ms),
        fmt_num(r.capacity_per_replica)
    );
    if let Some(a) = r
        .run(Strategy::Predictive)
        .and_then(|p| p.forecast.as_ref())
    {
        let _ = write!(
            out,
            "; model {}, MASE {}, q{:.2} coverage {}",
            a.model,
            a.mase.map_or("-".to_string(), |v| format!("{v:.2}")),
            a.quantile,
            a.coverage
                .map_or("-".to_string(), |v| format!("{:.1}%", v * 100.0))
        );
    }
    out.push('\n');
    let rows: Vec<(Strategy, &Measures)> =
        r.runs.iter().map(|x| (x.strategy, &x.measures)).collect();
    let base = r
        .run(Strategy::Reactive)
        .map(|x| x.measures)
        .unwrap_or_default();
    measure_rows(&mut out, &rows, nodes, &base);
    out
}

/// The terminal table of the aggregate over all traces.
pub fn aggregate_table(a: &Aggregate, nodes: bool) -> String {
    let mut out = String::new();
    let _ = write!(out, "aggregate over {} trace(s)", a.traces);
    if let Some(m) = a.mean_forecast_mase {
        let _ = write!(out, "; mean MASE {m:.2}");
    }
    if let Some(c) = a.mean_forecast_coverage {
        let _ = write!(out, ", mean coverage {:.1}%", c * 100.0);
    }
    if let (Some(u), Some(r)) = (
        a.mean_trace_under_provisioned_change_pct,
        a.mean_trace_replica_hours_change_pct,
    ) {
        let _ = write!(
            out,
            "; predictive vs reactive per trace on average: under-provisioned {u:+.1}%, replica-hours {r:+.1}%"
        );
    }
    out.push('\n');
    let rows: Vec<(Strategy, &Measures)> = Strategy::ALL.iter().map(|&s| (s, a.get(s))).collect();
    measure_rows(&mut out, &rows, nodes, &a.reactive);
    out
}

fn fmt_num(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.4}")
    }
}

#[derive(Serialize)]
struct JsonTrace<'a> {
    name: &'a str,
    step_s: f64,
    points: usize,
    capacity_per_replica: f64,
    reactive: &'a Measures,
    predictive: &'a Measures,
    oracle: &'a Measures,
    forecast: Option<&'a ForecastAccuracy>,
}

/// The JSON report: settings, one entry per trace and the aggregate, each holding
/// the measures per strategy.
pub fn json(
    results: &[TraceResult],
    aggregate: &Aggregate,
    settings: serde_json::Value,
) -> serde_json::Value {
    let empty = Measures::default();
    let traces: Vec<JsonTrace<'_>> = results
        .iter()
        .map(|r| {
            let m = |s| r.run(s).map_or(&empty, |x| &x.measures);
            JsonTrace {
                name: &r.name,
                step_s: r.step_ms as f64 / 1000.0,
                points: r.points,
                capacity_per_replica: r.capacity_per_replica,
                reactive: m(Strategy::Reactive),
                predictive: m(Strategy::Predictive),
                oracle: m(Strategy::Oracle),
                forecast: r
                    .run(Strategy::Predictive)
                    .and_then(|x| x.forecast.as_ref()),
            }
        })
        .collect();
    serde_json::json!({
        "settings": settings,
        "traces": traces,
        "aggregate": aggregate,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_ms(30_000), "30s");
        assert_eq!(human_ms(300_000), "5m");
        assert_eq!(human_ms(5_400_000), "1h30m");
        assert_eq!(human_ms(250), "250ms");
    }

    #[test]
    fn peaks_take_the_max_and_the_rest_add_up() {
        let mut a = Measures {
            under_provisioned_replica_minutes: 1.0,
            peak_shortfall_replicas: 3.0,
            scale_events: 2,
            ..Measures::default()
        };
        a.add(&Measures {
            under_provisioned_replica_minutes: 2.0,
            peak_shortfall_replicas: 1.0,
            scale_events: 5,
            ..Measures::default()
        });
        assert_eq!(a.under_provisioned_replica_minutes, 3.0);
        assert_eq!(a.peak_shortfall_replicas, 3.0);
        assert_eq!(a.scale_events, 7);
    }
}
