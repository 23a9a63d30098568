//! The replay: one trace, three strategies, the same HPA and capacity dynamics.
//!
//! Time is simulated in milliseconds and advances from event to event: HPA syncs
//! (every `sync_period_ms`), grid points of the trace (a value is available from its
//! own timestamp on and holds until the next one), pods becoming ready, nodes
//! arriving or being removed. Between events demand and ready capacity are
//! constant, so the measures are exact integrals. Grid points left as gaps by the
//! resampler (`NAN`) count for cost but not for under-provisioning: their demand
//! is unknown.

use crate::forecast::ModelSpec;
use crate::plan::{Decision, ServePolicy, Tracker, TrackerSettings};
use crate::series::Series;

use super::behavior::Behavior;
use super::capacity::{CapacitySpec, Cluster};
use super::hpa::{to_milli, Hpa, HpaSpec};
use super::measure::{AccuracyAcc, ForecastAccuracy, Measures};
use super::{Error, Result};

/// Which metric the HPA is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// The observed metric: what an HPA does today.
    Reactive,
    /// prescale's served value, computed step by step by [`Tracker`].
    Predictive,
    /// Perfect foresight: exactly the replicas the true peak demand over the coming
    /// lead time needs (against capacity: no headroom), set at each sync without
    /// the HPA's tolerance band,
    /// stabilization or rate limits (pod start-up and nodes still apply).
    Oracle,
}

impl Strategy {
    /// All strategies, in report order.
    pub const ALL: [Strategy; 3] = [Strategy::Reactive, Strategy::Predictive, Strategy::Oracle];

    /// The strategy's name in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Reactive => "reactive",
            Strategy::Predictive => "predictive",
            Strategy::Oracle => "oracle",
        }
    }
}

/// How the predictive strategy forecasts (durations are turned into steps of each
/// trace's own grid).
#[derive(Debug, Clone, PartialEq)]
pub struct ForecastPlan {
    /// The model to fit.
    pub spec: ModelSpec,
    /// The forecast quantile served, in (0, 1).
    pub quantile: f64,
    /// Never serve below the latest observation.
    pub reactive_floor: bool,
    /// History kept for fitting, in milliseconds.
    pub history_ms: i64,
    /// Refit after this much new data; updates only in between, in milliseconds.
    pub refit_every_ms: i64,
    /// Serve the latest observation until this much history exists, in milliseconds.
    pub min_history_ms: i64,
    /// The HPA's scale-up tolerance that the served value makes up for (see
    /// [`ServePolicy::tolerance`]).
    pub hpa_tolerance: f64,
}

impl ForecastPlan {
    /// Defaults: a week of history and an hour of warm-up, as `serve` defaults to,
    /// and a refit every 6 hours of simulated time (serve refits hourly; the
    /// backtest refits less often to replay months of data quickly, and updates the
    /// model with every point in between like serve does).
    pub fn new(spec: ModelSpec, quantile: f64) -> Self {
        Self {
            spec,
            quantile,
            reactive_floor: true,
            history_ms: 7 * 86_400_000,
            refit_every_ms: 6 * 3_600_000,
            min_history_ms: 3_600_000,
            hpa_tolerance: crate::backtest::behavior::DEFAULT_TOLERANCE,
        }
    }

    /// The tracker settings for a grid of `step_ms` and a lead time.
    ///
    /// Step counts are clamped so that very fine grids (1 s) stay affordable and
    /// very coarse ones (1 h) still warm up within a day.
    pub fn tracker_settings(&self, step_ms: i64, lead_time_ms: i64) -> TrackerSettings {
        let step = step_ms.max(1);
        let steps = |ms: i64| usize::try_from(ms / step).unwrap_or(0);
        let lead_steps = usize::try_from((lead_time_ms + step - 1) / step)
            .unwrap_or(1)
            .max(1);
        TrackerSettings {
            spec: self.spec.clone(),
            step_ms: step,
            policy: ServePolicy {
                lead_steps,
                lead_ms: lead_time_ms,
                tolerance: self.hpa_tolerance,
                quantile: self.quantile,
                reactive_floor: self.reactive_floor,
            },
            history_steps: steps(self.history_ms).clamp(64, 30_240),
            refit_every_steps: steps(self.refit_every_ms).clamp(1, 1_440),
            min_history_steps: steps(self.min_history_ms).clamp(12, 720),
            fit_steps: 1,
            spread_refits: false,
        }
    }
}

