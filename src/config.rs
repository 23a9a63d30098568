//! The `prescale serve` configuration file: YAML, validated up front.
//!
//! Every value that can be wrong on its own is a newtype that cannot hold a bad value
//! ([`Duration`], [`Quantile`], [`MetricName`]), and a model name is read as the
//! resolved [`ModelSpec`]; `Deserialize` goes through their `try_new` (or
//! [`ModelSpec::by_name`]), so serde reports the field path (`signals[2].quantile: ...`). Problems
//! that involve several fields (a lead time shorter than the step, two signals with
//! one name) are found by [`Config::validate`], which reports all of them at once,
//! each with its field path.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::forecast::ModelSpec;

pub mod custom;
pub mod keda;
pub mod nodepools;
pub mod upstream;

pub use custom::CustomConfig;
pub use keda::{KedaScalerConfig, KedaTlsConfig};
pub use nodepools::{
    CapacityBufferRef, CapacityBuffersConfig, ExpanderConfig, NodePoolConfig, Planning,
    ReplicaSelector, WorkloadConfig,
};
pub use upstream::{ServiceRef, UpstreamConfig, UpstreamsConfig};

/// Errors from reading and validating a configuration.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read config file {path}")]
    Read {
        /// The file asked for.
        path: PathBuf,
        /// Why it could not be read.
        #[source]
        source: std::io::Error,
    },
    /// The YAML does not match the schema (the message names the field path).
    #[error("the YAML does not match the configuration schema")]
    Parse(#[source] serde_yaml::Error),
    /// The values parse but do not make sense together; one line per problem.
    #[error("invalid configuration:\n  {}", .0.join("\n  "))]
    Invalid(Vec<String>),
}

/// Result with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Parses a duration written with units (`500ms`, `30s`, `5m`, `1h30m`, `7d`, `2w`)
/// into milliseconds; zero is allowed here. The one duration grammar of the config
/// file and the command line.
///
/// # Errors
/// A message saying what was expected, for an empty, unitless or overflowing text.
pub fn parse_duration_ms(text: &str) -> std::result::Result<u64, String> {
    let expected = || {
        format!("expected a duration such as \"30s\", \"5m\", \"1h30m\" or \"7d\", got {text:?}")
    };
    let s = text.trim();
    if s.is_empty() {
        return Err(expected());
    }
    let mut total_ms: u64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(expected());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| expected())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit_ms: u64 = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            _ => return Err(expected()),
        };
        rest = &rest[unit_len..];
        total_ms = n
            .checked_mul(unit_ms)
            .and_then(|v| total_ms.checked_add(v))
            .ok_or_else(expected)?;
    }
    Ok(total_ms)
}

/// A strictly positive duration written with units: `500ms`, `30s`, `5m`, `1h30m`, `7d`, `2w`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(into = "String")]
pub struct Duration(std::time::Duration);

impl Duration {
    /// A duration of `ms` milliseconds.
    ///
    /// # Errors
    /// When `ms` is zero.
    pub fn try_from_ms(ms: u64) -> std::result::Result<Self, String> {
        if ms == 0 {
            return Err("must be positive, got 0".to_string());
        }
        Ok(Self(std::time::Duration::from_millis(ms)))
    }

    /// Parses `30s`, `5m`, `1h30m`, `7d`, `500ms`, `2w`.
    ///
    /// # Errors
    /// A message saying what was expected, for an empty, unitless, zero or overflowing text.
    pub fn try_new(text: &str) -> std::result::Result<Self, String> {
        let total_ms = parse_duration_ms(text)?;
        Self::try_from_ms(total_ms).map_err(|_| format!("must be positive, got {text:?}"))
    }

    /// The duration in milliseconds (saturating at `i64::MAX`).
    pub fn as_ms(self) -> i64 {
        i64::try_from(self.0.as_millis()).unwrap_or(i64::MAX)
    }

    /// The duration as a [`std::time::Duration`].
    pub fn as_std(self) -> std::time::Duration {
        self.0
    }
}

impl TryFrom<String> for Duration {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Self, String> {
        Self::try_new(&s)
    }
}

impl From<Duration> for String {
    fn from(d: Duration) -> String {
        d.to_string()
    }
}

impl std::fmt::Display for Duration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = self.0.as_millis();
        for (unit, size) in [
            ("d", 86_400_000u128),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1_000),
        ] {
            if ms % size == 0 {
                return write!(f, "{}{unit}", ms / size);
            }
        }
        write!(f, "{ms}ms")
    }
}

/// A quantile level strictly inside (0, 1).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize)]
#[serde(into = "f64")]
pub struct Quantile(f64);

impl Quantile {
    /// A quantile level.
    ///
    /// # Errors
    /// When `q` is not in (0, 1).
    pub fn try_new(q: f64) -> std::result::Result<Self, String> {
        if q > 0.0 && q < 1.0 {
            Ok(Self(q))
        } else {
            Err(format!("must be in (0, 1), got {q}"))
        }
    }

    /// The level.
    pub fn get(self) -> f64 {
        self.0
    }
}

impl TryFrom<f64> for Quantile {
    type Error = String;
    fn try_from(q: f64) -> std::result::Result<Self, String> {
        Self::try_new(q)
    }
}

