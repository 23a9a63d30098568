//! The serving loop: refresh, update, refit, plan, publish.
//!
//! All mutable state lives in one [`Core`]: per signal the series it has seen, each
//! with a [`Tracker`] (the same code the backtester drives). The core is
//! synchronous and takes time as an argument: [`Core::plan`] says which ranges to
//! fetch at `now`, [`Core::apply`] takes what the source returned (or its error),
//! and [`Core::snapshot`] builds the immutable [`Snapshot`] the API serves. The async
//! [`Engine`] is only a thin shell: it fetches the planned ranges concurrently, hands
//! the results to the core on a blocking thread (fits can take a while) and
//! publishes the snapshot.
//!
//! Status per series: `warming` (not enough history: the latest observation is
//! served), `ok`, `stale` (the source fails, or the series is missing from its
//! query: the last value is kept until `max_staleness`), `failed` (older than
//! `max_staleness`: the API answers 503 so the HPA holds its replicas). A series
//! missing for a whole history window is forgotten. Every transition is logged
//! and counted.

use std::collections::BTreeMap;
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use rayon::prelude::*;

use crate::clock::Clock;
use crate::config::SignalConfig;
use crate::custom::Mapping;
use crate::plan::tracker::INTERVAL;
use crate::plan::{Decision, ServePolicy, Tracker, TrackerSettings};
use crate::series::{LabeledSeries, Labels};
use crate::snapshot::{MetricEntry, SeriesDetail, SeriesEntry, Shared, Snapshot, Status};
use crate::source::{align_down, Range, Source};

/// Errors from setting up or running the engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A signal's settings cannot drive a tracker (unknown model, bad step).
    #[error("signal {signal}: {message}")]
    Signal {
        /// The signal's name.
        signal: String,
        /// What is wrong.
        message: String,
    },
    /// The blocking task that updates the models panicked or was cancelled.
    #[error("the model update task ended abnormally")]
    Update(#[source] tokio::task::JoinError),
}

/// Result with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything the engine needs to know about one signal.
#[derive(Debug, Clone, PartialEq)]
pub struct SignalSettings {
    /// External metric name.
    pub name: String,
    /// The query the source runs.
    pub query: String,
    /// How much history to backfill and keep, in milliseconds.
    pub history_ms: i64,
    /// How long the last value is served while the series cannot be refreshed.
    pub max_staleness_ms: i64,
    /// Namespaces allowed to read the metric; all when `None`.
    pub namespaces: Option<Vec<String>>,
    /// For a custom metric, which objects its series describe; `None`: external.
    pub custom: Option<Arc<Mapping>>,
    /// How each series is fitted and served (its `step_ms` is the signal's grid).
    pub tracker: TrackerSettings,
    /// Shadow mode: serve the latest observation, report the forecast's value.
    pub shadow: Option<Shadow>,
}

/// Shadow mode's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shadow {
    /// The HPAs' target per replica, for counting what the forecast would change.
    pub hpa_target: Option<f64>,
}

impl SignalSettings {
    /// Settings from a validated config entry (its model is already resolved).
    ///
    /// # Errors
    /// [`Error::Signal`] when the custom metric's mapping is invalid.
    pub fn from_config(c: &SignalConfig) -> Result<Self> {
        let step_ms = c.step.as_ms().max(1);
        let steps = |ms: i64| usize::try_from(ms.div_euclid(step_ms)).unwrap_or(usize::MAX);
        let ceil_steps =
            |ms: i64| usize::try_from((ms + step_ms - 1).div_euclid(step_ms)).unwrap_or(usize::MAX);
        let custom = match &c.custom {
            Some(custom) => Some(Arc::new(custom.mapping("custom").map_err(|problems| {
                Error::Signal {
                    signal: c.name.to_string(),
                    message: problems.join("; "),
                }
            })?)),
            None => None,
        };
        Ok(Self {
            name: c.name.to_string(),
            query: c.query.clone(),
            custom,
            history_ms: c.history.as_ms(),
            max_staleness_ms: c.max_staleness.as_ms(),
            namespaces: c.namespaces.clone(),
            shadow: (c.mode == crate::config::SignalMode::Shadow).then_some(Shadow {
                hpa_target: c.hpa_target,
            }),
            tracker: TrackerSettings {
                spec: c.model.clone(),
                step_ms,
                policy: ServePolicy {
                    lead_steps: ceil_steps(c.lead_time.as_ms()).max(1),
                    lead_ms: c.lead_time.as_ms(),
                    tolerance: c.hpa_tolerance,
                    quantile: c.quantile.get(),
                    reactive_floor: c.reactive_floor,
                },
                history_steps: steps(c.history.as_ms()).max(2),
                refit_every_steps: steps(c.refit_interval.as_ms()).max(1),
                min_history_steps: steps(c.min_history.as_ms()).max(1),
                fit_steps: c.fit_step.map_or(1, |f| steps(f.as_ms()).max(1)),
                // Replicas refit at the same grid times, and a signal's series do not
                // all refit in the same cycle.
                spread_refits: true,
            },
        })
    }

    fn step_ms(&self) -> i64 {
        self.tracker.step_ms.max(1)
    }
}

/// Label set of per-signal metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SignalLabel {
    signal: String,
}

/// Label set of the series-by-status gauge.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    signal: String,
    status: String,
}

/// Label set of the transition counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransitionLabel {
    signal: String,
    from: String,
    to: String,
}

/// The engine's self-metrics, registered under the `prescale` prefix.
#[derive(Debug, Clone)]
pub struct Metrics {
    series: Family<StatusLabel, Gauge>,
    transitions: Family<TransitionLabel, Counter>,
    source_errors: Family<SignalLabel, Counter>,
    refresh_seconds: Family<SignalLabel, Histogram, fn() -> Histogram>,
    forecast_error: Family<SignalLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    shadow_replica_seconds: Family<ShadowLabel, Counter<f64, std::sync::atomic::AtomicU64>>,
    source_lag: Gauge<f64, std::sync::atomic::AtomicU64>,
}

