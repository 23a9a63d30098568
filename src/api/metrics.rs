//! The API's self-metrics, registered under the `prescale` prefix: requests by
//! endpoint and code, request latency, and the number of series per status read
//! from the current snapshot at scrape time. Every label has a bounded set of
//! values (endpoint kinds, HTTP codes, the four statuses) — never a metric name,
//! namespace or path.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::clock::Clock;
use crate::snapshot::{Shared, Status};

/// Why the metrics could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The text encoder failed (a formatting error; not expected in practice).
    #[error("encoding metrics: {0}")]
    Encode(#[from] std::fmt::Error),
}

/// What kind of request was served; the `endpoint` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `/apis`, the group and the version.
    Discovery,
    /// `/openapi/v2`, `/openapi/v3` and the documents below it.
    OpenApi,
    /// An external metric value.
    External,
    /// A custom metric value (Pods or Object).
    Custom,
    /// A metric value answered by the group's upstream adapter.
    Upstream,
    /// `/healthz`, `/livez`, `/readyz`.
    Health,
    /// `/metrics`.
    Metrics,
    /// `/debug/...`.
    Debug,
    /// Anything else (404s, 405s).
    Other,
}

impl Endpoint {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Discovery => "discovery",
            Endpoint::OpenApi => "openapi",
            Endpoint::External => "external",
            Endpoint::Custom => "custom",
            Endpoint::Upstream => "upstream",
            Endpoint::Health => "health",
            Endpoint::Metrics => "metrics",
            Endpoint::Debug => "debug",
            Endpoint::Other => "other",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    endpoint: &'static str,
    code: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: &'static str,
}

fn latency_histogram() -> Histogram {
    // From 50 µs (a snapshot read) to 5 s (a stuck client), denser below 1 ms
    // where the serving goal lies.
    Histogram::new([
        0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.1, 0.5, 1.0,
        5.0,
    ])
}

/// Counts series per status in the current snapshot, on every scrape, as the API
/// would answer them at that moment (an expired value counts as failed).
struct SeriesByStatus {
    shared: Shared,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for SeriesByStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeriesByStatus").finish_non_exhaustive()
    }
}

impl Collector for SeriesByStatus {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snapshot = self.shared.load();
        let now_ms = self.clock.now_ms();
        let family = Family::<StatusLabels, Gauge>::default();
        for status in [Status::Warming, Status::Ok, Status::Stale, Status::Failed] {
            // Present even at zero, so alerts on `failed > 0` have a series to read.
            drop(family.get_or_create(&StatusLabels {
                status: status_label(status),
            }));
        }
        for series in snapshot.metrics.values().flat_map(|m| &m.series) {
            family
                .get_or_create(&StatusLabels {
                    status: status_label(series.status_at(now_ms)),
                })
                .inc();
        }
        let metric = encoder.encode_descriptor(
            "series",
            "Series served, by status (warming, ok, stale, failed).",
            None,
            family.metric_type(),
        )?;
        family.encode(metric)
    }
}

/// The label value of a status.
pub fn status_label(status: Status) -> &'static str {
    match status {
        Status::Warming => "warming",
        Status::Ok => "ok",
        Status::Stale => "stale",
        Status::Failed => "failed",
    }
}

/// The API's metrics and the registry that holds them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<EndpointLabels, Histogram, fn() -> Histogram>,
}

impl Metrics {
    /// Registers the API metrics; series counts are read from `shared`, with
    /// expiry checked on `clock`.
    pub fn new(shared: Shared, clock: Arc<dyn Clock>) -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<EndpointLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        let sub = registry.sub_registry_with_prefix("prescale");
        sub.register(
            "api_requests",
            "Requests answered, by endpoint kind and HTTP code.",
            requests.clone(),
        );
        sub.register(
            "api_request_duration_seconds",
            "Time from request to response headers, by endpoint kind.",
            latency.clone(),
        );
        sub.register_collector(Box::new(SeriesByStatus { shared, clock }));
        Self {
            registry,
            requests,
            latency,
        }
    }

    /// Records one answered request.
    pub fn observe(&self, endpoint: Endpoint, code: u16, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                endpoint: endpoint.as_str(),
                code,
            })
            .inc();
        self.latency
            .get_or_create(&EndpointLabels {
                endpoint: endpoint.as_str(),
            })
            .observe(seconds);
    }

    /// Renders `others` (e.g. the engine's registry) and then ours, as one
    /// OpenMetrics exposition.
    ///
    /// # Errors
    /// [`Error::Encode`] if the encoder fails.
    pub fn render(&self, others: &[&Registry]) -> Result<String, Error> {
        let mut out = String::new();
        for other in others {
            prometheus_client::encoding::text::encode_registry(&mut out, other)?;
        }
        prometheus_client::encoding::text::encode_registry(&mut out, &self.registry)?;
        prometheus_client::encoding::text::encode_eof(&mut out)?;
        Ok(out)
    }
}