impl From<Quantile> for f64 {
    fn from(q: Quantile) -> f64 {
        q.0
    }
}

/// An external metric name: what an HPA writes in `metric.name`, and a URL path segment.
///
/// Starts with a letter; then letters, digits, `_`, `-`, `.` or `:`; at most 253 bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(into = "String")]
pub struct MetricName(String);

impl MetricName {
    /// A metric name.
    ///
    /// # Errors
    /// When the name is empty, too long, or has a character outside the allowed set.
    pub fn try_new(name: &str) -> std::result::Result<Self, String> {
        let ok_first = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
        let ok_rest = name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'));
        if ok_first && ok_rest && name.len() <= 253 {
            Ok(Self(name.to_string()))
        } else {
            Err(format!(
                "must start with a letter and contain only letters, digits, '_', '-', '.', ':' (at most 253), got {name:?}"
            ))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for MetricName {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Self, String> {
        Self::try_new(&s)
    }
}

impl From<MetricName> for String {
    fn from(n: MetricName) -> String {
        n.0
    }
}

impl std::fmt::Display for MetricName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

// The newtypes deserialize through visitors rather than `#[serde(try_from)]`: an error
// raised inside the visitor is attributed to the field itself (`signals[2].quantile`),
// while a `try_from` error surfaces one level up (`signals[2]`).

/// Visits a string and validates it with `parse`.
struct StrVisitor<T>(fn(&str) -> std::result::Result<T, String>, &'static str);

impl<T> serde::de::Visitor<'_> for StrVisitor<T> {
    type Value = T;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.1)
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<T, E> {
        (self.0)(v).map_err(E::custom)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_str(StrVisitor(Self::try_new, "a duration such as \"30s\""))
    }
}

/// A model is written as the name of a bundled spec and read as that spec, resolved.
fn model_by_name<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<ModelSpec, D::Error> {
    d.deserialize_str(StrVisitor(
        |name| ModelSpec::by_name(name).map_err(|e| e.to_string()),
        "a model name",
    ))
}

fn model_name<S: serde::Serializer>(
    spec: &ModelSpec,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(spec.name())
}

impl<'de> Deserialize<'de> for MetricName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_str(StrVisitor(Self::try_new, "a metric name"))
    }
}

struct QuantileVisitor;

impl serde::de::Visitor<'_> for QuantileVisitor {
    type Value = Quantile;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a number in (0, 1)")
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> std::result::Result<Quantile, E> {
        Quantile::try_new(v).map_err(E::custom)
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<Quantile, E> {
        Quantile::try_new(v as f64).map_err(E::custom)
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<Quantile, E> {
        Quantile::try_new(v as f64).map_err(E::custom)
    }
}

impl<'de> Deserialize<'de> for Quantile {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_f64(QuantileVisitor)
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where history comes from.
    pub prometheus: PrometheusConfig,
    /// What to forecast and serve: one entry per external metric.
    pub signals: Vec<SignalConfig>,
    /// How the API is served.
    #[serde(default)]
    pub server: ServerConfig,
    /// Node pools to plan for (node-pool recommendations and the expander).
    #[serde(default)]
    pub nodepools: Vec<NodePoolConfig>,
    /// Workloads whose forecasts size the node pools.
    #[serde(default)]
    pub workloads: Vec<WorkloadConfig>,
    /// Optional CapacityBuffer objects written from the node-pool plan.
    #[serde(default)]
    pub capacity_buffers: CapacityBuffersConfig,
    /// The cluster-autoscaler gRPC expander; not started when absent.
    #[serde(default)]
    pub expander: Option<ExpanderConfig>,
    /// `nodepools` and `workloads` as built values, what the engine plans from: made
    /// by [`Config::validate`] (set by [`Config::from_yaml`]), not read from the file.
    #[serde(skip)]
    pub planning: Planning,
}

/// The Prometheus HTTP API to read history from (Prometheus, Thanos, Mimir, VictoriaMetrics).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusConfig {
    /// Base URL of the HTTP API, e.g. `http://prometheus.monitoring:9090`.
    pub url: String,
    /// Timeout of one HTTP request; a refresh that times out counts as a source error.
    #[serde(default = "default_prometheus_timeout")]
    pub timeout: Duration,
    /// File holding a bearer token sent as `Authorization: Bearer ...` (re-read at start).
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
    /// PEM file of the CA that signs Prometheus' certificate, added to the system roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Skip TLS certificate verification (test setups only; logged as a warning).
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// Extra HTTP headers sent with every request (e.g. `X-Scope-OrgID` for Mimir).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Instant query whose value is the time (Unix seconds) of the newest sample
    /// Prometheus has ingested; grid points after it are not read yet, since PromQL's
    /// lookback would fill them with an older sample (after a stall, during a slow
    /// ingest). Empty switches the check off.
    #[serde(default = "default_freshness_query")]
    pub freshness_query: String,
    /// Grid points newer than now minus this are not read yet, for samples that
    /// arrive late (remote write from agents, federation): as a rule group's
    /// `query_offset` in Prometheus. None by default.
    #[serde(default)]
    pub query_offset: Option<Duration>,
}

/// Every scrape writes `up` with the scrape's time, so its newest timestamp is how
/// far Prometheus has ingested.
pub const DEFAULT_FRESHNESS_QUERY: &str = "max(timestamp(up))";

