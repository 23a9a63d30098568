//! The immutable set of everything the server answers with.
//!
//! The engine loop builds a new [`Snapshot`] every step and swaps it in whole;
//! request handlers, the gRPC expander and the CapacityBuffer writer only ever read
//! the current one, so serving never waits on Prometheus or on a model, and the
//! metrics and the node-pool plan a reader sees always come from the same step.

pub mod metrics;

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::custom::Mapping;
use crate::plan::nodepool::Plan;
use crate::series::Labels;

/// How far a series' served value can be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Not enough history for a forecast yet: the latest observation is served.
    Warming,
    /// Fresh data and a current forecast.
    Ok,
    /// The source is failing; the last good value is served until `max_staleness`.
    Stale,
    /// Older than `max_staleness`: requests get an error so the HPA holds its replicas.
    Failed,
}

/// One series of a signal, as the API serves it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SeriesEntry {
    /// The series' labels; they become `metricLabels` and are matched by selectors.
    pub labels: Labels,
    /// Health of this series.
    pub status: Status,
    /// The value an HPA should act on (already floored and maximised over the lead time).
    pub value: f64,
    /// Unix milliseconds of the newest observation the value is based on.
    pub timestamp_ms: i64,
    /// The window the value covers, in seconds (the signal's step).
    pub window_s: u64,
    /// Unix milliseconds after which the value must not be served: the last refresh
    /// that returned this series plus the signal's `max_staleness`. Readers check it
    /// against their own clock ([`SeriesEntry::status_at`]), so a value cannot outlive
    /// its staleness bound even when the engine stops publishing (a hung source).
    pub expires_ms: i64,
    /// Why this value: the model, its scores and the forecast, for `/debug/signals`.
    pub detail: SeriesDetail,
}

impl SeriesEntry {
    /// The status to serve at `now_ms`: [`Status::Failed`] once the value has
    /// expired, whatever the engine last said.
    pub fn status_at(&self, now_ms: i64) -> Status {
        if now_ms > self.expires_ms {
            Status::Failed
        } else {
            self.status
        }
    }
}

/// The explanation behind a served value.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct SeriesDetail {
    /// Name of the model that produced the forecast (`last-value` while warming).
    pub model: String,
    /// Unix milliseconds of the last full fit.
    pub last_fit_ms: Option<i64>,
    /// The rolling one-step-ahead MASE of this series' served forecasts: their mean
    /// absolute error one step ahead over that of repeating the last value, over
    /// the last 253 to 288 steps (summed in blocks of 36, the oldest block dropped
    /// whole); below 1 beats the last value. `None` before 2 errors.
    pub backtest_mase: Option<f64>,
    /// The latest observed value.
    pub latest: Option<f64>,
    /// Mean forecast path over the lead time.
    pub forecast_mean: Vec<f64>,
    /// The served quantile's path over the lead time.
    pub forecast_quantile: Vec<f64>,
    /// Lower edge of the forecast interval over the lead time: the 10% quantile
    /// ([`crate::plan::tracker::INTERVAL`]).
    pub forecast_lower: Vec<f64>,
    /// Upper edge of the forecast interval over the lead time: the 90% quantile.
    pub forecast_upper: Vec<f64>,
    /// Free-form reason for the current status (an error message when stale or failed).
    pub reason: Option<String>,
    /// How the served value came about (`None` while warming).
    pub why: Option<Why>,
    /// What the predictive rule gives: the served value, except in shadow mode.
    pub predicted: Option<f64>,
    /// Shadow mode: the latest observation is served, `predicted` only reported.
    pub shadow: bool,
}

/// How a served value came about, in words and in its parts: the rule of
/// [`crate::plan::serve`] applied at the moment the value was decided.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Why {
    /// The rule in words, e.g. `1.1 × max(q0.9 forecast 128.25 at step 1 of 1, latest 18) = 141.08`.
    pub text: String,
    /// The forecast quantile served.
    pub quantile: f64,
    /// Forecast steps due within the lead time (0: the latest is served).
    pub steps_due: usize,
    /// The largest forecast of the quantile over those steps, and its step (1-based).
    pub forecast_peak: Option<f64>,
    /// The step of `forecast_peak`.
    pub peak_step: Option<usize>,
    /// The reactive floor: the latest observation, or on a grid finer than the
    /// HPA's sync period the served quantile of that period's points.
    pub latest: Option<f64>,
    /// Whether the floor, not the forecast, set the value.
    pub floor_applied: bool,
    /// `1 + hpa_tolerance`: what the value was multiplied by for the HPA's band.
    pub tolerance_factor: f64,
    /// How the quantile's band was calibrated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calibration: Option<CalibrationDoc>,
}