/// Label set of shadow mode's counter: which way the forecast would have moved
/// the replicas (`more`, `fewer`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShadowLabel {
    signal: String,
    change: &'static str,
}

fn refresh_histogram() -> Histogram {
    // 1 ms .. ~32 s: a local fetch to a slow chunked backfill.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

impl Metrics {
    /// Creates the metrics and registers them on `registry` under the `prescale` prefix.
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self::unregistered();
        let r = registry.sub_registry_with_prefix("prescale");
        r.register(
            "series_by_signal",
            "Series served, by signal and status",
            m.series.clone(),
        );
        r.register(
            "series_transitions",
            "Series status changes, by signal and old and new status",
            m.transitions.clone(),
        );
        r.register(
            "source_errors",
            "Failed refreshes of a signal from its source",
            m.source_errors.clone(),
        );
        r.register(
            "refresh_duration_seconds",
            "Time to fetch one signal's new points from the source",
            m.refresh_seconds.clone(),
        );
        r.register(
            "shadow_replica_seconds",
            "Shadow mode: replica-seconds the forecast would have added (change=more) or saved (change=fewer) against the reactive value, at the signal's hpa_target, summed over series",
            m.shadow_replica_seconds.clone(),
        );
        r.register(
            "source_lag_seconds",
            "How far the source's newest sample (prometheus.freshness_query, query_offset) is behind the clock; later grid points are read once it catches up",
            m.source_lag.clone(),
        );
        r.register(
            "forecast_mase",
            "Rolling one-step-ahead MASE over the last 253 to 288 steps (summed in blocks of 36; forecast error relative to a last-value forecast; below 1 beats it), mean over the signal's series",
            m.forecast_error.clone(),
        );
        m
    }

    /// Metrics that are not registered anywhere (tests, tools).
    pub fn unregistered() -> Self {
        Self {
            series: Family::default(),
            transitions: Family::default(),
            source_errors: Family::default(),
            refresh_seconds: Family::new_with_constructor(refresh_histogram),
            forecast_error: Family::default(),
            shadow_replica_seconds: Family::default(),
            source_lag: Gauge::default(),
        }
    }
}

/// One series of a signal.
#[derive(Debug)]
struct SeriesState {
    tracker: Tracker,
    /// The next grid time the tracker expects.
    next_ms: i64,
    /// Clock time of the last refresh that returned a sample for this series.
    last_seen_ms: i64,
    status: Status,
    /// The last served entry (kept while stale or failed), shared with the published
    /// snapshots; its `expires_ms` is `last_seen_ms` + the signal's `max_staleness`.
    entry: Option<Arc<SeriesEntry>>,
    /// One-step-ahead mean forecast from the last decision, for the error measure.
    next_forecast: Option<f64>,
    /// Recent one-step errors, summed per block for the rolling MASE.
    errors: ErrorSums,
    /// Whether the series' first status has been logged (as a transition from none).
    announced: bool,
    /// Whether the fetch being applied returned this series.
    present: bool,
}

impl SeriesState {
    /// When its value expires: its last refresh plus the signal's `max_staleness`.
    fn expires_ms(&self, max_staleness_ms: i64) -> i64 {
        self.last_seen_ms.saturating_add(max_staleness_ms)
    }
}

/// A status change, as logged and counted.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// The signal.
    pub signal: String,
    /// The series' labels.
    pub labels: Labels,
    /// The old status; `None` for a new series.
    pub from: Option<Status>,
    /// The new status; `None` for a forgotten series.
    pub to: Option<Status>,
}

/// Why a fetch failed: the source's error with its chain of causes (logged and kept
/// as the signal's reason with every cause).
pub type FetchError = Box<dyn std::error::Error + Send + Sync>;

/// What the source returned for a planned range.
pub type FetchResult = std::result::Result<Vec<LabeledSeries>, FetchError>;

/// One signal's state.
#[derive(Debug)]
pub struct SignalState {
    settings: SignalSettings,
    /// `settings.tracker`, shared by the trackers of all the signal's series (a
    /// reload keeps a signal's state only when these are unchanged).
    tracker_settings: Arc<TrackerSettings>,
    /// Boxed: a B-tree node holds 11 values inline and is often half full, so a
    /// ~700-byte state inline cost ~2.4 KiB of node per series at 100k series; a
    /// box costs its size plus a pointer in the node.
    series: BTreeMap<Labels, Box<SeriesState>>,
    /// The last grid point successfully fetched.
    fetched_to_ms: Option<i64>,
    last_error: Option<String>,
    /// A series appeared in an incremental fetch: fetch the whole window next, so it
    /// starts with its history instead of warming up from nothing.
    backfill_pending: bool,
    /// Failed refreshes in a row, so that an outage is logged once a minute.
    outage: Outage,
}

/// How often a continuing outage of one signal's source is logged again.
const OUTAGE_LOG_EVERY_MS: i64 = 60_000;

/// Failed refreshes in a row: an outage is logged when it starts, then once per
/// [`OUTAGE_LOG_EVERY_MS`] with the count so far, and when it ends — not once per
/// attempt (every few seconds, for as long as Prometheus is down).
#[derive(Debug, Default, Clone, PartialEq)]
struct Outage {
    since_ms: Option<i64>,
    failures: u64,
    last_logged_ms: i64,
}

impl Outage {
    /// Counts a failure at `now_ms`; true when it is to be logged.
    fn fail(&mut self, now_ms: i64) -> bool {
        self.failures += 1;
        match self.since_ms {
            None => {
                self.since_ms = Some(now_ms);
                self.last_logged_ms = now_ms;
                true
            }
            Some(_) if now_ms - self.last_logged_ms >= OUTAGE_LOG_EVERY_MS => {
                self.last_logged_ms = now_ms;
                true
            }
            Some(_) => false,
        }
    }

    /// A success at `now_ms`: the failures and milliseconds of the outage it ends.
    fn recover(&mut self, now_ms: i64) -> Option<(u64, i64)> {
        let since = self.since_ms.take()?;
        let failures = std::mem::take(&mut self.failures);
        Some((failures, now_ms - since))
    }
}