fn default_freshness_query() -> String {
    DEFAULT_FRESHNESS_QUERY.to_string()
}

const fn default_prometheus_timeout() -> Duration {
    // Long enough for a chunked backfill query, short enough that a hung Prometheus
    // is noticed well within the default staleness budget.
    Duration(std::time::Duration::from_secs(10))
}

/// One configured query, served as one external metric (possibly several series).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalConfig {
    /// The external metric name an HPA refers to.
    pub name: MetricName,
    /// PromQL; every series it returns is one forecast, its labels become `metricLabels`.
    pub query: String,
    /// Grid step of the history and of the forecast; a whole number of seconds.
    #[serde(default = "default_step")]
    pub step: Duration,
    /// How much history to keep and fit on (at least two seasons for seasonal models).
    #[serde(default = "default_history")]
    pub history: Duration,
    /// How far ahead capacity must be planned: pod start-up plus node provisioning.
    #[serde(default = "default_lead_time")]
    pub lead_time: Duration,
    /// Which forecast quantile to serve; higher means more head-room.
    #[serde(default = "default_quantile")]
    pub quantile: Quantile,
    /// Model name (see `models/`), or `auto` to pick per series by backtest;
    /// resolved into its spec when the config is read.
    #[serde(
        default = "default_model",
        deserialize_with = "model_by_name",
        serialize_with = "model_name"
    )]
    pub model: ModelSpec,
    /// Never serve less than the latest observation (what a reactive HPA would see);
    /// on a step finer than the HPA's 15 s sync period, than the served quantile of
    /// the last 15 s of points.
    #[serde(default = "default_true")]
    pub reactive_floor: bool,
    /// The scale-up tolerance of the HPAs that read this metric (the controller's
    /// `--horizontal-pod-autoscaler-tolerance`, 0.1, or `behavior.scaleUp.tolerance`).
    /// Values are served × (1 + tolerance), so that the HPA adds replicas as soon as
    /// the forecast exceeds what its replicas carry instead of only 10 % beyond it.
    /// Set the HPA's target to what one replica can carry. 0 serves values as they are.
    #[serde(default = "default_hpa_tolerance")]
    pub hpa_tolerance: f64,
    /// `predictive` (the default) serves the forecast. `shadow` serves the latest
    /// observation, as a reactive adapter would, while forecasting as usual and
    /// reporting what it would have served (`/debug/signals`, `/metrics`): a way to
    /// run prescale in production with no effect on scaling and judge it first.
    #[serde(default)]
    pub mode: SignalMode,
    /// The target per replica of the HPAs that read this metric (their
    /// `AverageValue`). With it, shadow mode counts the replica-seconds the forecast
    /// would have added (`more`) or saved (`fewer`) against the reactive value.
    #[serde(default)]
    pub hpa_target: Option<f64>,
    /// Namespaces allowed to read this metric; all when absent.
    #[serde(default)]
    pub namespaces: Option<Vec<String>>,
    /// How long the last value keeps being served while the source fails; after that
    /// requests get 503 and the HPA holds its replica count.
    #[serde(default = "default_max_staleness")]
    pub max_staleness: Duration,
    /// How often the model is refitted from scratch; it is updated every step in between.
    #[serde(default = "default_refit_interval")]
    pub refit_interval: Duration,
    /// Fit the models on means over this period instead of on every step (a multiple
    /// of `step`): for many series, a week of 1-minute steps fitted as 5-minute means
    /// costs a fifth of the memory and fit time. The reactive floor still uses the
    /// newest step. Absent: fit every step.
    #[serde(default)]
    pub fit_step: Option<Duration>,
    /// Less observed history than this: the series is warming and serves its latest value.
    #[serde(default = "default_min_history")]
    pub min_history: Duration,
    /// Serve this signal on `custom.metrics.k8s.io` (as a Pods or Object metric)
    /// instead of `external.metrics.k8s.io`; absent means external.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom: Option<CustomConfig>,
}

/// What a signal serves: its forecast, or (shadow) the latest observation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignalMode {
    /// Serve the forecast.
    #[default]
    Predictive,
    /// Serve the latest observation; forecast and report only.
    Shadow,
}

const fn default_step() -> Duration {
    // The usual Prometheus scrape interval is 15-30 s; a minute smooths scrape jitter
    // and keeps a week of history at 10k points.
    Duration(std::time::Duration::from_secs(60))
}
const fn default_history() -> Duration {
    // A week: two daily seasons and one weekly one.
    Duration(std::time::Duration::from_secs(7 * 86_400))
}
const fn default_lead_time() -> Duration {
    // HPA sync (15 s) + pod start (~30 s) + node provisioning (~2-3 min).
    Duration(std::time::Duration::from_secs(180))
}
const fn default_quantile() -> Quantile {
    Quantile(0.9)
}
fn default_model() -> ModelSpec {
    // Bundled in the binary, and a unit test resolves every bundled spec.
    ModelSpec::by_name("auto").expect("the bundled auto spec resolves")
}
const fn default_true() -> bool {
    true
}
const fn default_hpa_tolerance() -> f64 {
    // The HPA controller's default tolerance.
    0.1
}
const fn default_max_staleness() -> Duration {
    // Longer than a Prometheus restart, shorter than a traffic pattern change.
    Duration(std::time::Duration::from_secs(300))
}
const fn default_refit_interval() -> Duration {
    Duration(std::time::Duration::from_secs(3_600))
}
const fn default_min_history() -> Duration {
    Duration(std::time::Duration::from_secs(3_600))
}