/// [`crate::plan::Calibration`] as `/debug/signals` shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CalibrationDoc {
    /// Past peak forecasts with a known outcome that set the offset (0: the model's own band).
    pub outcomes: usize,
    /// The model's largest mean forecast over the lead time.
    pub model_peak: f64,
    /// The recent level (median of the last minute) the band stands on at least.
    pub recent_level: Option<f64>,
    /// Where the band stands: the larger of the two.
    pub base: f64,
    /// The served quantile's offset above `base`.
    pub offset: Option<f64>,
}

/// Everything one signal serves.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct MetricEntry {
    /// Namespaces allowed to read this metric; `None` means all.
    pub namespaces: Option<Vec<String>>,
    /// One entry per series the signal's query returned, shared with the engine's
    /// state and with the snapshots before this one while the series' entry is
    /// unchanged (publishing a step clones a pointer per series, not the entry).
    #[serde(serialize_with = "serialize_series")]
    pub series: Vec<Arc<SeriesEntry>>,
    /// Why the signal's last refresh failed; `None` when it succeeded. A signal can
    /// fail before it has any series (the source is down at start), and the API
    /// then says 503 "source failing" rather than 404 "no such series".
    pub error: Option<String>,
    /// For a custom metric (`custom.metrics.k8s.io`): which objects its series
    /// describe; `None` for an external metric.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_mapping"
    )]
    pub custom: Option<Arc<Mapping>>,
}

/// `Arc` is not `Serialize` without serde's `rc` feature; the entries inside are.
fn serialize_series<S: serde::Serializer>(
    series: &[Arc<SeriesEntry>],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(series.iter().map(|s| &**s))
}

/// `Arc` is not `Serialize` without serde's `rc` feature; the mapping inside is.
fn serialize_mapping<S: serde::Serializer>(
    mapping: &Option<Arc<Mapping>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serde::Serialize::serialize(&mapping.as_deref(), serializer)
}

/// The immutable set of everything the server answers with.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Snapshot {
    /// Unix milliseconds when this snapshot was published.
    pub published_ms: i64,
    /// Metric (signal) name to what it serves.
    pub metrics: BTreeMap<String, MetricEntry>,
    /// The node-pool plan, which the gRPC expander and the CapacityBuffer writer
    /// read; published with the `prescale_nodepool_*` metrics it came from. `None`
    /// without node pools or before a first plan. Readers judge its age by its
    /// `computed_at_ms`: a step that can plan no pool keeps the previous plan.
    #[serde(skip)]
    pub plan: Option<Arc<Plan>>,
}

/// The handle through which the engine publishes and handlers read snapshots.
#[derive(Debug, Clone)]
pub struct Shared {
    current: Arc<ArcSwap<Snapshot>>,
    ready: Arc<std::sync::atomic::AtomicBool>,
    /// Counts publications, for readers that wait for the next one.
    published: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Default for Shared {
    fn default() -> Self {
        Self::new()
    }
}

impl Shared {
    /// An empty handle: not ready until the first [`Shared::publish`].
    pub fn new() -> Self {
        Self {
            current: Arc::new(ArcSwap::from_pointee(Snapshot::default())),
            ready: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            published: Arc::new(tokio::sync::watch::channel(0).0),
        }
    }

    /// Replaces the current snapshot; readers see either the old or the new one whole.
    pub fn publish(&self, snapshot: Snapshot) {
        self.current.store(Arc::new(snapshot));
        self.ready.store(true, std::sync::atomic::Ordering::Release);
        // After the store: a woken reader loads the new snapshot.
        self.published.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that is notified of every publication after this call
    /// (`changed()` completes; several publications may be seen as one).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.published.subscribe()
    }

    /// How many receivers from [`Shared::subscribe`] are alive (one per open
    /// KEDA `StreamIsActive`).
    pub fn subscribers(&self) -> usize {
        self.published.receiver_count()
    }

    /// The current snapshot.
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Whether a snapshot has been published yet (readiness).
    pub fn is_ready(&self) -> bool {
        self.ready.load(std::sync::atomic::Ordering::Acquire)
    }
}