/// Everything a replay is configured with, shared by all strategies.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// What one replica can carry before it breaks its SLO, in the trace's unit; at
    /// least 0.001. Shortfall is measured against it.
    pub capacity_per_replica: f64,
    /// The HPA's target is `capacity × (1 − headroom)`: the margin a team keeps below
    /// capacity; in [-1, 1) (negative runs replicas above capacity on purpose).
    pub headroom: f64,
    /// `minReplicas`, at least 1.
    pub min_replicas: u32,
    /// `maxReplicas`, at least `min_replicas`.
    pub max_replicas: u32,
    /// The HPA's `spec.behavior`.
    pub behavior: Behavior,
    /// The HPA controller's sync period in milliseconds (15 s in Kubernetes).
    pub sync_period_ms: i64,
    /// How far ahead capacity is planned, in milliseconds.
    pub lead_time_ms: i64,
    /// Pod start-up and the node pool.
    pub capacity: CapacitySpec,
    /// The predictive strategy's forecasting.
    pub forecast: ForecastPlan,
    /// Exact tracker settings to use instead of deriving them from `forecast` (a
    /// replayed serve configuration); the trace must then be on their step.
    pub tracker: Option<TrackerSettings>,
    /// Keep every HPA sync in [`Run::ticks`] (for tests and inspection).
    pub keep_ticks: bool,
}

impl Scenario {
    /// A scenario with Kubernetes defaults: 15 s sync, default behavior, 30 s pod
    /// start-up, no node pool, 1..=10000 replicas.
    pub fn new(capacity_per_replica: f64, lead_time_ms: i64, forecast: ForecastPlan) -> Self {
        Self {
            capacity_per_replica,
            headroom: 0.0,
            min_replicas: 1,
            max_replicas: 10_000,
            behavior: Behavior::default(),
            sync_period_ms: 15_000,
            lead_time_ms,
            capacity: CapacitySpec {
                pod_startup_ms: 30_000,
                pool: None,
            },
            forecast,
            tracker: None,
            keep_ticks: false,
        }
    }

    /// The HPA's target: `capacity × (1 − headroom)`.
    pub fn target_per_replica(&self) -> f64 {
        self.capacity_per_replica * (1.0 - self.headroom)
    }

    /// The target as the HPA reads it: rounded up to milli-units.
    pub fn effective_target(&self) -> f64 {
        to_milli(self.target_per_replica()) as f64 / 1000.0
    }

    /// The quantile served: the replayed tracker's, else the forecast plan's.
    pub fn quantile(&self) -> f64 {
        self.tracker
            .as_ref()
            .map_or(self.forecast.quantile, |t| t.policy.quantile)
    }

    /// The same scenario serving quantile `q` (of the replayed tracker too).
    pub fn with_quantile(mut self, q: f64) -> Self {
        self.forecast.quantile = q;
        if let Some(t) = self.tracker.as_mut() {
            t.policy.quantile = q;
        }
        self
    }

