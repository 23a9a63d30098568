//! The cost-vs-shortfall frontier: is predictive scaling better than a reactive
//! HPA tuned with more headroom or a tighter tolerance?
//!
//! Each trace is replayed with many variants of each strategy: the reactive HPA
//! over its headroom (the target below capacity) and scale-up tolerance, the
//! predictive one over the quantile it serves (and its own headroom and
//! tolerance), and the oracle. Every variant is a point of cost (replica-hours)
//! against shortfall (under-provisioned replica-minutes, measured against what a
//! replica can carry). A variant is on a strategy's *envelope* when no cheaper
//! variant of that strategy falls short less.
//!
//! The matched-cost comparison answers the question per trace: at the
//! replica-hours that the predictive reference variant (the settings as served)
//! costs, how much shortfall does the best reactive tuning of the same cost have?
//! The reactive envelope is interpolated linearly in cost between its variants.
//! The reduction is `(reactive − predictive) / reactive`, with the denominator at
//! least [`SHORTFALL_FLOOR`] of the trace's demand so that two near-zero
//! shortfalls do not make a large ratio. When the predictive cost lies outside the
//! reactive sweep the comparison is made at the nearest end and flagged
//! (`covered: false`): below the cheapest reactive variant that end favours
//! reactive; above the dearest the predictive envelope is interpolated at the
//! reactive end instead, which favours neither.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::series::Series;

use super::measure::Measures;
use super::sim::{simulate_with, Scenario, Strategy, Tape};
use super::Result;

/// The shortfall, as a share of demand, below which two strategies count as equal
/// (the floor of the matched-cost ratio's denominator).
pub const SHORTFALL_FLOOR: f64 = 1e-4;

/// Which variants are replayed.
#[derive(Debug, Clone, PartialEq)]
pub struct Sweep {
    /// Headrooms of the reactive HPA (target = capacity × (1 − headroom)).
    pub reactive_headrooms: Vec<f64>,
    /// Scale-up tolerances of the reactive HPA (0.1 is the controller's default).
    pub reactive_tolerances: Vec<f64>,
    /// Quantiles the predictive strategy serves.
    pub quantiles: Vec<f64>,
    /// Headrooms of the HPA reading the predictive value.
    pub predictive_headrooms: Vec<f64>,
    /// Scale-up tolerances of the HPA reading the predictive value.
    pub predictive_tolerances: Vec<f64>,
}

impl Default for Sweep {
    /// Reactive from 20 % above capacity to 60 % below it, at tolerance 0.1 and 0
    /// (wide enough that the predictive reference's cost lies inside it on the dev
    /// traces); predictive from the median to the 98th percentile, at headroom 0
    /// and 10 %, default tolerance.
    fn default() -> Self {
        Self {
            reactive_headrooms: vec![
                -0.2, -0.1, 0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6,
            ],
            reactive_tolerances: vec![0.1, 0.0],
            quantiles: vec![0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98],
            predictive_headrooms: vec![0.0, 0.1],
            predictive_tolerances: vec![0.1],
        }
    }
}

/// One replayed variant.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Variant {
    /// The strategy.
    pub strategy: Strategy,
    /// The HPA's headroom below capacity (0 for the oracle).
    pub headroom: f64,
    /// The HPA's scale-up tolerance (`None` for the oracle, which has no band).
    pub tolerance: Option<f64>,
    /// The quantile served (predictive only).
    pub quantile: Option<f64>,
}

impl Variant {
    /// A short label: `reactive h20% tol0`, `predictive q0.9 h0%`.
    pub fn label(&self) -> String {
        let mut s = self.strategy.as_str().to_string();
        if let Some(q) = self.quantile {
            s.push_str(&format!(" q{q}"));
        }
        if self.strategy != Strategy::Oracle {
            s.push_str(&format!(" h{:.0}%", self.headroom * 100.0));
        }
        if let Some(t) = self.tolerance {
            s.push_str(&format!(" tol{t}"));
        }
        s
    }
}

/// One variant's result.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Point {
    /// What was replayed.
    pub variant: Variant,
    /// What it cost and how it fell short.
    pub measures: Measures,
    /// True when no cheaper variant of the same strategy (or the reactive strategy
    /// across tolerances) fell short less.
    pub on_envelope: bool,
}

