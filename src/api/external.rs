//! `GET /apis/external.metrics.k8s.io/v1beta1/namespaces/{ns}/{metric}`: the
//! values an HPA acts on, read from the current snapshot and nothing else.
//!
//! Decisions worth knowing:
//! - A namespace outside the metric's allow-list gets **403**: the metric exists
//!   (discovery lists it), the namespace is just not allowed to read it, and a
//!   distinct code makes a misconfigured allow-list easy to tell from a typo.
//! - No series matching the selector is a **404** with the reason, never an empty
//!   list: the HPA treats an empty list as an error anyway ("no metrics returned
//!   from external metrics API"), and only we can say why it is empty.
//! - A selected series in `failed` status makes the whole answer a **503**: the
//!   HPA then holds its replica count instead of acting on a partial sum. `stale`
//!   and `warming` series serve their values; a series whose value has outlived
//!   its `max_staleness` (its `expires_ms`, checked on every request) is failed
//!   whatever the last snapshot said, so no value older than that is ever served.
//! - A signal whose source is failing and that has no selected series yet (the
//!   source was down at start) is a **503** "source failing", not a 404.
//!
//! The selection and the serving rule are the pure [`select`] and [`serve`], which
//! the KEDA external scaler ([`crate::keda`]) calls too, so both answer alike.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::discovery::{GROUP_VERSION, LIST_KIND};
use super::selector::{self, Selector};
use super::status::Error;
use super::{quantity, AppState};
use crate::series::Labels;
use crate::snapshot::{SeriesEntry, Snapshot, Status};

/// The query parameters the HPA sends.
#[derive(Debug, Default, Deserialize)]
pub struct Params {
    /// The HPA's `metricSelector`, in label-selector syntax.
    #[serde(rename = "labelSelector", default)]
    pub label_selector: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Item<'a> {
    metric_name: &'a str,
    metric_labels: &'a Labels,
    timestamp: String,
    window: u64,
    value: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ValueList<'a> {
    kind: &'static str,
    api_version: &'static str,
    metadata: serde_json::Map<String, serde_json::Value>,
    items: Vec<Item<'a>>,
}

/// Unix milliseconds as RFC 3339 in UTC with seconds precision (what
/// `metav1.Time` writes).
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_string())
}

/// `{k="v",...}`, for error messages.
pub(crate) fn describe(labels: &Labels) -> String {
    let parts: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", parts.join(","))
}

/// The handler. A metric prescale does not serve goes to the group's upstream
/// adapter when there is one ([`super::upstream`]).
pub async fn get(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
    params: Result<Query<Params>, QueryRejection>,
) -> Response {
    if let Ok(Path((namespace, metric))) = &path {
        if let Some(upstream) = state.upstreams.external_for(&state.shared, metric) {
            if let Err(e) = check_namespace(namespace) {
                return e.into_response();
            }
            return upstream.forward(&uri, headers.get(header::ACCEPT)).await;
        }
    }
    match answer(&state, path, params) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => e.into_response(),
    }
}

fn answer(
    state: &AppState,
    path: Result<Path<(String, String)>, PathRejection>,
    params: Result<Query<Params>, QueryRejection>,
) -> Result<Vec<u8>, Error> {
    let Path((namespace, metric)) =
        path.map_err(|e| Error::BadRequest(format!("invalid path: {e}")))?;
    check_namespace(&namespace)?;
    let Query(params) = params.map_err(|e| Error::BadRequest(format!("invalid query: {e}")))?;
    let selector_text = params.label_selector.unwrap_or_default();
    let selector = selector::parse(&selector_text)
        .map_err(|e| Error::BadRequest(format!("invalid labelSelector {selector_text:?}: {e}")))?;
    if !state.shared.is_ready() {
        return Err(not_ready());
    }
    let snapshot = state.shared.load();
    let selected = select(&snapshot, &metric, &namespace, &selector, &selector_text)?;
    let served = serve(&metric, &selected, state.clock.now_ms())?;
    let items = served
        .into_iter()
        .map(|s| Item {
            metric_name: &metric,
            metric_labels: &s.series.labels,
            timestamp: rfc3339(s.series.timestamp_ms),
            window: s.series.window_s,
            value: s.quantity,
        })
        .collect();
    let list = ValueList {
        kind: LIST_KIND,
        api_version: GROUP_VERSION,
        metadata: serde_json::Map::new(),
        items,
    };
    serde_json::to_vec(&list).map_err(|e| Error::Internal(format!("encoding the answer: {e}")))
}

/// The kube-apiserver only sends namespace names; anything else (`..`, a NUL, a
/// slash decoded from %2F) is a client crafting paths: 400.
fn check_namespace(namespace: &str) -> Result<(), Error> {
    if crate::config::is_dns_label(namespace) {
        Ok(())
    } else {
        Err(Error::BadRequest(format!(
            "invalid namespace {namespace:?}: must be a lowercase RFC 1123 label"
        )))
    }
}