/// How the API is served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address of the HTTPS server the kube-apiserver connects to.
    #[serde(default = "default_https_address")]
    pub https_address: SocketAddr,
    /// Address of the plain-HTTP server for health probes, `/metrics` and `/debug/signals`.
    #[serde(default = "default_http_address")]
    pub http_address: SocketAddr,
    /// Serving certificate.
    #[serde(default)]
    pub tls: TlsConfig,
    /// Who may read metrics.
    #[serde(default)]
    pub auth: AuthConfig,
    /// prescale's own metrics on `/metrics`.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Protection against large, slow and many clients.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// After SIGTERM: how long in-flight requests get to finish before the
    /// process exits anyway (below the pod's `terminationGracePeriodSeconds`).
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace: Duration,
    /// prescale as a KEDA external scaler (gRPC, TLS); not started when absent.
    #[serde(default)]
    pub keda_scaler: Option<KedaScalerConfig>,
    /// The adapters that owned `external.metrics.k8s.io` or `custom.metrics.k8s.io`
    /// before prescale: requests for metrics prescale does not serve go there.
    #[serde(default)]
    pub upstream: UpstreamsConfig,
}

const fn default_shutdown_grace() -> Duration {
    // Kubernetes' default terminationGracePeriodSeconds is 30 s: leave it room.
    Duration(std::time::Duration::from_secs(10))
}

/// Size, time and count limits of the HTTPS and plain-HTTP servers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest request head (request line and headers), bytes; at least 8192.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// Largest declared request body, bytes (the API is read-only: bodies are refused, never read).
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: u64,
    /// Time a client has to send a complete request head (slow clients are cut off).
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout: Duration,
    /// Time a client has to complete the TLS handshake.
    #[serde(default = "default_tls_handshake_timeout")]
    pub tls_handshake_timeout: Duration,
    /// A connection without a request for this long is closed (idle HTTP/2
    /// connections would otherwise hold a connection slot forever).
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: Duration,
    /// Concurrent connections per port; beyond it, new connections wait to be accepted.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Concurrent HTTP/2 streams per connection.
    #[serde(default = "default_http2_max_streams")]
    pub http2_max_streams: u32,
}

const fn default_max_header_bytes() -> usize {
    // Front-proxy headers carry a user's groups and extras: 64 KiB is generous.
    64 * 1024
}
const fn default_max_body_bytes() -> u64 {
    64 * 1024
}
const fn default_header_read_timeout() -> Duration {
    // The kube-apiserver sends a request head at once; only a slow client needs more.
    Duration(std::time::Duration::from_secs(10))
}
const fn default_tls_handshake_timeout() -> Duration {
    Duration(std::time::Duration::from_secs(10))
}
const fn default_idle_timeout() -> Duration {
    // The kube-apiserver reconnects at once when it needs to: closing is cheap.
    Duration(std::time::Duration::from_secs(300))
}
const fn default_max_connections() -> usize {
    4096
}
const fn default_http2_max_streams() -> u32 {
    // The kube-apiserver multiplexes every HPA's requests over few connections.
    250
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_header_bytes: default_max_header_bytes(),
            max_body_bytes: default_max_body_bytes(),
            header_read_timeout: default_header_read_timeout(),
            tls_handshake_timeout: default_tls_handshake_timeout(),
            idle_timeout: default_idle_timeout(),
            max_connections: default_max_connections(),
            http2_max_streams: default_http2_max_streams(),
        }
    }
}

/// prescale's own metrics (`/metrics`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Most series exported with per-series gauges (`prescale_series_observed`,
    /// `_forecast`, `_served`, ... : eight time series each). The limit is shared
    /// fairly between signals; `0` exports none. Per-signal metrics are not limited.
    #[serde(default = "default_series_limit")]
    pub series_limit: usize,
}

const fn default_series_limit() -> usize {
    // 1000 series x 8 gauges = 8000 time series: a fair share of one Prometheus
    // scrape, and enough to see every series of a typical install. A process that
    // forecasts 100k series still exports 8000.
    1_000
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            series_limit: default_series_limit(),
        }
    }
}

fn default_https_address() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 6443))
}
fn default_http_address() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 8080))
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            https_address: default_https_address(),
            http_address: default_http_address(),
            tls: TlsConfig::default(),
            auth: AuthConfig::default(),
            metrics: MetricsConfig::default(),
            limits: LimitsConfig::default(),
            shutdown_grace: default_shutdown_grace(),
            keda_scaler: None,
            upstream: UpstreamsConfig::default(),
        }
    }
}

/// The HTTPS serving certificate: files, or a self-signed pair generated at start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain; together with `key_file`.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// PEM private key; together with `cert_file`.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Without files: directory where a self-signed pair is generated at start (as
    /// metrics-server does; the APIService then needs `insecureSkipTLSVerify`).
    #[serde(default = "default_cert_dir")]
    pub cert_dir: PathBuf,
    /// Extra DNS names of the generated certificate (besides localhost and loopback
    /// addresses), e.g. the Service's `prescale.prescale.svc`.
    #[serde(default)]
    pub dns_names: Vec<String>,
}