    /// Checks the settings.
    ///
    /// # Errors
    /// [`Error::BadTarget`] or [`Error::Setting`] naming the bad setting.
    pub fn validate(&self) -> Result<()> {
        let c = self.capacity_per_replica;
        if !(c.is_finite() && c >= 0.001 - 1e-12) {
            return Err(Error::BadTarget(c));
        }
        let h = self.headroom;
        if !(h.is_finite() && (-1.0..1.0).contains(&h)) {
            return Err(Error::Setting {
                field: "headroom",
                reason: format!("must be in [-1, 1), got {h}"),
            });
        }
        let t = self.target_per_replica();
        if t < 0.001 - 1e-12 {
            return Err(Error::BadTarget(t));
        }
        let setting = |field, reason: &str| Error::Setting {
            field,
            reason: reason.to_string(),
        };
        if self.min_replicas < 1 {
            return Err(setting("min_replicas", "must be at least 1"));
        }
        if self.max_replicas < self.min_replicas {
            return Err(setting("max_replicas", "must be at least min_replicas"));
        }
        if self.sync_period_ms <= 0 {
            return Err(setting("sync_period", "must be positive"));
        }
        if self.lead_time_ms <= 0 {
            return Err(setting("lead_time", "must be positive"));
        }
        if self.capacity.pod_startup_ms < 0 {
            return Err(setting("pod_startup", "must not be negative"));
        }
        if let Some(pool) = self.capacity.pool {
            if pool.pods_per_node == 0 {
                return Err(setting("pods_per_node", "must be at least 1"));
            }
            if pool.provisioning_ms < 0 || pool.unneeded_ms < 0 {
                return Err(setting("node_provisioning", "must not be negative"));
            }
        }
        let q = self.forecast.quantile;
        if !(q > 0.0 && q < 1.0) {
            return Err(Error::Setting {
                field: "quantile",
                reason: format!("must be in (0, 1), got {q}"),
            });
        }
        Ok(())
    }
}

/// One HPA sync, kept when [`Scenario::keep_ticks`] is set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tick {
    /// Simulated time of the sync.
    pub t_ms: i64,
    /// The metric value the HPA read.
    pub metric: Option<f64>,
    /// The replica count after the sync.
    pub replicas: u32,
}

/// One strategy's replay of one trace.
#[derive(Debug, Clone)]
pub struct Run {
    /// The strategy.
    pub strategy: Strategy,
    /// What it cost and how often it fell short.
    pub measures: Measures,
    /// Ready replicas averaged over each grid step (for plots).
    pub ready_per_step: Vec<f32>,
    /// Every HPA sync, when kept.
    pub ticks: Vec<Tick>,
    /// Forecast accuracy, for the predictive strategy.
    pub forecast: Option<ForecastAccuracy>,
}

/// All strategies' replays of one trace.
#[derive(Debug, Clone)]
pub struct TraceResult {
    /// The trace's name (its file stem).
    pub name: String,
    /// The trace's grid step in milliseconds.
    pub step_ms: i64,
    /// Grid points replayed.
    pub points: usize,
    /// The capacity per replica that demand is measured against.
    pub capacity_per_replica: f64,
    /// Demand in replicas (value / capacity) per grid step (for plots).
    pub demand: Vec<f32>,
    /// One run per strategy, in [`Strategy::ALL`] order.
    pub runs: Vec<Run>,
}

impl TraceResult {
    /// The run of one strategy.
    pub fn run(&self, strategy: Strategy) -> Option<&Run> {
        self.runs.iter().find(|r| r.strategy == strategy)
    }
}

/// A target picked from the data, and the unit it is expressed in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AutoTarget {
    /// What one replica carries, in the scaled unit: a whole number of at least 100.
    pub capacity_per_replica: f64,
    /// The power of ten the trace's values are multiplied by before the replay, so
    /// that the HPA's milli-unit reading does not distort small values (the same as
    /// serving, say, millicores instead of cores).
    pub unit_scale: f64,
}

/// A target that makes the series' median need about 10 replicas (the mean when
/// the median is zero), so that traces of any unit are comparable.
///
/// # Errors
/// [`Error::NoAutoTarget`] when the series has no positive value.
pub fn auto_target(values: &[f64]) -> Result<AutoTarget> {
    let mut finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if finite.is_empty() {
        return Err(Error::NoAutoTarget);
    }
    finite.sort_by(f64::total_cmp);
    let median = finite[finite.len() / 2];
    let mean = finite.iter().sum::<f64>() / finite.len() as f64;
    let base = if median > 0.0 { median } else { mean };
    if !(base > 0.0 && base.is_finite()) {
        return Err(Error::NoAutoTarget);
    }
    let target = base / 10.0;
    let mut unit_scale = 1.0;
    while target * unit_scale < 100.0 && unit_scale < 1e15 {
        unit_scale *= 10.0;
    }
    Ok(AutoTarget {
        capacity_per_replica: (target * unit_scale).round(),
        unit_scale,
    })
}