/// The matched-cost comparison on one trace.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Matched {
    /// Replica-hours at which both are compared.
    pub replica_hours: f64,
    /// The predictive reference's under-provisioned replica-minutes at that cost.
    pub predictive_shortfall: f64,
    /// The reactive envelope's under-provisioned replica-minutes at that cost.
    pub reactive_shortfall: f64,
    /// `(reactive − predictive) / max(reactive, floor)` in % (positive: predictive
    /// falls short less).
    pub shortfall_reduction_pct: f64,
    /// False when the cost lay outside the reactive sweep (see the module docs).
    pub covered: bool,
}

/// One trace's frontier.
#[derive(Debug, Clone, Serialize)]
pub struct TraceFrontier {
    /// The trace's name.
    pub name: String,
    /// Demand over the trace, in replica-minutes (shortfalls are a share of it).
    pub demand_replica_minutes: f64,
    /// Every variant replayed.
    pub points: Vec<Point>,
    /// The predictive reference variant (the settings as served).
    pub reference: Variant,
    /// The matched-cost comparison.
    pub matched: Matched,
}

impl TraceFrontier {
    /// The points of one strategy.
    pub fn of(&self, s: Strategy) -> impl Iterator<Item = &Point> {
        self.points.iter().filter(move |p| p.variant.strategy == s)
    }

    /// The reactive HPA as Kubernetes ships it: no headroom, tolerance 0.1.
    pub fn reactive_default(&self) -> Option<&Point> {
        self.of(Strategy::Reactive).find(|p| {
            p.variant.headroom == 0.0
                && p.variant
                    .tolerance
                    .is_some_and(|t| (t - super::behavior::DEFAULT_TOLERANCE).abs() < 1e-12)
        })
    }
}

impl Sweep {
    /// The quantile levels a tape must carry for this sweep and `scenario`'s own.
    pub fn levels(&self, scenario: &Scenario) -> Vec<f64> {
        let mut levels = self.quantiles.clone();
        levels.push(scenario.quantile());
        levels
    }
}

/// Replays one trace with every variant of `sweep` from `tape` (recorded with
/// [`Sweep::levels`]); the scenario's own settings (its quantile, headroom and
/// behavior) are the predictive reference.
///
/// # Errors
/// As [`super::backtest`].
pub fn trace(
    name: &str,
    series: &Series,
    scenario: &Scenario,
    sweep: &Sweep,
    tape: &Tape,
) -> Result<TraceFrontier> {
    let reference_q = scenario.quantile();
    let ref_tolerance = scenario.behavior.scale_up.tolerance;
    let reference = Variant {
        strategy: Strategy::Predictive,
        headroom: scenario.headroom,
        tolerance: Some(ref_tolerance),
        quantile: Some(reference_q),
    };

    let mut variants = Vec::new();
    for &t in &sweep.reactive_tolerances {
        for &h in &sweep.reactive_headrooms {
            variants.push(Variant {
                strategy: Strategy::Reactive,
                headroom: h,
                tolerance: Some(t),
                quantile: None,
            });
        }
    }
    for &t in &sweep.predictive_tolerances {
        for &h in &sweep.predictive_headrooms {
            for &q in &sweep.quantiles {
                variants.push(Variant {
                    strategy: Strategy::Predictive,
                    headroom: h,
                    tolerance: Some(t),
                    quantile: Some(q),
                });
            }
        }
    }
    if !variants.contains(&reference) {
        variants.push(reference);
    }
    variants.push(Variant {
        strategy: Strategy::Oracle,
        headroom: 0.0,
        tolerance: None,
        quantile: None,
    });

    let mut points = Vec::with_capacity(variants.len());
    for v in variants {
        let mut sc = scenario.clone();
        sc.headroom = v.headroom;
        if let Some(t) = v.tolerance {
            sc.behavior.scale_up.tolerance = t;
        }
        if let Some(q) = v.quantile {
            sc = sc.with_quantile(q);
        }
        let run = simulate_with(series, &sc, v.strategy, Some(tape))?;
        points.push(Point {
            variant: v,
            measures: run.measures,
            on_envelope: false,
        });
    }
    mark_envelopes(&mut points);
    let demand = points
        .first()
        .map_or(0.0, |p| p.measures.demand_replica_minutes);
    let find = |v: &Variant| points.iter().find(|p| p.variant == *v).map(|p| p.measures);
    let reference_m = find(&reference).unwrap_or_default();
    let matched = match_cost(&points, &reference_m, demand);
    Ok(TraceFrontier {
        name: name.to_string(),
        demand_replica_minutes: demand,
        points,
        reference,
        matched,
    })
}