impl SignalState {
    /// A signal with nothing fetched yet.
    pub fn new(settings: SignalSettings) -> Self {
        Self {
            tracker_settings: Arc::new(settings.tracker.clone()),
            settings,
            series: BTreeMap::new(),
            fetched_to_ms: None,
            last_error: None,
            backfill_pending: false,
            outage: Outage::default(),
        }
    }

    /// The signal's settings.
    pub fn settings(&self) -> &SignalSettings {
        &self.settings
    }

    /// The range to fetch at `now_ms`: the whole history window at first (and after a
    /// new series appeared), then the grid points since the last successful fetch
    /// (never more than the window); `None` when no new grid point has passed.
    pub fn due(&self, now_ms: i64) -> Option<Range> {
        let step = self.settings.step_ms();
        let end = align_down(now_ms, step);
        let window_start = end - (self.settings.tracker.history_steps as i64 - 1) * step;
        let start = match self.fetched_to_ms {
            None => window_start,
            Some(_) if self.backfill_pending => window_start,
            Some(done) if done >= end => return None,
            Some(done) => (done + step).max(window_start),
        };
        Range::try_new(start, end, step).ok()
    }

    /// Takes the result of fetching `range` at `now_ms`: feeds the trackers, decides
    /// what each series serves and updates statuses. Returns the transitions.
    pub fn apply(
        &mut self,
        now_ms: i64,
        range: Range,
        result: FetchResult,
        metrics: &Metrics,
    ) -> Vec<Transition> {
        let label = SignalLabel {
            signal: self.settings.name.clone(),
        };
        let mut transitions = Vec::new();
        // Which series this fetch returned: a flag on each, not a set of label maps
        // (comparing label maps dominated the cycle at 100k series).
        for st in self.series.values_mut() {
            st.present = false;
        }
        match result {
            Ok(fetched) => {
                let incremental = self.fetched_to_ms.is_some() && !self.backfill_pending;
                self.backfill_pending = false;
                self.fetched_to_ms = Some(range.end_ms);
                self.last_error = None;
                if let Some((failures, ms)) = self.outage.recover(now_ms) {
                    tracing::info!(
                        signal = %self.settings.name,
                        failures,
                        seconds = ms / 1_000,
                        "refresh recovered"
                    );
                }
                for ls in fetched {
                    let mut labels = ls.labels;
                    // The metric name is the signal's; the HPA selects on the others.
                    labels.remove("__name__");
                    let values = on_grid(ls.series, range);
                    if !values.iter().any(|v| v.is_finite()) {
                        continue;
                    }
                    let st = match self.series.entry(labels) {
                        std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
                        std::collections::btree_map::Entry::Vacant(_) if incremental => {
                            // Created on the next (whole-window) fetch, with its history.
                            self.backfill_pending = true;
                            continue;
                        }
                        std::collections::btree_map::Entry::Vacant(v) => {
                            let tracker = new_tracker(&self.tracker_settings, v.key(), range);
                            v.insert(Box::new(SeriesState {
                                tracker,
                                next_ms: range.start_ms,
                                last_seen_ms: now_ms,
                                status: Status::Warming,
                                entry: None,
                                next_forecast: None,
                                errors: ErrorSums::default(),
                                announced: false,
                                present: false,
                            }))
                        }
                    };
                    if st.next_ms == range.start_ms {
                        record_error(st, values.first().copied());
                    }
                    feed(st, &values, range, self.settings.tracker.history_steps);
                    st.last_seen_ms = now_ms;
                    st.present = true;
                }
                let scores: Vec<f64> = self
                    .series
                    .values()
                    .filter_map(|st| st.errors.mase())
                    .collect();
                if !scores.is_empty() {
                    let mean = scores.iter().sum::<f64>() / scores.len() as f64;
                    metrics.forecast_error.get_or_create(&label).set(mean);
                }
                // Series the query no longer returns keep their grid position with gaps.
                for st in self.series.values_mut() {
                    if !st.present {
                        let gaps = vec![f64::NAN; range.len()];
                        feed(st, &gaps, range, self.settings.tracker.history_steps);
                    }
                }
            }
            Err(error) => {
                let message = error_chain(&*error);
                metrics.source_errors.get_or_create(&label).inc();
                if self.outage.fail(now_ms) {
                    let failures = self.outage.failures;
                    if failures == 1 {
                        tracing::warn!(signal = %self.settings.name, error = %message, "refresh failed");
                    } else {
                        tracing::warn!(
                            signal = %self.settings.name,
                            error = %message,
                            failures,
                            "refresh still failing (logged once a minute)"
                        );
                    }
                } else {
                    tracing::debug!(signal = %self.settings.name, error = %message, "refresh failed");
                }
                self.last_error = Some(message);
            }
        }
        let name = self.settings.name.clone();
        let step_s = u64::try_from(self.settings.step_ms() / 1_000)
            .unwrap_or(0)
            .max(1);
        let forget_ms = self.settings.history_ms.max(self.settings.max_staleness_ms);
        // Deciding is where the models are fitted: spread it over the cores. Each
        // series is independent, so the result does not depend on the order.
        let quantile = self.settings.tracker.policy.quantile;
        let shadow = self.settings.shadow;
        let max_staleness_ms = self.settings.max_staleness_ms;
        self.series
            .par_iter_mut()
            .filter(|(_, st)| st.present)
            .for_each(|(labels, st)| {
                let d = st.tracker.decide(now_ms);
                st.next_forecast = d.forecast.as_ref().and_then(|f| f.mean.first().copied());
                let status = if d.warming {
                    Status::Warming
                } else {
                    Status::Ok
                };
                let mut entry = entry_from(
                    labels,
                    status,
                    &d,
                    quantile,
                    st.next_ms - range.step_ms,
                    step_s,
                );
                entry.detail.backtest_mase = st.errors.mase();
                entry.expires_ms = st.expires_ms(max_staleness_ms);
                if let Some(sh) = shadow {
                    shadow_entry(&mut entry, &d, sh, &name, step_s, metrics);
                }
                st.entry = Some(Arc::new(entry));
            });
        let mut forgotten = Vec::new();
        for (labels, st) in self.series.iter_mut() {
            let old = st.announced.then_some(st.status);
            st.announced = true;
            let new = if st.present {
                st.entry.as_ref().map_or(Status::Warming, |e| e.status)
            } else {
                let age = now_ms - st.last_seen_ms;
                // Only a source that answers can say a series is gone; during an
                // outage every series stays (failed), so the API keeps answering 503.
                if age > forget_ms && self.last_error.is_none() {
                    forgotten.push(labels.clone());
                    continue;
                }
                let status = if age <= self.settings.max_staleness_ms {
                    Status::Stale
                } else {
                    Status::Failed
                };
                let reason = self
                    .last_error
                    .as_deref()
                    .unwrap_or("series missing from the latest query result");
                // Copied (from the snapshots that share it) only when it changes.
                if let Some(e) = st.entry.as_mut() {
                    if e.status != status || e.detail.reason.as_deref() != Some(reason) {
                        let e = Arc::make_mut(e);
                        e.status = status;
                        e.detail.reason = Some(reason.to_string());
                    }
                }
                status
            };
            st.status = new;
            if old != Some(new) {
                transitions.push(Transition {
                    signal: name.clone(),
                    labels: labels.clone(),
                    from: old,
                    to: Some(new),
                });
            }
        }
        for labels in forgotten {
            if let Some(st) = self.series.remove(&labels) {
                transitions.push(Transition {
                    signal: name.clone(),
                    labels,
                    from: Some(st.status),
                    to: None,
                });
            }
        }
        for t in &transitions {
            record_transition(t, metrics);
        }
        for status in [Status::Warming, Status::Ok, Status::Stale, Status::Failed] {
            let n = self.series.values().filter(|s| s.status == status).count();
            metrics
                .series
                .get_or_create(&StatusLabel {
                    signal: name.clone(),
                    status: status_name(status).to_string(),
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        transitions
    }

    /// What this signal serves: each series' entry shared, not copied.
    pub fn entry(&self) -> MetricEntry {
        MetricEntry {
            namespaces: self.settings.namespaces.clone(),
            custom: self.settings.custom.clone(),
            series: self
                .series
                .values()
                .filter_map(|s| {
                    let e = s.entry.as_ref()?;
                    let expires_ms = s.expires_ms(self.settings.max_staleness_ms);
                    Some(if e.expires_ms == expires_ms {
                        Arc::clone(e)
                    } else {
                        // Not reached: `apply` and `restamp` keep the expiry current.
                        let mut e = SeriesEntry::clone(e);
                        e.expires_ms = expires_ms;
                        Arc::new(e)
                    })
                })
                .collect(),
            error: self.last_error.clone(),
        }
    }

    /// Brings the entries' expiry up to the signal's `max_staleness` (changed by a
    /// reload that kept the signal's state).
    fn restamp(&mut self) {
        let max_staleness_ms = self.settings.max_staleness_ms;
        for st in self.series.values_mut() {
            let expires_ms = st.expires_ms(max_staleness_ms);
            if let Some(e) = st.entry.as_mut().filter(|e| e.expires_ms != expires_ms) {
                Arc::make_mut(e).expires_ms = expires_ms;
            }
        }
    }
}

/// A tracker for a series whose first point is `range.start_ms`; with spread refits,
/// placed on the grid at an offset given by its labels.
fn new_tracker(settings: &Arc<TrackerSettings>, labels: &Labels, range: Range) -> Tracker {
    let tracker = Tracker::new(Arc::clone(settings));
    if settings.spread_refits {
        tracker.with_grid(
            range.start_ms.div_euclid(range.step_ms.max(1)),
            labels_hash(labels),
        )
    } else {
        tracker
    }
}

/// FNV-1a over the labels: stable across processes and builds (unlike the std
/// hasher's random keys), so replicas give a series the same refit offset.
fn labels_hash(labels: &Labels) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (k, v) in labels {
        for b in k.bytes().chain([0xff]).chain(v.bytes()).chain([0xfe]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// Appends `values` (the grid points of `range`) to a series, first filling any grid
/// points it missed with gaps (at most a history window of them).
fn feed(st: &mut SeriesState, values: &[f64], range: Range, history_steps: usize) {
    if st.next_ms < range.start_ms {
        let missed = usize::try_from((range.start_ms - st.next_ms) / range.step_ms).unwrap_or(0);
        st.tracker
            .observe(&vec![f64::NAN; missed.min(history_steps)]);
    }
    // Points the series already has (an overlapping range) are skipped.
    let skip = usize::try_from((st.next_ms - range.start_ms) / range.step_ms).unwrap_or(0);
    if skip < values.len() {
        st.tracker.observe(&values[skip..]);
    }
    st.next_ms = st.next_ms.max(range.end_ms + range.step_ms);
}

/// One-step errors the rolling MASE covers: a day of 5-minute steps, give or take
/// one block ([`ErrorSums`]).
const ERROR_WINDOW: usize = 288;

/// Blocks the MASE's window is summed in: the newest, being filled, and the
/// full ones before it.
const ERROR_BLOCKS: usize = 8;

/// One-step errors per block.
const ERROR_BLOCK: usize = ERROR_WINDOW / ERROR_BLOCKS;

// The blocks tile the window, and a block's count fits `ErrorSums::in_head`.
const _: () = assert!(ERROR_BLOCK * ERROR_BLOCKS == ERROR_WINDOW && ERROR_BLOCK < 256);

/// Recent one-step errors, (|forecast − actual|, |last value − actual|), summed per
/// block of [`ERROR_BLOCK`] steps in a ring of [`ERROR_BLOCKS`]: the MASE is over the
/// full blocks kept and the one being filled, the last 253 to 288 errors (a window
/// that drops a block at a time). 72 bytes a series, where keeping each of the 288
/// errors took 2.3 KiB; `f32` sums of 36 errors are ample for a ratio of sums.
#[derive(Debug, Default, Clone, PartialEq)]
struct ErrorSums {
    /// Per block: the sums of the forecast's and of the last value's errors.
    blocks: [(f32, f32); ERROR_BLOCKS],
    /// The block being filled.
    head: u8,
    /// Errors in the block being filled (0 before the first).
    in_head: u8,
    /// Full blocks kept besides it (at most [`ERROR_BLOCKS`] − 1).
    full: u8,
}

impl ErrorSums {
    /// Adds one step's errors of the forecast and of the last value.
    fn push(&mut self, forecast: f32, naive: f32) {
        if usize::from(self.in_head) == ERROR_BLOCK {
            self.head = (self.head + 1) % ERROR_BLOCKS as u8;
            self.blocks[usize::from(self.head)] = (0.0, 0.0);
            self.in_head = 0;
            self.full = (self.full + 1).min(ERROR_BLOCKS as u8 - 1);
        }
        let b = &mut self.blocks[usize::from(self.head)];
        b.0 += forecast;
        b.1 += naive;
        self.in_head += 1;
    }

    /// Errors in the window.
    fn len(&self) -> usize {
        usize::from(self.full) * ERROR_BLOCK + usize::from(self.in_head)
    }

    /// Mean absolute scaled error of the window's one-step forecasts: their mean
    /// absolute error over that of the last-value forecast on the same steps;
    /// `None` for fewer than 2 errors or a last value that never erred.
    fn mase(&self) -> Option<f64> {
        let kept = usize::from(self.full) + 1;
        let (e, naive) = (0..kept)
            .map(|back| (usize::from(self.head) + ERROR_BLOCKS - back) % ERROR_BLOCKS)
            .fold((0.0, 0.0), |(a, b), i| {
                let (e, n) = self.blocks[i];
                (a + f64::from(e), b + f64::from(n))
            });
        (self.len() >= 2 && naive > 0.0).then(|| e / naive)
    }
}

/// Records how the last decision's one-step forecast did against `actual`, next to
/// what repeating the last value would have done.
fn record_error(st: &mut SeriesState, actual: Option<f64>) {
    let (Some(f), Some(y), Some(prev)) = (st.next_forecast, actual, st.tracker.latest()) else {
        return;
    };
    if f.is_finite() && y.is_finite() {
        st.errors
            .push((f - y).abs() as f32, (prev - y).abs() as f32);
    }
}

/// The values of `series` at the grid points of `range`, `NAN` where it has none.
fn on_grid(series: crate::series::Series, range: Range) -> Vec<f64> {
    if series.start_ms == range.start_ms
        && series.step_ms == range.step_ms
        && series.len() == range.len()
    {
        // Taken, not copied: a backfill is a whole window per series.
        return series.values;
    }
    (0..range.len())
        .map(|i| {
            let ts = range.start_ms + i as i64 * range.step_ms;
            series.index_of(ts).map_or(f64::NAN, |j| series.values[j])
        })
        .collect()
}

/// Shadow mode: the entry serves the latest observation; the forecast's value
/// stays in the detail, and the replica-seconds it would have changed are counted.
fn shadow_entry(
    entry: &mut SeriesEntry,
    d: &Decision,
    shadow: Shadow,
    signal: &str,
    step_s: u64,
    metrics: &Metrics,
) {
    let Some(latest) = d.latest else { return };
    entry.value = latest;
    entry.detail.shadow = true;
    if let Some(why) = &mut entry.detail.why {
        why.text = format!(
            "shadow: serving the latest observation {latest}; the forecast would serve {}",
            why.text
        );
    }
    let (Some(target), Some(predicted)) = (shadow.hpa_target, d.value) else {
        return;
    };
    let change = (predicted / target).ceil() - (latest / target).ceil();
    if change.is_finite() && change != 0.0 {
        let label = ShadowLabel {
            signal: signal.to_string(),
            change: if change > 0.0 { "more" } else { "fewer" },
        };
        metrics
            .shadow_replica_seconds
            .get_or_create(&label)
            .inc_by(change.abs() * step_s as f64);
    }
}

fn entry_from(
    labels: &Labels,
    status: Status,
    d: &Decision,
    quantile: f64,
    last_ms: i64,
    window_s: u64,
) -> SeriesEntry {
    let path = |q: f64| {
        d.forecast
            .as_ref()
            .and_then(|f| f.quantile(q))
            .map(<[f64]>::to_vec)
            .unwrap_or_default()
    };
    SeriesEntry {
        labels: labels.clone(),
        status,
        value: d.value.unwrap_or(f64::NAN),
        timestamp_ms: last_ms,
        window_s,
        // Set from the series' last refresh when the snapshot is built.
        expires_ms: i64::MIN,
        detail: SeriesDetail {
            model: d.model.clone(),
            last_fit_ms: d.last_fit_ms,
            backtest_mase: None,
            latest: d.latest,
            forecast_mean: d
                .forecast
                .as_ref()
                .map(|f| f.mean.clone())
                .unwrap_or_default(),
            forecast_quantile: path(quantile),
            forecast_lower: path(INTERVAL.0),
            forecast_upper: path(INTERVAL.1),
            reason: d.fit_error.clone(),
            predicted: d.value,
            shadow: false,
            why: d.served.map(|sv| crate::snapshot::Why {
                text: sv.describe(quantile),
                quantile,
                steps_due: sv.due,
                forecast_peak: sv.peak,
                peak_step: sv.peak_step,
                latest: sv.latest,
                floor_applied: sv.floor_applied,
                tolerance_factor: sv.factor,
                calibration: d.calibration.map(|c| crate::snapshot::CalibrationDoc {
                    outcomes: c.outcomes,
                    model_peak: c.model_peak,
                    recent_level: c.recent_level,
                    base: c.base,
                    offset: c.offset.is_finite().then_some(c.offset),
                }),
            }),
        },
    }
}

fn status_name(s: Status) -> &'static str {
    match s {
        Status::Warming => "warming",
        Status::Ok => "ok",
        Status::Stale => "stale",
        Status::Failed => "failed",
    }
}

fn record_transition(t: &Transition, metrics: &Metrics) {
    let from = t.from.map_or("none", status_name);
    let to = t.to.map_or("gone", status_name);
    let series = t.labels.to_string();
    match t.to {
        Some(Status::Stale | Status::Failed) => {
            tracing::warn!(signal = %t.signal, series = %series, from, to, "series status changed")
        }
        _ => {
            tracing::info!(signal = %t.signal, series = %series, from, to, "series status changed")
        }
    }
    metrics
        .transitions
        .get_or_create(&TransitionLabel {
            signal: t.signal.clone(),
            from: from.to_string(),
            to: to.to_string(),
        })
        .inc();
}

/// All mutable serving state; synchronous, time is an argument.
#[derive(Debug)]
pub struct Core {
    signals: Vec<SignalState>,
    metrics: Metrics,
    /// Since when the source's data has lagged the clock by more than
    /// [`LAG_WARN_MS`] (logged when it starts and when it ends).
    lagging_since: Option<i64>,
}

/// A source whose newest sample is older than this is logged as lagging.
const LAG_WARN_MS: i64 = 60_000;

/// A planned fetch: which signal, its query, which range.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    /// Index of the signal in the core.
    pub signal: usize,
    /// The query to run.
    pub query: String,
    /// The grid points to fetch.
    pub range: Range,
}

impl Core {
    /// A core for these signals.
    pub fn new(signals: Vec<SignalSettings>, metrics: Metrics) -> Self {
        Self {
            signals: signals.into_iter().map(SignalState::new).collect(),
            metrics,
            lagging_since: None,
        }
    }

    /// The signals' states.
    pub fn signals(&self) -> &[SignalState] {
        &self.signals
    }

    /// What to fetch at `now_ms` from a source that holds data up to `frontier_ms`
    /// ([`Source::frontier`]): grid points after the frontier wait for it, since a
    /// query there would return an older sample repeated (after a Prometheus stall)
    /// as if it were new.
    pub fn plan(&mut self, now_ms: i64, frontier_ms: Option<i64>) -> Vec<Planned> {
        let upto = frontier_ms.map_or(now_ms, |f| f.min(now_ms));
        self.note_lag(now_ms, now_ms - upto);
        self.signals
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                s.due(upto).map(|range| Planned {
                    signal: i,
                    query: s.settings.query.clone(),
                    range,
                })
            })
            .collect()
    }

    /// Exports how far the source's data is behind the clock, and logs a lag of
    /// more than [`LAG_WARN_MS`] when it starts and when it ends.
    fn note_lag(&mut self, now_ms: i64, lag_ms: i64) {
        self.metrics.source_lag.set(lag_ms as f64 / 1_000.0);
        match self.lagging_since {
            None if lag_ms > LAG_WARN_MS => {
                self.lagging_since = Some(now_ms);
                tracing::warn!(
                    seconds = lag_ms / 1_000,
                    "the source's newest sample is behind the clock; newer grid points are read once it catches up, series expire after max_staleness"
                );
            }
            Some(since) if lag_ms <= LAG_WARN_MS => {
                self.lagging_since = None;
                tracing::info!(seconds = (now_ms - since) / 1_000, "the source caught up");
            }
            _ => {}
        }
    }

    /// Applies fetch results (with how long each fetch took) at `now_ms`.
    pub fn apply(
        &mut self,
        now_ms: i64,
        results: Vec<(Planned, FetchResult, std::time::Duration)>,
    ) -> Vec<Transition> {
        let mut all = Vec::new();
        for (planned, result, took) in results {
            let Some(signal) = self.signals.get_mut(planned.signal) else {
                continue;
            };
            self.metrics
                .refresh_seconds
                .get_or_create(&SignalLabel {
                    signal: signal.settings.name.clone(),
                })
                .observe(took.as_secs_f64());
            all.extend(signal.apply(now_ms, planned.range, result, &self.metrics));
        }
        all
    }

    /// How the refits of every series went so far (summed over the trackers).
    pub fn refit_counts(&self) -> crate::plan::tracker::RefitCounts {
        let mut all = crate::plan::tracker::RefitCounts::default();
        for st in self.signals.iter().flat_map(|s| s.series.values()) {
            let r = st.tracker.refit_counts();
            all.selected += r.selected;
            all.reused += r.reused;
            all.drifted += r.drifted;
        }
        all
    }

    /// How far loading has come: signals whose first fetch has been applied (with
    /// series or an error), and the series held.
    pub fn loaded(&self) -> Loaded {
        Loaded {
            signals_answered: self
                .signals
                .iter()
                .filter(|s| s.fetched_to_ms.is_some() || s.last_error.is_some())
                .count(),
            signals_total: self.signals.len(),
            series: self.signals.iter().map(|s| s.series.len()).sum(),
        }
    }

    /// The snapshot to publish at `now_ms`: the signals' metrics, no node-pool plan
    /// (the engine adds its own).
    pub fn snapshot(&self, now_ms: i64) -> Snapshot {
        Snapshot {
            published_ms: now_ms,
            metrics: self
                .signals
                .iter()
                .map(|s| (s.settings.name.clone(), s.entry()))
                .collect(),
            plan: None,
        }
    }

    /// What `signal` is forecast to be `horizon_ms` from its newest point, summed
    /// over its series whose labels include all of `selector` (every series when it
    /// is empty): each series' [`Tracker::value_ahead`] over the steps that cover
    /// the horizon, the serving rule over a longer lead time.
    ///
    /// `None` when no signal is called `signal`, no series matches, or a matching
    /// series has failed or has no value yet: a partial sum would understate the
    /// demand.
    pub fn value_ahead(
        &self,
        signal: &str,
        selector: &BTreeMap<String, String>,
        horizon_ms: i64,
    ) -> Option<f64> {
        let signal = self.signals.iter().find(|s| s.settings.name == signal)?;
        let step = signal.settings.step_ms();
        let steps = usize::try_from((horizon_ms.max(1) + step - 1) / step).unwrap_or(usize::MAX);
        let mut total = None;
        for (labels, st) in &signal.series {
            let matches = selector
                .iter()
                .all(|(k, v)| labels.get(k).is_some_and(|have| have == v));
            if !matches {
                continue;
            }
            if st.status == Status::Failed {
                return None;
            }
            let v = st.tracker.value_ahead(steps)?;
            total = Some(total.unwrap_or(0.0) + v);
        }
        total
    }
}

/// The async shell around [`Core`]: fetches, updates, plans node pools, publishes,
/// on a tick.
pub struct Engine {
    core: Option<Core>,
    nodepools: Option<nodepools::NodePools>,
    source: Arc<dyn Source>,
    shared: Shared,
    clock: Arc<dyn Clock>,
    tick: std::time::Duration,
    /// Whether `tick` was set by [`Engine::with_tick`] (a reload then keeps it).
    tick_fixed: bool,
    reloads: Option<tokio::sync::mpsc::Receiver<Reload>>,
    /// Fetches in flight at once (fetched results not yet applied count too).
    max_fetches: usize,
    /// How far the first load has come (`/readyz`).
    progress: Arc<Progress>,
}

/// Fetches in flight at once by default: enough to keep a Prometheus busy, few
/// enough that the windows of a cold start are not all held at once.
pub const DEFAULT_MAX_FETCHES: usize = 8;

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("tick", &self.tick).finish()
    }
}