fn default_cert_dir() -> PathBuf {
    PathBuf::from("/tmp/prescale-serving-cert")
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            cert_file: None,
            key_file: None,
            cert_dir: default_cert_dir(),
            dns_names: Vec::new(),
        }
    }
}

/// How callers are authenticated and authorized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Front-proxy client certificates and TokenReview, SubjectAccessReview (in-cluster).
    #[default]
    Kubernetes,
    /// Front-proxy client certificates checked against `requestheader_client_ca_file`,
    /// and every authenticated user allowed: no calls to the kube-apiserver (for
    /// clusters where only the aggregation layer can reach prescale, and for tests).
    Requestheader,
    /// No authentication at all: local use only, loopback addresses only.
    None,
}

/// Authentication and authorization settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Which scheme protects the API.
    #[serde(default)]
    pub mode: AuthMode,
    /// CA that signs the kube-apiserver's front-proxy client certificate; read from the
    /// `kube-system/extension-apiserver-authentication` ConfigMap when absent.
    #[serde(default)]
    pub requestheader_client_ca_file: Option<PathBuf>,
    /// Common names allowed for the front-proxy certificate; empty means any.
    #[serde(default)]
    pub requestheader_allowed_names: Vec<String>,
    /// Headers carrying the user name.
    #[serde(default = "default_username_headers")]
    pub requestheader_username_headers: Vec<String>,
    /// Headers carrying the groups.
    #[serde(default = "default_group_headers")]
    pub requestheader_group_headers: Vec<String>,
    /// Prefixes of headers carrying extra user attributes.
    #[serde(default = "default_extra_prefixes")]
    pub requestheader_extra_headers_prefix: Vec<String>,
}

fn default_username_headers() -> Vec<String> {
    vec!["X-Remote-User".to_string()]
}
fn default_group_headers() -> Vec<String> {
    vec!["X-Remote-Group".to_string()]
}
fn default_extra_prefixes() -> Vec<String> {
    vec!["X-Remote-Extra-".to_string()]
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            mode: AuthMode::default(),
            requestheader_client_ca_file: None,
            requestheader_allowed_names: Vec::new(),
            requestheader_username_headers: default_username_headers(),
            requestheader_group_headers: default_group_headers(),
            requestheader_extra_headers_prefix: default_extra_prefixes(),
        }
    }
}

/// Most grid points kept per series; bounds memory and fit time.
pub const MAX_HISTORY_STEPS: i64 = 100_000;

impl Config {
    /// Reads, parses and validates a configuration file.
    ///
    /// # Errors
    /// [`Error::Read`], [`Error::Parse`] (naming the field) or [`Error::Invalid`].
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_yaml(&text)
    }

    /// Parses and validates a configuration from YAML text.
    ///
    /// # Errors
    /// [`Error::Parse`] (naming the field) or [`Error::Invalid`].
    pub fn from_yaml(text: &str) -> Result<Self> {
        let mut config: Self = serde_yaml::from_str(text).map_err(Error::Parse)?;
        config.planning = config.validate()?;
        Ok(config)
    }

    /// Checks what the types alone cannot, reporting every problem with its field
    /// path; returns the node-pool sections built.
    ///
    /// # Errors
    /// [`Error::Invalid`] with one message per problem.
    pub fn validate(&self) -> Result<Planning> {
        let mut problems = Vec::new();
        self.prometheus.check(&mut problems);
        if self.signals.is_empty() {
            problems.push("signals: must list at least one signal".to_string());
        }
        let mut names = BTreeSet::new();
        for (i, s) in self.signals.iter().enumerate() {
            if !names.insert(s.name.as_str()) {
                problems.push(format!(
                    "signals[{i}].name: {:?} is used by an earlier signal",
                    s.name.as_str()
                ));
            }
            s.check(&format!("signals[{i}]"), &mut problems);
        }
        self.server.check(&mut problems);
        let planning = nodepools::build(
            &self.nodepools,
            &self.workloads,
            &self.capacity_buffers,
            self.expander.as_ref(),
            &self.signals,
            &mut problems,
        );
        if let Some(e) = &self.expander {
            // The cluster-autoscaler verifies the expander's certificate against the
            // Service name it dials; a generated one carries only the listed names.
            let self_signed = e.cert_file.is_none() && self.server.tls.cert_file.is_none();
            if self_signed && self.server.tls.dns_names.is_empty() {
                problems.push(
                    "expander: with the generated API certificate, server.tls.dns_names must list the Service name the cluster-autoscaler dials (e.g. prescale.prescale.svc), or set expander.cert_file".to_string(),
                );
            }
        }
        for (i, s) in self.signals.iter().enumerate() {
            if s.name.as_str().starts_with("prescale_nodepool_") {
                problems.push(format!(
                    "signals[{i}].name: the prefix prescale_nodepool_ is reserved for the node-pool metrics, got {:?}",
                    s.name.as_str()
                ));
            }
        }
        if problems.is_empty() {
            Ok(planning)
        } else {
            Err(Error::Invalid(problems))
        }
    }
}