/// (cost, shortfall) of a point.
fn cs(m: &Measures) -> (f64, f64) {
    (m.replica_hours, m.under_provisioned_replica_minutes)
}

/// The envelope of `pts`: sorted by cost, each falling short less than every
/// cheaper one.
fn envelope(mut pts: Vec<(f64, f64)>) -> Vec<(f64, f64)> {
    pts.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
    let mut out: Vec<(f64, f64)> = Vec::new();
    for p in pts {
        if out.last().is_none_or(|l| p.1 < l.1) {
            out.push(p);
        }
    }
    out
}

/// The envelope's shortfall at `cost`, linear between its points; `None` outside.
fn interpolate(env: &[(f64, f64)], cost: f64) -> Option<f64> {
    let (first, last) = (env.first()?, env.last()?);
    if cost < first.0 || cost > last.0 {
        return None;
    }
    for w in env.windows(2) {
        let ((c0, s0), (c1, s1)) = (w[0], w[1]);
        if cost <= c1 {
            if c1 - c0 <= f64::EPSILON * c1.abs().max(1.0) {
                return Some(s1);
            }
            return Some(s0 + (s1 - s0) * (cost - c0) / (c1 - c0));
        }
    }
    Some(last.1)
}

fn mark_envelopes(points: &mut [Point]) {
    for s in Strategy::ALL {
        let env = envelope(
            points
                .iter()
                .filter(|p| p.variant.strategy == s)
                .map(|p| cs(&p.measures))
                .collect(),
        );
        for p in points.iter_mut().filter(|p| p.variant.strategy == s) {
            p.on_envelope = env.contains(&cs(&p.measures));
        }
    }
}

/// The reduction in % with the denominator floored at a share of demand.
pub fn reduction_pct(reactive: f64, predictive: f64, demand: f64) -> f64 {
    let floor = (SHORTFALL_FLOOR * demand).max(1e-12);
    (reactive - predictive) / reactive.max(floor) * 100.0
}

fn match_cost(points: &[Point], reference: &Measures, demand: f64) -> Matched {
    let of = |s: Strategy| -> Vec<(f64, f64)> {
        points
            .iter()
            .filter(|p| p.variant.strategy == s)
            .map(|p| cs(&p.measures))
            .collect()
    };
    let reactive = envelope(of(Strategy::Reactive));
    let (cost, short) = cs(reference);
    let result = |c: f64, r: f64, p: f64, covered: bool| Matched {
        replica_hours: c,
        predictive_shortfall: p,
        reactive_shortfall: r,
        shortfall_reduction_pct: reduction_pct(r, p, demand),
        covered,
    };
    if let Some(r) = interpolate(&reactive, cost) {
        return result(cost, r, short, true);
    }
    match (reactive.first(), reactive.last()) {
        (Some(&(c0, s0)), _) if cost < c0 => result(cost, s0, short, false),
        (_, Some(&(c1, s1))) => {
            // Predictive costs more than every reactive variant: compare at the
            // dearest reactive variant with the predictive envelope there.
            let pred = envelope(of(Strategy::Predictive));
            let p = interpolate(&pred, c1)
                .or_else(|| pred.first().map(|f| f.1))
                .unwrap_or(short);
            result(c1, s1, p, false)
        }
        _ => result(cost, 0.0, short, false),
    }
}