/// Replays `series` with every strategy.
///
/// # Errors
/// When the trace is empty, has fewer than two observed points or is shorter than
/// the lead time, or when the scenario is invalid.
pub fn backtest(name: &str, series: &Series, scenario: &Scenario) -> Result<TraceResult> {
    let tape = Tape::record(series, scenario, &[])?;
    backtest_with(name, series, scenario, &tape)
}

/// As [`backtest`], the predictive strategy served from a recorded `tape`.
///
/// # Errors
/// As [`simulate_with`].
pub fn backtest_with(
    name: &str,
    series: &Series,
    scenario: &Scenario,
    tape: &Tape,
) -> Result<TraceResult> {
    check_trace(series, scenario)?;
    let filled = crate::series::forward_fill(&series.values);
    let demand = filled
        .iter()
        .map(|v| (v.max(0.0) / scenario.capacity_per_replica) as f32)
        .collect();
    let runs = Strategy::ALL
        .into_iter()
        .map(|s| simulate_with(series, scenario, s, Some(tape)))
        .collect::<Result<Vec<_>>>()?;
    Ok(TraceResult {
        name: name.to_string(),
        step_ms: series.step_ms,
        points: series.len(),
        capacity_per_replica: scenario.capacity_per_replica,
        demand,
        runs,
    })
}

fn check_trace(series: &Series, scenario: &Scenario) -> Result<()> {
    scenario.validate()?;
    if series.is_empty() {
        return Err(Error::Empty);
    }
    let got = series.values.iter().filter(|v| v.is_finite()).count();
    if got < 2 {
        return Err(Error::TooFewPoints { got });
    }
    if series.step_ms <= 0 {
        return Err(Error::Setting {
            field: "step",
            reason: format!(
                "the trace's step must be positive, got {} ms",
                series.step_ms
            ),
        });
    }
    let span_ms = series.step_ms.saturating_mul(series.len() as i64);
    if span_ms <= scenario.lead_time_ms {
        return Err(Error::ShorterThanLeadTime {
            span_s: span_ms / 1000,
            lead_s: scenario.lead_time_ms / 1000,
        });
    }
    Ok(())
}

/// The predictive strategy's decisions at every grid point, made once by the
/// serving code's [`Tracker`] and replayed by every variant that differs only in
/// the quantile served or in the HPA's settings (the frontier sweeps both without
/// refitting a model per variant).
#[derive(Debug, Clone)]
pub struct Tape {
    /// The decision made when grid point `i` arrived, for every `i`.
    pub decisions: Vec<Decision>,
}

impl Tape {
    /// Runs the tracker over `series` as serve would, with forecasts that carry the
    /// scenario's quantile and every level in `quantiles`.
    ///
    /// # Errors
    /// As [`backtest`].
    pub fn record(series: &Series, scenario: &Scenario, quantiles: &[f64]) -> Result<Self> {
        check_trace(series, scenario)?;
        let settings = tracker_settings(series, scenario)?;
        let mut tracker = Tracker::new(settings);
        let step = series.step_ms;
        let decisions = series
            .values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                tracker.observe(std::slice::from_ref(v));
                tracker.decide_with(series.start_ms + step * i as i64, quantiles)
            })
            .collect();
        Ok(Self { decisions })
    }
}

fn tracker_settings(series: &Series, scenario: &Scenario) -> Result<TrackerSettings> {
    let step = series.step_ms;
    match &scenario.tracker {
        Some(t) if t.step_ms != step => Err(Error::Setting {
            field: "step",
            reason: format!(
                "the trace's step is {step} ms but the tracker runs on {} ms",
                t.step_ms
            ),
        }),
        Some(t) => Ok(t.clone()),
        None => Ok(scenario
            .forecast
            .tracker_settings(step, scenario.lead_time_ms)),
    }
}