impl PrometheusConfig {
    fn check(&self, problems: &mut Vec<String>) {
        match reqwest::Url::parse(&self.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {}
            Ok(u) => problems.push(format!(
                "prometheus.url: scheme must be http or https, got {:?}",
                u.scheme()
            )),
            Err(e) => problems.push(format!("prometheus.url: not a URL ({e}): {:?}", self.url)),
        }
        for (name, value) in &self.headers {
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                problems.push(format!("prometheus.headers: {name:?} is not a header name"));
            }
            if reqwest::header::HeaderValue::from_str(value).is_err() {
                problems.push(format!(
                    "prometheus.headers.{name}: not a valid header value"
                ));
            }
        }
        if let Some(offset) = self.query_offset {
            if offset.as_ms() > 3_600_000 {
                problems.push(format!(
                    "prometheus.query_offset: at most 1h (data later than that is missing, not late), got {offset}"
                ));
            }
        }
        if self.insecure_skip_verify && self.ca_file.is_some() {
            problems.push(
                "prometheus.insecure_skip_verify: cannot be combined with ca_file".to_string(),
            );
        }
    }
}

impl SignalConfig {
    fn check(&self, at: &str, problems: &mut Vec<String>) {
        let step = self.step.as_ms();
        if self.query.trim().is_empty() {
            problems.push(format!("{at}.query: must not be empty"));
        }
        if step % 1_000 != 0 {
            problems.push(format!(
                "{at}.step: must be a whole number of seconds, got {}",
                self.step
            ));
        }
        if self.history.as_ms() < 2 * step {
            problems.push(format!(
                "{at}.history: must cover at least two steps ({}), got {}",
                self.step, self.history
            ));
        }
        if self.history.as_ms() / step.max(1) > MAX_HISTORY_STEPS {
            problems.push(format!(
                "{at}.history: at most {MAX_HISTORY_STEPS} steps per series, got {} ({} / {})",
                self.history.as_ms() / step.max(1),
                self.history,
                self.step
            ));
        }
        if self.lead_time.as_ms() == 0 {
            problems.push(format!(
                "{at}.lead_time: must be positive, got {}",
                self.lead_time
            ));
        }
        if self.lead_time > self.history {
            // A forecast path is lead time / step long: unbounded, a typo such as
            // `9999999999s` is an allocation of gigabytes when serving starts.
            problems.push(format!(
                "{at}.lead_time: must not exceed history ({}): a forecast cannot look further ahead than the history it is fitted on, got {}",
                self.history, self.lead_time
            ));
        }
        if let Some(t) = self.hpa_target {
            if !(t.is_finite() && t > 0.0) {
                problems.push(format!(
                    "{at}.hpa_target: must be a finite number > 0, got {t}"
                ));
            }
        }
        if !(self.hpa_tolerance.is_finite() && (0.0..1.0).contains(&self.hpa_tolerance)) {
            problems.push(format!(
                "{at}.hpa_tolerance: must be in [0, 1), got {}",
                self.hpa_tolerance
            ));
        }
        if self.max_staleness.as_ms() < step {
            problems.push(format!(
                "{at}.max_staleness: must be at least one step ({}), got {}",
                self.step, self.max_staleness
            ));
        }
        if let Some(fit) = self.fit_step {
            if fit.as_ms() % step.max(1) != 0 || fit.as_ms() * 2 > self.history.as_ms() {
                problems.push(format!(
                    "{at}.fit_step: must be a multiple of step ({}) and at most half of history ({}), got {fit}",
                    self.step, self.history
                ));
            }
        }
        if self.min_history > self.history {
            problems.push(format!(
                "{at}.min_history: must not exceed history ({}), got {}",
                self.history, self.min_history
            ));
        }
        if let Some(custom) = &self.custom {
            if let Err(ps) = custom.mapping(&format!("{at}.custom")) {
                problems.extend(ps);
            }
        }
        if let Some(ns) = &self.namespaces {
            for (j, n) in ns.iter().enumerate() {
                if !crate::names::is_dns_label(n) {
                    problems.push(format!(
                        "{at}.namespaces[{j}]: not a namespace name (lowercase RFC 1123 label), got {n:?}"
                    ));
                }
            }
        }
    }
}