/// The answer before the first snapshot: nothing can be served yet.
pub fn not_ready() -> Error {
    Error::ServiceUnavailable(
        "no forecasts published yet: the first refresh is still running".into(),
    )
}

/// The series of external metric `metric` that `selector` (written as
/// `selector_text`) selects in `snapshot`, for a reader in `namespace`: what
/// `GET .../namespaces/{namespace}/{metric}?labelSelector=...` reads. Pure; the
/// KEDA scaler ([`crate::keda`]) selects with it too.
///
/// # Errors
/// `NotFound` for a metric that is not an external one or when no series
/// matches; `Forbidden` for a namespace outside the metric's allow-list;
/// `ServiceUnavailable` when nothing matches and the signal's source is failing.
pub fn select<'a>(
    snapshot: &'a Snapshot,
    metric: &str,
    namespace: &str,
    selector: &Selector,
    selector_text: &str,
) -> Result<Vec<&'a SeriesEntry>, Error> {
    let entry = snapshot
        .metrics
        .get(metric)
        .filter(|e| e.custom.is_none())
        .ok_or_else(|| {
            let custom = snapshot.metrics.get(metric).is_some_and(|e| e.custom.is_some());
            Error::NotFound(if custom {
                format!("{metric:?} is a custom metric: it is served by custom.metrics.k8s.io, not {GROUP_VERSION}")
            } else {
                format!("external metric {metric:?} is not served by prescale (see {GROUP_VERSION} for the list)")
            })
        })?;
    if let Some(allowed) = &entry.namespaces {
        if !allowed.iter().any(|n| n == namespace) {
            return Err(Error::Forbidden(format!(
                "external metric {metric:?} is not served to namespace {namespace:?} (it is outside the metric's namespace allow-list)"
            )));
        }
    }
    let selected: Vec<&SeriesEntry> = entry
        .series
        .iter()
        .filter(|s| selector.matches(&s.labels))
        .collect();
    if selected.is_empty() {
        if let Some(error) = &entry.error {
            // The series may well exist: the source cannot say right now.
            return Err(Error::ServiceUnavailable(format!(
                "external metric {metric:?}: source failing, no series to serve: {error}; the HPA holds its replica count until it recovers"
            )));
        }
        let why = if entry.series.is_empty() {
            format!("external metric {metric:?} has no series: its query currently returns nothing")
        } else {
            format!(
                "no series of external metric {metric:?} matches labelSelector {selector_text:?} ({} series served)",
                entry.series.len()
            )
        };
        return Err(Error::NotFound(format!(
            "{why}; an empty list would be an error to the HPA as well, so none is returned"
        )));
    }
    Ok(selected)
}

/// One selected series with the value it is served with.
#[derive(Debug, Clone, PartialEq)]
pub struct Served<'a> {
    /// The series.
    pub series: &'a SeriesEntry,
    /// Its value as a Kubernetes Quantity, as the API writes it.
    pub quantity: String,
    /// The same value as a number: exactly what `quantity` denotes
    /// ([`quantity::rounded`]).
    pub value: f64,
}

/// The values of `selected` (series of `metric`) at `now_ms` by the serving rule:
/// all of them, or none when one is failed or has expired. Pure.
///
/// # Errors
/// `ServiceUnavailable` when a selected series is failed (or its value outlived
/// `max_staleness`), or has no finite value.
pub fn serve<'a>(
    metric: &str,
    selected: &[&'a SeriesEntry],
    now_ms: i64,
) -> Result<Vec<Served<'a>>, Error> {
    if let Some(failed) = selected
        .iter()
        .find(|s| s.status_at(now_ms) == Status::Failed)
    {
        // An expired value says so even if the engine's last word was `stale`.
        let reason = match (&failed.detail.reason, failed.status) {
            (Some(r), Status::Failed) => r.clone(),
            (r, _) => format!(
                "its data is older than the allowed staleness{}",
                r.as_deref().map(|r| format!(" ({r})")).unwrap_or_default()
            ),
        };
        return Err(Error::ServiceUnavailable(format!(
            "external metric {metric:?} series {} is failed: {reason}; the HPA holds its replica count until it recovers",
            describe(&failed.labels)
        )));
    }
    selected
        .iter()
        .map(|&series| {
            let unusable = |e: quantity::Error| {
                Error::ServiceUnavailable(format!(
                    "external metric {metric:?} series {} has no usable value: {e}",
                    describe(&series.labels)
                ))
            };
            Ok(Served {
                series,
                quantity: quantity::format(series.value).map_err(unusable)?,
                value: quantity::rounded(series.value).map_err(unusable)?,
            })
        })
        .collect()
}
