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

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde::{Deserialize, Serialize};

use super::selector::{self, Selector};
use super::serving::{self, Unservable};
use super::status::Error;
use super::wire::{check_namespace, describe, rfc3339};
use super::{AppState, Route};
use crate::series::Labels;
use crate::snapshot::{SeriesEntry, Snapshot};

/// The API group served (`external.metrics.k8s.io`).
pub const GROUP: &str = "external.metrics.k8s.io";
/// Its only version.
pub const VERSION: &str = "v1beta1";
/// `group/version`.
pub const GROUP_VERSION: &str = "external.metrics.k8s.io/v1beta1";
/// The kind an external metric answers with.
pub const LIST_KIND: &str = "ExternalMetricValueList";

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

/// The handler. A metric prescale does not serve goes to the group's upstream
/// adapter when there is one ([`super::upstream`]).
pub async fn get(
    State(state): State<AppState>,
    route: Option<Extension<Route>>,
    uri: Uri,
    headers: HeaderMap,
    params: Result<Query<Params>, QueryRejection>,
) -> Response {
    let route = route.map_or_else(|| Route::parse(uri.path()), |Extension(r)| r);
    let Route::External { namespace, metric } = route else {
        return Error::NotFound(format!(
            "the server could not find the requested resource {:?}",
            uri.path()
        ))
        .into_response();
    };
    if let Err(e) = check_namespace(&namespace) {
        return e.into_response();
    }
    if let Some(upstream) = state.upstreams.external_for(&state.shared, &metric) {
        return upstream.forward(&uri, headers.get(header::ACCEPT)).await;
    }
    match answer(&state, &namespace, &metric, params) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => e.into_response(),
    }
}

fn answer(
    state: &AppState,
    namespace: &str,
    metric: &str,
    params: Result<Query<Params>, QueryRejection>,
) -> Result<Vec<u8>, Error> {
    let Query(params) = params.map_err(|e| Error::BadRequest(format!("invalid query: {e}")))?;
    let selector_text = params.label_selector.unwrap_or_default();
    let selector = selector::parse(&selector_text)
        .map_err(|e| Error::BadRequest(format!("invalid labelSelector {selector_text:?}: {e}")))?;
    if !state.shared.is_ready() {
        return Err(not_ready());
    }
    let snapshot = state.shared.load();
    let selected = select(&snapshot, metric, namespace, &selector, &selector_text)?;
    let served = serve(metric, &selected, state.clock.now_ms())?;
    let items = served
        .into_iter()
        .map(|s| Item {
            metric_name: metric,
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

/// The answer before the first snapshot: nothing can be served yet.
pub fn not_ready() -> Error {
    Error::ServiceUnavailable(
        "no forecasts published yet: the first refresh is still running".into(),
    )
}

/// The series of external metric `metric` that `selector` (written as
/// `selector_text`) selects in `snapshot`, for a reader in `namespace`: what
/// `GET .../namespaces/{namespace}/{metric}?labelSelector=...` reads, by the
/// serving rule ([`serving`]). Pure; the KEDA scaler ([`crate::keda`]) selects
/// with it too.
///
/// # Errors
/// `NotServed` for a metric that is not an external one, and the rule's
/// refusals: `NotAllowed`, `SourceFailing`, `NoMatch`.
pub fn select<'a>(
    snapshot: &'a Snapshot,
    metric: &str,
    namespace: &str,
    selector: &Selector,
    selector_text: &str,
) -> Result<Vec<&'a SeriesEntry>, Unservable> {
    let entry = snapshot
        .metrics
        .get(metric)
        .filter(|e| e.custom.is_none())
        .ok_or_else(|| {
            let custom = snapshot.metrics.get(metric).is_some_and(|e| e.custom.is_some());
            Unservable::NotServed {
                why: if custom {
                    format!("{metric:?} is a custom metric: it is served by custom.metrics.k8s.io, not {GROUP_VERSION}")
                } else {
                    format!("external metric {metric:?} is not served by prescale (see {GROUP_VERSION} for the list)")
                },
            }
        })?;
    let subject = format!("external metric {metric:?}");
    serving::allowed(&subject, entry, Some(namespace))?;
    serving::select(
        &subject,
        entry,
        |s| selector.matches(&s.labels),
        |n| {
            if n == 0 {
                format!("{subject} has no series: its query currently returns nothing")
            } else {
                format!("no series of {subject} matches labelSelector {selector_text:?} ({n} series served)")
            }
        },
    )
}

/// One selected series with the value it is served with.
#[derive(Debug, Clone, PartialEq)]
pub struct Served<'a> {
    /// The series.
    pub series: &'a SeriesEntry,
    /// Its value as a Kubernetes Quantity, as the API writes it.
    pub quantity: String,
    /// The same value as a number: exactly what `quantity` denotes
    /// ([`crate::quantity::rounded`]).
    pub value: f64,
}

/// The values of `selected` (series of `metric`) at `now_ms` by the serving rule:
/// all of them, or none when one is failed or has expired. Pure.
///
/// # Errors
/// `Failed` when a selected series is failed (or its value outlived
/// `max_staleness`), `Unusable` when one has no finite value.
pub fn serve<'a>(
    metric: &str,
    selected: &[&'a SeriesEntry],
    now_ms: i64,
) -> Result<Vec<Served<'a>>, Unservable> {
    let subject = format!("external metric {metric:?}");
    serving::current(&subject, selected.to_vec(), now_ms)?
        .into_iter()
        .map(|series| {
            let (quantity, value) =
                serving::quantity_of(&subject, Some(&describe(&series.labels)), series.value)?;
            Ok(Served {
                series,
                quantity,
                value,
            })
        })
        .collect()
}
