//! Probes, self-metrics and the explanation of every served value.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::status::Error;
use super::wire::rfc3339;
use super::{metrics::status_label, AppState};
use crate::quantity;
use crate::series::Labels;

/// `/healthz`, `/livez`: the process answers.
pub async fn healthz() -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "ok").into_response()
}

/// `/readyz`: ready once the first snapshot is published and the watched pods and
/// nodes are listed. Not tied to the source or to the watches after that: with
/// Prometheus down the metrics answer 503, but the pod stays ready, since an
/// APIService without endpoints breaks discovery (and namespace deletion)
/// cluster-wide.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let mut waiting = Vec::new();
    if !state.shared.is_ready() {
        waiting.push("no snapshot published yet".to_string());
    }
    if let Some(why) = state.not_ready.as_ref().and_then(|f| f()) {
        waiting.push(why);
    }
    if waiting.is_empty() {
        ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "ok").into_response()
    } else {
        Error::ServiceUnavailable(format!("not ready: {}", waiting.join("; "))).into_response()
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
struct SignalsDoc<'a> {
    ready: bool,
    published: Option<String>,
    metrics: Vec<MetricDoc<'a>>,
}

#[derive(Serialize)]
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
struct SeriesDoc<'a> {
    labels: &'a Labels,
    /// The status a request would see now (a value past its expiry is stale).
    status: &'static str,
    reason: &'a Option<String>,
    model: &'a str,
    last_fit: Option<String>,
    backtest_mase: Option<f64>,
    latest: Option<f64>,
    observed_at: String,
    /// How old the newest grid point is.
    age_seconds: f64,
    /// Until the value stops being served (503) unless a refresh renews it.
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_in_seconds: Option<f64>,
    window_seconds: u64,
    forecast_mean: &'a [f64],
    forecast_quantile: &'a [f64],
    forecast_lower: &'a [f64],
    forecast_upper: &'a [f64],
    served_value: f64,
    served_quantity: Option<String>,
    /// How the served value came about, in words and parts (absent while warming).
    #[serde(skip_serializing_if = "Option::is_none")]
    why: Option<&'a crate::snapshot::Why>,
    /// Shadow mode: `servedValue` is the latest observation and this is what the
    /// forecast would have served.
    #[serde(skip_serializing_if = "Option::is_none")]
    shadow_would_serve: Option<f64>,
}

/// The query of `/debug/signals`: one signal, and series by label selector.
#[derive(Debug, Default, Clone, serde::Deserialize)]
pub struct SignalsQuery {
    /// Only this signal (metric name).
    pub signal: Option<String>,
    /// Only the series this label selector matches (`queue=jobs,vhost!=test`).
    pub series: Option<String>,
}

/// The `/debug/signals` document of `snapshot` at `now_ms`, narrowed by `query`:
/// per metric and series, the status, the model and its last fit and backtest
/// score, the latest observation and its age, the forecast path and the value
/// served with how it came about. `prescale explain` prints the same document.
///
/// # Errors
/// 400 for a bad selector, 404 for a signal that is not served.
pub fn signals_doc(
    snapshot: &crate::snapshot::Snapshot,
    ready: bool,
    now_ms: i64,
    query: &SignalsQuery,
) -> Result<serde_json::Value, Error> {
    let selector = match query.series.as_deref() {
        Some(text) => Some(
            super::selector::parse(text).map_err(|e| Error::BadRequest(format!("series: {e}")))?,
        ),
        None => None,
    };
    if let Some(name) = &query.signal {
        if !snapshot.metrics.contains_key(name) {
            let known: Vec<&str> = snapshot.metrics.keys().map(String::as_str).collect();
            return Err(Error::NotFound(format!(
                "signal {name:?} is not served; served: {}",
                known.join(", ")
            )));
        }
    }
    let doc = SignalsDoc {
        ready,
        published: ready.then(|| rfc3339(snapshot.published_ms)),
        metrics: snapshot
            .metrics
            .iter()
            .filter(|(name, _)| query.signal.as_ref().is_none_or(|s| s == *name))
            .map(|(name, entry)| MetricDoc {
                name,
                namespaces: &entry.namespaces,
                error: &entry.error,
                custom: entry.custom.as_deref(),
                series: entry
                    .series
                    .iter()
                    .filter(|s| selector.as_ref().is_none_or(|sel| sel.matches(&s.labels)))
                    .map(|s| SeriesDoc {
                        labels: &s.labels,
                        status: status_label(s.status_at(now_ms)),
                        reason: &s.detail.reason,
                        model: &s.detail.model,
                        last_fit: s.detail.last_fit_ms.map(rfc3339),
                        backtest_mase: s.detail.backtest_mase,
                        latest: s.detail.latest,
                        observed_at: rfc3339(s.timestamp_ms),
                        age_seconds: (now_ms - s.timestamp_ms) as f64 / 1_000.0,
                        expires_in_seconds: (s.expires_ms != i64::MAX)
                            .then(|| (s.expires_ms - now_ms) as f64 / 1_000.0),
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
    serde_json::to_value(&doc).map_err(|e| Error::Internal(format!("encoding /debug/signals: {e}")))
}

/// `GET /debug/signals[?signal=NAME][&series=SELECTOR]`: [`signals_doc`] now —
/// what a platform engineer reads before trusting a scale-up.
pub async fn signals(
    State(state): State<AppState>,
    axum::extract::Query(query): axum::extract::Query<SignalsQuery>,
) -> Response {
    let snapshot = state.shared.load();
    let doc = signals_doc(
        &snapshot,
        state.shared.is_ready(),
        state.clock.now_ms(),
        &query,
    );
    match doc.and_then(|d| {
        serde_json::to_vec_pretty(&d)
            .map_err(|e| Error::Internal(format!("encoding /debug/signals: {e}")))
    }) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => e.into_response(),
    }
}