/// The frontier over all traces.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Traces compared.
    pub traces: usize,
    /// The predictive variant compared at matched cost (the settings as served).
    pub reference: Option<Variant>,
    /// The matched-cost comparison, every trace weighing the same.
    pub matched_cost: MatchedSummary,
    /// Per variant (by label): the equal-weight mean over traces of its cost
    /// relative to the default reactive HPA and of its shortfall as a share of
    /// demand, plus the sums.
    pub overall: Vec<OverallPoint>,
}

/// The matched-cost figures over all traces.
#[derive(Debug, Clone, Serialize)]
pub struct MatchedSummary {
    /// The mean over traces of the per-trace reduction, in %.
    pub shortfall_reduction_pct: f64,
    /// The reduction of the summed shortfalls (traces with more demand weigh more), in %.
    pub sum_shortfall_reduction_pct: f64,
    /// Each trace's reduction, in %.
    pub per_trace: BTreeMap<String, f64>,
    /// The trace where predictive does worst, and its reduction in %.
    pub worst_trace: Option<(String, f64)>,
    /// Traces compared outside the reactive sweep's cost range.
    pub uncovered: Vec<String>,
}

/// One variant over all traces.
#[derive(Debug, Clone, Serialize)]
pub struct OverallPoint {
    /// The variant.
    pub variant: Variant,
    /// Its label.
    pub label: String,
    /// Mean over traces of replica-hours / the default reactive HPA's, in %.
    pub mean_relative_cost_pct: f64,
    /// Mean over traces of under-provisioned replica-minutes / demand, in %.
    pub mean_shortfall_pct_of_demand: f64,
    /// Mean over traces of under-provisioned minutes.
    pub mean_under_minutes: f64,
    /// The measures summed over traces.
    pub sum: Measures,
    /// True when no cheaper variant of the strategy falls short less (in the means).
    pub on_envelope: bool,
}