impl Engine {
    /// An engine over `signals`, reading `source`, publishing to `shared`. It wakes up
    /// every `tick` (the shortest signal step is a good choice) and fetches what is due.
    pub fn new(
        signals: Vec<SignalSettings>,
        source: Arc<dyn Source>,
        shared: Shared,
        clock: Arc<dyn Clock>,
        metrics: Metrics,
    ) -> Self {
        let tick = default_tick(&signals);
        let core = Core::new(signals, metrics);
        let progress = Arc::new(Progress::default());
        progress.set(core.loaded());
        Self {
            core: Some(core),
            nodepools: None,
            source,
            shared,
            clock,
            tick,
            tick_fixed: false,
            reloads: None,
            max_fetches: DEFAULT_MAX_FETCHES,
            progress,
        }
    }

    /// Keeps at most `n` (at least 1) fetches in flight, a fetched result counting
    /// until it is applied; [`DEFAULT_MAX_FETCHES`] otherwise.
    pub fn with_max_fetches(mut self, n: usize) -> Self {
        self.max_fetches = n.max(1);
        self
    }

    /// How far the first load has come: `not_ready()` is the `/readyz` detail until
    /// the first snapshot is published.
    pub fn progress(&self) -> Arc<Progress> {
        Arc::clone(&self.progress)
    }