/// What the HPA reads under each strategy.
enum Source<'a> {
    Reactive,
    Predictive(Box<Predictor<'a>>),
    Oracle,
}

struct Predictor<'a> {
    tape: &'a Tape,
    /// The serving rule, with the variant's quantile.
    policy: ServePolicy,
    /// The newest grid point.
    idx: usize,
    accuracy: AccuracyAcc,
}

/// Replays `series` with one strategy.
///
/// # Errors
/// As [`backtest`].
pub fn simulate(series: &Series, scenario: &Scenario, strategy: Strategy) -> Result<Run> {
    let tape = match strategy {
        Strategy::Predictive => Some(Tape::record(series, scenario, &[])?),
        _ => None,
    };
    simulate_with(series, scenario, strategy, tape.as_ref())
}

/// Replays `series` with one strategy; the predictive strategy serves the
/// scenario's quantile from `tape` (recorded with that quantile among its levels).
///
/// # Errors
/// As [`backtest`], and [`Error::Setting`] when the predictive strategy has no tape
/// or a tape of another trace.
pub fn simulate_with(
    series: &Series,
    scenario: &Scenario,
    strategy: Strategy,
    tape: Option<&Tape>,
) -> Result<Run> {
    check_trace(series, scenario)?;
    let raw = &series.values;
    let filled = crate::series::forward_fill(raw);
    let n = raw.len();
    let step = series.step_ms;
    let t0 = series.start_ms;
    let t_end = t0 + step * n as i64;
    // Demand is measured against what a replica can carry, not against the HPA's
    // target: the target's headroom is a cost the strategy pays, not demand.
    let capacity = scenario.capacity_per_replica;
    let demand_at = |i: usize| filled[i].max(0.0) / capacity;
    let max_replicas = f64::from(scenario.max_replicas);

    let settings = tracker_settings(series, scenario)?;
    let mut source = match (strategy, tape) {
        (Strategy::Reactive, _) => Source::Reactive,
        (Strategy::Oracle, _) => Source::Oracle,
        (Strategy::Predictive, Some(tape)) if tape.decisions.len() == n => {
            Source::Predictive(Box::new(Predictor {
                accuracy: AccuracyAcc::new(raw, settings.policy.quantile),
                tape,
                policy: settings.policy,
                idx: 0,
            }))
        }
        (Strategy::Predictive, _) => {
            return Err(Error::Setting {
                field: "tape",
                reason: format!("the predictive run needs a tape of the trace's {n} points"),
            })
        }
    };

    let first = (demand_at(0).ceil().min(f64::from(u32::MAX)) as u32)
        .clamp(scenario.min_replicas, scenario.max_replicas);
    let mut cluster = Cluster::new(scenario.capacity, first);
    let mut hpa = Hpa::new(HpaSpec {
        min_replicas: scenario.min_replicas,
        max_replicas: scenario.max_replicas,
        target_milli: to_milli(scenario.target_per_replica()),
        behavior: scenario.behavior.clone(),
    });

    let mut m = Measures::default();
    let mut ready_per_step = Vec::with_capacity(n);
    let mut ready_acc = 0.0f64;
    let mut ticks = Vec::new();

    let mut idx = 0usize;
    arrive(&mut source, 0);
    let mut next_grid = t0 + step;
    let mut next_tick = t0;
    let mut t = t0;
    let index_at = |t_ms: i64| ((t_ms - t0) / step).clamp(0, n as i64 - 1) as usize;
    loop {
        let mut t_next = next_tick.min(next_grid).min(t_end);
        if let Some(e) = cluster.next_event() {
            t_next = t_next.min(e.max(t));
        }
        let dt = (t_next - t) as f64;
        if dt > 0.0 {
            let d = demand_at(idx);
            let ready = f64::from(cluster.ready());
            // Demand beyond maxReplicas is no strategy's shortfall: no HPA may
            // serve it. It is counted apart.
            let short = (d.min(max_replicas) - ready).max(0.0);
            let beyond = (d - max_replicas).max(0.0);
            // In a gap the demand is unknown (the trace holds its last value for
            // the HPA's sake): it costs capacity but is not scored as a shortfall.
            if raw[idx].is_finite() {
                if short > 1e-9 {
                    m.under_provisioned_replica_minutes += short * dt / 60_000.0;
                    m.under_provisioned_minutes += dt / 60_000.0;
                    m.peak_shortfall_replicas = m.peak_shortfall_replicas.max(short);
                }
                if beyond > 1e-9 {
                    m.beyond_max_replica_minutes += beyond * dt / 60_000.0;
                    m.beyond_max_minutes += dt / 60_000.0;
                }
                m.demand_replica_minutes += d * dt / 60_000.0;
            }
            m.replica_hours += f64::from(cluster.placed()) * dt / 3_600_000.0;
            m.node_hours += f64::from(cluster.nodes()) * dt / 3_600_000.0;
            ready_acc += ready * dt;
        }
        t = t_next;
        if t >= t_end {
            ready_per_step.push((ready_acc / step as f64) as f32);
            break;
        }
        cluster.advance_to(t);
        if t == next_grid {
            ready_per_step.push((ready_acc / step as f64) as f32);
            ready_acc = 0.0;
            idx += 1;
            next_grid += step;
            arrive(&mut source, idx);
        }
        if t == next_tick {
            let metric = match &source {
                Source::Reactive => Some(filled[idx]),
                Source::Predictive(p) => p.served_at(t),
                Source::Oracle => {
                    // The true peak over [now, now + lead]: capacity asked for now is
                    // ready within the lead time, so this is the best any forecast can do.
                    let to = index_at(t + scenario.lead_time_ms);
                    filled[idx..=to.max(idx)]
                        .iter()
                        .copied()
                        .fold(None, |a: Option<f64>, v| Some(a.map_or(v, |a| a.max(v))))
                }
            };
            let current = cluster.pods();
            let desired = match (&source, metric) {
                // The limit: exactly the replicas that peak needs, set at once, with
                // no tolerance band, stabilization or rate limits; pods and nodes
                // still take their time.
                (Source::Oracle, Some(peak)) => {
                    ((peak.max(0.0) / capacity).ceil().min(f64::from(u32::MAX)) as u32)
                        .clamp(scenario.min_replicas, scenario.max_replicas)
                }
                _ => hpa.reconcile(t, current, metric),
            };
            if desired != current {
                cluster.scale_to(t, desired);
                m.scale_events += 1;
            }
            if scenario.keep_ticks {
                ticks.push(Tick {
                    t_ms: t,
                    metric,
                    replicas: desired,
                });
            }
            next_tick += scenario.sync_period_ms;
        }
    }
    let forecast = match source {
        Source::Predictive(p) => Some(p.accuracy.finish()),
        _ => None,
    };
    Ok(Run {
        strategy,
        measures: m,
        ready_per_step,
        ticks,
        forecast,
    })
}

/// Grid point `idx` becomes available: the predictive strategy takes the decision
/// recorded for it, which it serves until the next one.
fn arrive(source: &mut Source<'_>, idx: usize) {
    let Source::Predictive(p) = source else {
        return;
    };
    p.idx = idx;
    if let Some(decision) = p.tape.decisions.get(idx) {
        // Scoring only: the forecast made at `idx` is compared with what followed
        // it after the fact; nothing here feeds back into the decision.
        p.accuracy.record(idx, decision);
    }
}

impl Predictor<'_> {
    /// What the HPA reads at `t_ms`: the current decision served at that moment
    /// (a lead time shorter than the step brings the next step in late).
    fn served_at(&self, t_ms: i64) -> Option<f64> {
        self.tape
            .decisions
            .get(self.idx)
            .and_then(|d| d.served_at(&self.policy, t_ms))
    }
}