impl ServerConfig {
    fn check(&self, problems: &mut Vec<String>) {
        match (&self.tls.cert_file, &self.tls.key_file) {
            (Some(_), None) => {
                problems.push("server.tls.key_file: required with cert_file".to_string())
            }
            (None, Some(_)) => {
                problems.push("server.tls.cert_file: required with key_file".to_string())
            }
            _ => {}
        }
        if self.auth.mode == AuthMode::Requestheader
            && self.auth.requestheader_client_ca_file.is_none()
        {
            problems.push(
                "server.auth.requestheader_client_ca_file: required with mode requestheader"
                    .to_string(),
            );
        }
        if self.limits.max_header_bytes < 8192 {
            problems.push(format!(
                "server.limits.max_header_bytes: must be at least 8192 (the HTTP/1 parser's minimum buffer), got {}",
                self.limits.max_header_bytes
            ));
        }
        if self.limits.max_connections == 0 {
            problems.push("server.limits.max_connections: must be at least 1, got 0".to_string());
        }
        if self.limits.http2_max_streams == 0 {
            problems.push("server.limits.http2_max_streams: must be at least 1, got 0".to_string());
        }
        if let Some(keda) = &self.keda_scaler {
            keda::check(keda, self, problems);
        }
        upstream::check(&self.upstream, problems);
        if self.auth.mode == AuthMode::None {
            for (field, addr) in [
                ("https_address", self.https_address),
                ("http_address", self.http_address),
            ] {
                if !addr.ip().is_loopback() {
                    problems.push(format!(
                        "server.{field}: auth mode none only binds to loopback, got {addr}"
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_duration_grammar_zero_only_outside_config() {
        assert_eq!(parse_duration_ms("0s"), Ok(0));
        assert_eq!(parse_duration_ms("2w1ms"), Ok(14 * 86_400_000 + 1));
        assert!(parse_duration_ms("1.5h").is_err());
        assert!(parse_duration_ms("5").is_err());
        assert!(parse_duration_ms("99999999999999999999d").is_err());
        assert!(Duration::try_new("0s").is_err());
    }

    const MINIMAL: &str = "
prometheus:
  url: http://127.0.0.1:9090
signals:
  - name: cpu
    query: avg(rate(cpu_seconds_total[1m]))
";

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(Duration::try_new("30s").unwrap().as_ms(), 30_000);
        assert_eq!(Duration::try_new("5m").unwrap().as_ms(), 300_000);
        assert_eq!(Duration::try_new("1h30m").unwrap().as_ms(), 5_400_000);
        assert_eq!(Duration::try_new("7d").unwrap().as_ms(), 604_800_000);
        assert_eq!(Duration::try_new("250ms").unwrap().as_ms(), 250);
        for bad in ["", "5", "m", "5x", "0s", "-5s", "99999999999999999999d"] {
            assert!(Duration::try_new(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(Duration::try_new("90m").unwrap().to_string(), "90m");
        assert_eq!(Duration::try_new("1500ms").unwrap().to_string(), "1500ms");
    }

    #[test]
    fn quantile_and_names_are_checked() {
        assert!(Quantile::try_new(0.5).is_ok());
        for bad in [0.0, 1.0, 1.5, -0.1, f64::NAN] {
            assert!(Quantile::try_new(bad).is_err());
        }
        assert!(MetricName::try_new("rabbitmq_queue_messages_ready").is_ok());
        for bad in ["", "9lives", "a/b", "a b"] {
            assert!(MetricName::try_new(bad).is_err());
        }
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::from_yaml(MINIMAL).unwrap();
        let s = &c.signals[0];
        assert_eq!(s.step.as_ms(), 60_000);
        assert_eq!(s.quantile.get(), 0.9);
        assert_eq!(s.model, ModelSpec::by_name("auto").unwrap());
        assert!(s.reactive_floor);
        assert_eq!(c.server.https_address.port(), 6443);
        assert_eq!(c.server.auth.mode, AuthMode::Kubernetes);
        assert_eq!(c.server.metrics.series_limit, 1_000);
        let limited = format!("{MINIMAL}server:\n  metrics: {{ series_limit: 50 }}\n");
        assert_eq!(
            Config::from_yaml(&limited)
                .unwrap()
                .server
                .metrics
                .series_limit,
            50
        );
    }

    #[test]
    fn bad_quantile_names_its_field_path() {
        let text = format!("{MINIMAL}  - name: two\n    query: up\n  - name: three\n    query: up\n    quantile: 1.5\n");
        let err = Config::from_yaml(&text).unwrap_err();
        let err = std::error::Error::source(&err).unwrap().to_string();
        assert!(
            err.contains("signals[2].quantile: must be in (0, 1), got 1.5"),
            "{err}"
        );
    }

    #[test]
    fn unknown_model_names_its_field_path() {
        // The model is resolved while the file is read, like the other values
        // that can be wrong on their own.
        let text = format!(
            "{MINIMAL}    model: seasonal-naive\n  - name: two\n    query: up\n  - name: three\n    query: up\n    model: prophet\n"
        );
        let err = Config::from_yaml(&text).unwrap_err();
        let err = std::error::Error::source(&err).unwrap().to_string();
        assert!(err.contains("signals[2].model: unknown model"), "{err}");
        let c = Config::from_yaml(&format!("{MINIMAL}    model: mstl-daily-weekly\n")).unwrap();
        assert_eq!(c.signals[0].model.name(), "mstl-daily-weekly");
    }

    #[test]
    fn fit_step_is_a_multiple_of_step_within_history() {
        let ok = format!("{MINIMAL}    step: 1m\n    history: 7d\n    fit_step: 5m\n");
        let c = Config::from_yaml(&ok).unwrap();
        assert_eq!(c.signals[0].fit_step.map(|d| d.as_ms()), Some(300_000));
        let settings = crate::engine::SignalSettings::from_config(&c.signals[0]).unwrap();
        assert_eq!(settings.tracker.fit_steps, 5);
        for bad in ["90s", "4d"] {
            let text = format!("{MINIMAL}    step: 1m\n    history: 7d\n    fit_step: {bad}\n");
            let err = Config::from_yaml(&text).unwrap_err().to_string();
            assert!(
                err.contains("signals[0].fit_step: must be a multiple of step"),
                "{err}"
            );
        }
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let text = MINIMAL.replace("query:", "querry:");
        let err = Config::from_yaml(&text).unwrap_err();
        let err = std::error::Error::source(&err).unwrap().to_string();
        assert!(
            err.contains("signals[0]") && err.contains("querry"),
            "{err}"
        );
    }

    #[test]
    fn cross_field_problems_are_all_reported() {
        let text = "
prometheus:
  url: ftp://x
  query_offset: 2h
signals:
  - name: cpu
    query: up
    step: 1500ms
    lead_time: 1s
    hpa_tolerance: 1.5
    mode: shadow
    hpa_target: -1
  - name: mem
    query: up
    lead_time: 9999999999s
  - name: cpu
    query: ' '
    namespaces: [Default]
server:
  https_address: 0.0.0.0:6443
  auth: { mode: none }
";
        let requestheader = format!("{MINIMAL}server:\n  auth: {{ mode: requestheader }}\n");
        let Err(Error::Invalid(p)) = Config::from_yaml(&requestheader) else {
            panic!("requestheader without a CA accepted");
        };
        assert!(p[0].starts_with("server.auth.requestheader_client_ca_file: required"));
        let Err(Error::Invalid(problems)) = Config::from_yaml(text) else {
            panic!("expected validation errors");
        };
        let all = problems.join("\n");
        for want in [
            "prometheus.url: scheme must be http or https",
            "prometheus.query_offset: at most 1h",
            "signals[0].step: must be a whole number of seconds",
            "signals[0].hpa_tolerance: must be in [0, 1), got 1.5",
            "signals[0].hpa_target: must be a finite number > 0, got -1",
            "signals[1].lead_time: must not exceed history (7d)",
            "signals[2].name: \"cpu\" is used by an earlier signal",
            "signals[2].query: must not be empty",
            "signals[2].namespaces[0]: not a namespace name",
            "server.https_address: auth mode none only binds to loopback",
        ] {
            assert!(all.contains(want), "missing {want:?} in\n{all}");
        }
    }

    #[test]
    fn server_limits_have_defaults_and_are_checked() {
        let c = Config::from_yaml(MINIMAL).unwrap();
        assert_eq!(c.server.limits, LimitsConfig::default());
        assert_eq!(c.server.shutdown_grace.as_ms(), 10_000);
        let text = format!(
            "{MINIMAL}server:\n  shutdown_grace: 2s\n  limits:\n    max_header_bytes: 100\n    header_read_timeout: 1s\n    max_connections: 0\n"
        );
        let Err(Error::Invalid(p)) = Config::from_yaml(&text) else {
            panic!("tiny limits accepted");
        };
        let all = p.join("\n");
        assert!(
            all.contains("server.limits.max_header_bytes: must be at least 8192"),
            "{all}"
        );
        assert!(all.contains("server.limits.max_connections"), "{all}");
        let ok = format!(
            "{MINIMAL}server:\n  shutdown_grace: 2s\n  limits:\n    header_read_timeout: 1500ms\n"
        );
        let c = Config::from_yaml(&ok).unwrap();
        assert_eq!(c.server.shutdown_grace.as_ms(), 2_000);
        assert_eq!(c.server.limits.header_read_timeout.as_ms(), 1_500);
    }

    #[test]
    fn example_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples/prescale.yaml");
        let c = Config::from_file(&path).unwrap();
        let names: Vec<&str> = c.signals.iter().map(|s| s.name.as_str()).collect();
        for want in [
            "cpu_utilisation",
            "rabbitmq_queue_messages",
            "qdrant_search_latency_seconds",
            "packets_per_second",
            "packets-per-second",
            "qdrant_search_latency",
        ] {
            assert!(names.contains(&want), "{want} missing from the example");
        }
        let kind = |name: &str| {
            c.signals
                .iter()
                .find(|s| s.name.as_str() == name)
                .and_then(|s| s.custom.as_ref())
                .map(|c| c.metric_type)
        };
        assert_eq!(
            kind("packets-per-second"),
            Some(custom::MetricTypeConfig::Pods)
        );
        assert_eq!(
            kind("qdrant_search_latency"),
            Some(custom::MetricTypeConfig::Object)
        );
        assert_eq!(kind("cpu_utilisation"), None, "external by default");
    }

    #[test]
    fn custom_problems_name_their_signal() {
        let text = format!(
            "{MINIMAL}    custom:\n      type: Pods\n      resources:\n        overrides:\n          deployment: {{group: apps, resource: deployment}}\n"
        );
        let Err(Error::Invalid(problems)) = Config::from_yaml(&text) else {
            panic!("a namespaced workload without a namespace label accepted");
        };
        assert!(
            problems[0].starts_with("signals[0].custom.resources.overrides: label \"deployment\""),
            "{problems:?}"
        );
        let bad_type =
            format!("{MINIMAL}    custom: {{type: Gauge, resources: {{overrides: {{}}}}}}\n");
        let err = Config::from_yaml(&bad_type).unwrap_err();
        let err = std::error::Error::source(&err).unwrap().to_string();
        assert!(err.contains("signals[0].custom.type"), "{err}");
    }
}