    /// Takes new signals (a config reload) from `reloads` between steps while it runs.
    pub fn with_reloads(mut self, reloads: tokio::sync::mpsc::Receiver<Reload>) -> Self {
        self.reloads = Some(reloads);
        self
    }

    /// Applies `reload` now: swaps the signals (keeping unchanged ones' state) and
    /// the source, then publishes, so removed metrics disappear at once.
    pub fn reload(&mut self, reload: Reload) -> reload::Summary {
        let Some(core) = self.core.as_mut() else {
            return reload::Summary::default();
        };
        if !self.tick_fixed {
            self.tick = default_tick(&reload.signals);
        }
        if let Some(source) = reload.source {
            self.source = source;
        }
        let summary = core.reconfigure(reload.signals);
        tracing::info!(
            kept = ?summary.kept,
            started = ?summary.started,
            removed = ?summary.removed,
            "signals reloaded"
        );
        let mut snapshot = core.snapshot(self.clock.now_ms());
        // The node pools are not reconfigured: their plan stands until the next step.
        snapshot.plan = self.nodepools.as_ref().and_then(nodepools::NodePools::plan);
        self.shared.publish(snapshot);
        summary
    }

    /// Wakes up every `tick` instead of the default.
    pub fn with_tick(mut self, tick: std::time::Duration) -> Self {
        self.tick = tick;
        self.tick_fixed = true;
        self
    }

