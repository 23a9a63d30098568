//! Probes, self-metrics and the explanation of every served value.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::external::rfc3339;
use super::status::Error;
use super::{metrics::status_label, quantity, AppState};
use crate::series::Labels;

/// `/healthz`, `/livez`: the process answers.
pub async fn healthz() -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "ok").into_response()
}

/// `/readyz`: ready once the first snapshot is published. Not tied to the source:
/// with Prometheus down the metrics answer 503, but the pod stays ready, since an
/// APIService without endpoints breaks discovery (and namespace deletion)
/// cluster-wide.
pub async fn readyz(State(state): State<AppState>) -> Response {
    if state.shared.is_ready() {
        ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "ok").into_response()
    } else {
        Error::ServiceUnavailable("not ready: no snapshot published yet".into()).into_response()
    }
}

/// `/metrics`: the engine's and the API's metrics in OpenMetrics text.
pub async fn metrics(State(state): State<AppState>) -> Response {
    match state.metrics.render(&[state.registry.as_ref()]) {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => Error::Internal(e.to_string()).into_response(),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SignalsDoc<'a> {
    ready: bool,
    published: Option<String>,
    metrics: Vec<MetricDoc<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MetricDoc<'a> {
    name: &'a str,
    namespaces: &'a Option<Vec<String>>,
    /// Why the signal's last refresh failed, if it did.
    error: &'a Option<String>,
    /// For custom metrics: the type and which labels name which objects.
    #[serde(skip_serializing_if = "Option::is_none")]
    custom: Option<&'a crate::custom::Mapping>,
    series: Vec<SeriesDoc<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SeriesDoc<'a> {
    labels: &'a Labels,
    status: &'static str,
    reason: &'a Option<String>,
    model: &'a str,
    last_fit: Option<String>,
    backtest_mase: Option<f64>,
    latest: Option<f64>,
    observed_at: String,
    window_seconds: u64,
    forecast_mean: &'a [f64],
    forecast_quantile: &'a [f64],
    forecast_lower: &'a [f64],
    forecast_upper: &'a [f64],
    served_value: f64,
    served_quantity: Option<String>,
    /// How the served value came about, in words and parts (absent while warming).
    why: Option<&'a crate::snapshot::Why>,
    /// Shadow mode: `servedValue` is the latest observation and this is what the
    /// forecast would have served.
    #[serde(skip_serializing_if = "Option::is_none")]
    shadow_would_serve: Option<f64>,
}

/// `GET /debug/signals`: per metric and series, the status, the model and its
/// last fit and backtest score, the latest observation, the forecast path and the
/// value served — what a platform engineer reads before trusting a scale-up.
pub async fn signals(State(state): State<AppState>) -> Response {
    let snapshot = state.shared.load();
    let ready = state.shared.is_ready();
    let doc = SignalsDoc {
        ready,
        published: ready.then(|| rfc3339(snapshot.published_ms)),
        metrics: snapshot
            .metrics
            .iter()
            .map(|(name, entry)| MetricDoc {
                name,
                namespaces: &entry.namespaces,
                error: &entry.error,
                custom: entry.custom.as_deref(),
                series: entry
                    .series
                    .iter()
                    .map(|s| SeriesDoc {
                        labels: &s.labels,
                        status: status_label(s.status),
                        reason: &s.detail.reason,
                        model: &s.detail.model,
                        last_fit: s.detail.last_fit_ms.map(rfc3339),
                        backtest_mase: s.detail.backtest_mase,
                        latest: s.detail.latest,
                        observed_at: rfc3339(s.timestamp_ms),
                        window_seconds: s.window_s,
                        forecast_mean: &s.detail.forecast_mean,
                        forecast_quantile: &s.detail.forecast_quantile,
                        forecast_lower: &s.detail.forecast_lower,
                        forecast_upper: &s.detail.forecast_upper,
                        served_value: s.value,
                        served_quantity: quantity::format(s.value).ok(),
                        why: s.detail.why.as_ref(),
                        shadow_would_serve: s.detail.shadow.then_some(s.detail.predicted).flatten(),
                    })
                    .collect(),
            })
            .collect(),
    };
    match serde_json::to_vec_pretty(&doc) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => Error::Internal(format!("encoding /debug/signals: {e}")).into_response(),
    }
}