/// Summarises several traces' frontiers.
pub fn summarize(traces: &[TraceFrontier]) -> Summary {
    let n = traces.len();
    let mean = |v: &mut dyn Iterator<Item = f64>| {
        let (s, c) = v.fold((0.0, 0usize), |(s, c), x| (s + x, c + 1));
        if c == 0 {
            0.0
        } else {
            s / c as f64
        }
    };
    let per_trace: BTreeMap<String, f64> = traces
        .iter()
        .map(|t| (t.name.clone(), t.matched.shortfall_reduction_pct))
        .collect();
    let worst_trace = traces
        .iter()
        .map(|t| (t.name.clone(), t.matched.shortfall_reduction_pct))
        .min_by(|a, b| a.1.total_cmp(&b.1));
    let (sum_r, sum_p) = traces.iter().fold((0.0, 0.0), |(r, p), t| {
        (
            r + t.matched.reactive_shortfall,
            p + t.matched.predictive_shortfall,
        )
    });
    let demand: f64 = traces.iter().map(|t| t.demand_replica_minutes).sum();
    let matched_cost = MatchedSummary {
        shortfall_reduction_pct: mean(&mut per_trace.values().copied()),
        sum_shortfall_reduction_pct: reduction_pct(sum_r, sum_p, demand),
        per_trace,
        worst_trace,
        uncovered: traces
            .iter()
            .filter(|t| !t.matched.covered)
            .map(|t| t.name.clone())
            .collect(),
    };

    // Variants present in every trace, in the first trace's order.
    let variants: Vec<Variant> = traces
        .first()
        .map(|t| t.points.iter().map(|p| p.variant).collect())
        .unwrap_or_default();
    let mut overall: Vec<OverallPoint> = variants
        .into_iter()
        .filter_map(|v| {
            let mut cost = Vec::with_capacity(n);
            let mut short = Vec::with_capacity(n);
            let mut minutes = Vec::with_capacity(n);
            let mut sum = Measures::default();
            for t in traces {
                let p = t.points.iter().find(|p| p.variant == v)?;
                let base = t.reactive_default()?.measures;
                cost.push(p.measures.replica_hours / base.replica_hours.max(1e-12) * 100.0);
                short.push(
                    p.measures.under_provisioned_replica_minutes
                        / t.demand_replica_minutes.max(1e-12)
                        * 100.0,
                );
                minutes.push(p.measures.under_provisioned_minutes);
                sum.add(&p.measures);
            }
            Some(OverallPoint {
                variant: v,
                label: v.label(),
                mean_relative_cost_pct: mean(&mut cost.into_iter()),
                mean_shortfall_pct_of_demand: mean(&mut short.into_iter()),
                mean_under_minutes: mean(&mut minutes.into_iter()),
                sum,
                on_envelope: false,
            })
        })
        .collect();
    for s in Strategy::ALL {
        let env = envelope(
            overall
                .iter()
                .filter(|p| p.variant.strategy == s)
                .map(|p| (p.mean_relative_cost_pct, p.mean_shortfall_pct_of_demand))
                .collect(),
        );
        for p in overall.iter_mut().filter(|p| p.variant.strategy == s) {
            p.on_envelope =
                env.contains(&(p.mean_relative_cost_pct, p.mean_shortfall_pct_of_demand));
        }
    }
    Summary {
        traces: n,
        reference: traces.first().map(|t| t.reference),
        matched_cost,
        overall,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(strategy: Strategy, headroom: f64, cost: f64, short: f64) -> Point {
        Point {
            variant: Variant {
                strategy,
                headroom,
                tolerance: Some(0.1),
                quantile: (strategy == Strategy::Predictive).then_some(0.9),
            },
            measures: Measures {
                replica_hours: cost,
                under_provisioned_replica_minutes: short,
                demand_replica_minutes: 1e4,
                ..Measures::default()
            },
            on_envelope: false,
        }
    }

    #[test]
    fn the_envelope_keeps_only_points_no_cheaper_one_beats() {
        let env = envelope(vec![(10.0, 5.0), (12.0, 6.0), (8.0, 9.0), (15.0, 1.0)]);
        assert_eq!(env, vec![(8.0, 9.0), (10.0, 5.0), (15.0, 1.0)]);
        assert_eq!(interpolate(&env, 12.5), Some(3.0));
        assert_eq!(interpolate(&env, 8.0), Some(9.0));
        assert_eq!(interpolate(&env, 7.9), None);
        assert_eq!(interpolate(&env, 15.1), None);
    }

    #[test]
    fn matched_cost_interpolates_the_reactive_envelope_at_the_predictive_cost() {
        let pts = vec![
            point(Strategy::Reactive, 0.0, 100.0, 40.0),
            point(Strategy::Reactive, 0.2, 120.0, 20.0),
            point(Strategy::Reactive, 0.4, 140.0, 10.0),
            point(Strategy::Predictive, 0.0, 110.0, 6.0),
        ];
        let m = match_cost(&pts, &pts[3].measures, 1e4);
        assert!(m.covered);
        assert_eq!(m.reactive_shortfall, 30.0);
        assert!((m.shortfall_reduction_pct - 80.0).abs() < 1e-9, "{m:?}");
        // Cheaper than every reactive variant: compared with the cheapest (which
        // favours reactive), and flagged.
        let cheap = point(Strategy::Predictive, 0.0, 90.0, 50.0);
        let m = match_cost(&pts, &cheap.measures, 1e4);
        assert!(!m.covered);
        assert!((m.shortfall_reduction_pct + 25.0).abs() < 1e-9, "{m:?}");
        // Dearer than every reactive variant: the predictive envelope is read at
        // the dearest reactive cost instead.
        let mut pts2 = pts.clone();
        pts2.push(point(Strategy::Predictive, 0.1, 160.0, 2.0));
        let dear = pts2[4].measures;
        let m = match_cost(&pts2, &dear, 1e4);
        assert!(!m.covered);
        assert_eq!(m.replica_hours, 140.0);
        // Predictive envelope: (110, 6) .. (160, 2): at 140 it is 3.6.
        assert!((m.predictive_shortfall - 3.6).abs() < 1e-9, "{m:?}");
    }

    #[test]
    fn near_zero_shortfalls_do_not_make_large_ratios() {
        // Both below the floor of 1e-4 of demand: the difference is tiny in %.
        assert!(reduction_pct(0.0, 0.5, 1e6).abs() < 1.0);
        assert!((reduction_pct(1000.0, 500.0, 1e6) - 50.0).abs() < 1e-9);
    }
}