    /// Plans node pools every step, after the signals are forecast.
    pub fn with_nodepools(mut self, nodepools: nodepools::NodePools) -> Self {
        self.nodepools = Some(nodepools);
        self
    }

    /// The core, for inspection between steps.
    pub fn core(&self) -> Option<&Core> {
        self.core.as_ref()
    }

    /// One step at the clock's `now`: fetch what is due, update, publish.
    ///
    /// At most [`Engine::with_max_fetches`] fetches are in flight, and a fetched
    /// result counts against that bound until it has been applied: results are
    /// applied in batches (whatever has arrived) while the other fetches go on, so
    /// the points held at once are a few signals' worth, not every signal's window
    /// (a cold start of 100k series fetched at once held ~8 GB).
    ///
    /// # Errors
    /// [`Error::Update`] when the update task panicked (the core is then lost).
    pub async fn step(&mut self) -> Result<Vec<Transition>> {
        let now_ms = self.clock.now_ms();
        let Some(mut core) = self.core.take() else {
            return Ok(Vec::new());
        };
        let frontier = self.source.frontier(now_ms).await;
        let planned = core.plan(now_ms, frontier);
        let loading = !self.shared.is_ready();
        // The cluster is read while the signals are fetched.
        let observe = async {
            if let Some(np) = self.nodepools.as_mut() {
                np.refresh(now_ms).await;
            }
        };
        let fetch_apply = fetch_and_apply(
            core,
            planned,
            Arc::clone(&self.source),
            now_ms,
            self.max_fetches,
            loading.then_some(self.progress.as_ref()),
        );
        let ((), applied) = tokio::join!(observe, fetch_apply);
        let (core, transitions) = applied?;
        let nodepool_input = self.nodepools.as_ref().map(nodepools::NodePools::input);
        let (core, mut snapshot, plan) = tokio::task::spawn_blocking(move || {
            let mut snap = core.snapshot(now_ms);
            let mut plan = None;
            if let Some((planner, observed)) = nodepool_input {
                let outcome = planner.plan(&core, now_ms, observed.as_ref());
                snap.metrics.extend(outcome.metrics);
                plan = outcome.plan;
            }
            (core, snap, plan)
        })
        .await
        .map_err(Error::Update)?;
        if loading {
            let loaded = core.loaded();
            self.progress.set(loaded);
            tracing::info!(
                series = loaded.series,
                signals = loaded.signals_total,
                answered = loaded.signals_answered,
                "first load done; publishing"
            );
        }
        self.core = Some(core);
        if let Some(np) = self.nodepools.as_mut() {
            snapshot.plan = np.keep(plan);
        }
        // One publication: readers see the metrics and the plan of the same step.
        self.shared.publish(snapshot);
        self.progress.finish();
        Ok(transitions)
    }

    /// Runs steps every tick, and applies reloads between them, until `shutdown`
    /// completes (also in the middle of a step).
    ///
    /// # Errors
    /// As [`Engine::step`].
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
        let mut interval = tokio::time::interval(self.tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut reloads = self.reloads.take();
        tokio::pin!(shutdown);
        loop {
            let next_reload = async {
                match reloads.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = &mut shutdown => {
                    tracing::info!("engine stopping");
                    return Ok(());
                }
                reload = next_reload => match reload {
                    Some(reload) => {
                        self.reload(reload);
                        // New signals fetch at once, at the new pace.
                        interval = tokio::time::interval(self.tick);
                        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    }
                    // Nobody can reload any more: keep running as configured.
                    None => reloads = None,
                },
                _ = interval.tick() => {
                    // A step waits on the source (up to its timeout): stop without
                    // waiting for it, the step's result is of no use any more.
                    tokio::select! {
                        r = self.step() => { r?; }
                        () = &mut shutdown => {
                            tracing::info!("engine stopping (a refresh was cut short)");
                            return Ok(());
                        }
                    }
                }
            }
        }
    }
}

/// How often to wake up for `signals`: a fraction of the shortest step keeps the
/// served value at most a fraction of a step behind the grid, without hammering the
/// source (fetches happen only when due).
fn default_tick(signals: &[SignalSettings]) -> std::time::Duration {
    let min_step = signals
        .iter()
        .map(SignalSettings::step_ms)
        .min()
        .unwrap_or(1_000);
    let tick_ms = u64::try_from((min_step / 4).clamp(100, 15_000)).unwrap_or(1_000);
    std::time::Duration::from_millis(tick_ms)
}

/// An error with its causes, on one line.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Fetches `planned` with at most `max_fetches` slots in flight (a fetch of more
/// than [`BACKFILL_SLOT_POINTS`] points per series takes several) and applies the results
/// to `core` in batches on a blocking thread (fits can take a while), as they
/// arrive. A result keeps its fetch's permit until it is applied, so at most
/// `max_fetches` results exist at once. Within a batch, results are applied in
/// planned order. With `progress`, records after each batch how far the load is
/// and logs it (at most every few seconds).
async fn fetch_and_apply(
    core: Core,
    planned: Vec<Planned>,
    source: Arc<dyn Source>,
    now_ms: i64,
    max_fetches: usize,
    progress: Option<&Progress>,
) -> Result<(Core, Vec<Transition>)> {
    let max_fetches = max_fetches.max(1);
    let permits = Arc::new(tokio::sync::Semaphore::new(max_fetches));
    let mut tasks = tokio::task::JoinSet::new();
    for (order, p) in planned.into_iter().enumerate() {
        let source = Arc::clone(&source);
        let permits = Arc::clone(&permits);
        // A long range (a backfill) takes a slot per BACKFILL_SLOT_POINTS points, so
        // fewer of them are in flight: a week at 1 minute takes 4 of the 8.
        let weight = p
            .range
            .len()
            .div_ceil(BACKFILL_SLOT_POINTS)
            .clamp(1, max_fetches);
        let weight = u32::try_from(weight).unwrap_or(1);
        tasks.spawn(async move {
            // The semaphore is never closed; without a permit the fetch just runs.
            let permit = permits.acquire_many_owned(weight).await.ok();
            let started = tokio::time::Instant::now();
            let result = source
                .fetch(&p.query, p.range)
                .await
                .map_err(FetchError::from);
            (order, p, result, started.elapsed(), permit)
        });
    }
    let mut core = core;
    let mut transitions = Vec::new();
    let mut logged = tokio::time::Instant::now();
    let started = logged;
    while let Some(first) = tasks.join_next().await {
        let mut batch = Vec::new();
        let mut take = |joined: std::result::Result<_, tokio::task::JoinError>| match joined {
            Ok(r) => batch.push(r),
            Err(e) => tracing::error!(error = %e, "fetch task ended abnormally"),
        };
        take(first);
        // Whatever else has arrived goes in the same batch.
        while let Some(joined) = tasks.try_join_next() {
            take(joined);
        }
        batch.sort_by_key(|r| r.0);
        let (results, permits): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .map(|(_, p, r, d, permit)| ((p, r, d), permit))
            .unzip();
        let (c, t) = tokio::task::spawn_blocking(move || {
            let mut core = core;
            let t = core.apply(now_ms, results);
            (core, t)
        })
        .await
        .map_err(Error::Update)?;
        // Applied: the fetched points are gone, the next fetches may start.
        drop(permits);
        core = c;
        transitions.extend(t);
        if let Some(progress) = progress {
            let loaded = core.loaded();
            progress.set(loaded);
            if logged.elapsed() >= LOAD_LOG_EVERY && !tasks.is_empty() {
                logged = tokio::time::Instant::now();
                tracing::info!(
                    series = loaded.series,
                    answered = loaded.signals_answered,
                    signals = loaded.signals_total,
                    seconds = started.elapsed().as_secs(),
                    "loading"
                );
            }
        }
    }
    Ok((core, transitions))
}

/// Points per series of a fetch that take one of the fetch slots: a fetch of a
/// longer range (a backfill) takes more slots, so fewer whole windows are in
/// flight at once.
pub const BACKFILL_SLOT_POINTS: usize = 2_520;

/// How often the first load's progress is logged.
const LOAD_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

pub mod loading;
pub mod nodepools;
pub mod reload;
pub use loading::{Loaded, Progress};
pub use reload::Reload;

#[cfg(test)]
mod tests;
