//! `custom.metrics.k8s.io`, versions `v1beta2` (preferred) and `v1beta1`: Pods
//! and Object metrics, read from the current snapshot (and, for Pods metrics,
//! the pods the HPA's selector picks).
//!
//! The paths the HPA calls, after `/apis/custom.metrics.k8s.io/{version}`:
//! - `/namespaces/{ns}/pods/*/{metric}?labelSelector=..`: a Pods metric;
//! - `/namespaces/{ns}/{resource}/{name}/{metric}`: an object in a namespace
//!   (`resource` is plural and group-qualified: `statefulsets.apps`);
//! - `/namespaces/{ns}/metrics/{metric}`: the namespace itself;
//! - `/{resource}/{name}/{metric}`: a cluster-scoped object (`nodes`, `namespaces`).
//!
//! Decisions worth knowing:
//! - **Pods metrics** are workload totals (see [`crate::custom`]). The pods come
//!   from a [`PodLookup`](super::pods::PodLookup) by namespace and `labelSelector`; each pod's workload is
//!   found through its owner references, and the total of the selected pods'
//!   workloads is served to every selected pod as `total / n`, where `n` counts
//!   the pods that are not `Pending`. The HPA sets `Pending` pods aside and
//!   multiplies the average of the others by their number, so it computes
//!   exactly `ceil(total / target)` replicas; `Pending` pods are answered too
//!   (with the same value) because the HPA counts a pod missing from the answer
//!   against scaling up.
//! - No pods, no series, or a pod selector whose pods belong to no mapped
//!   workload is a **404** with the reason: the HPA treats an empty list as an
//!   error anyway, and only we can say why.
//! - More than one series for one object is a **400**: an object has one value,
//!   and summing or picking would be a guess; narrow it with the HPA's
//!   `metric.selector` or aggregate in the query.
//! - A `failed` series answers **503**, like external metrics, so the HPA holds.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::Target;
use super::pods::Pod;
use super::selector::{self, Op, Selector};
use super::serving::{self, Unservable};
use super::status::Error;
use super::wire::{check_namespace, describe, percent_decode, rfc3339};
use super::{media, AppState, Route};
use crate::custom::{Mapping, MetricType, Resource};
use crate::snapshot::{MetricEntry, SeriesEntry, Snapshot};

/// The API group served.
pub const GROUP: &str = "custom.metrics.k8s.io";
/// Path prefix of the group.
pub const PREFIX: &str = "/apis/custom.metrics.k8s.io";
/// The kind every value request answers with.
pub const LIST_KIND: &str = "MetricValueList";

/// A version of the group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// `v1beta1`: items carry `metricName`, `window` and `selector`.
    V1beta1,
    /// `v1beta2` (preferred): items carry `metric {name, selector}` and `windowSeconds`.
    V1beta2,
}

impl Version {
    /// Served versions, preferred first.
    pub const ALL: [Version; 2] = [Version::V1beta2, Version::V1beta1];

    /// `v1beta1` / `v1beta2`.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V1beta1 => "v1beta1",
            Version::V1beta2 => "v1beta2",
        }
    }

    /// The version a path segment names.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// `custom.metrics.k8s.io/<version>`.
    pub fn group_version(self) -> String {
        format!("{GROUP}/{}", self.as_str())
    }
}

/// A value request, parsed from its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValuePath {
    /// The group version asked.
    pub version: Version,
    /// The namespace of a namespaced object; `None` for cluster-scoped objects
    /// (nodes, and namespaces themselves).
    pub namespace: Option<String>,
    /// The resource as in the URL: `pods`, `statefulsets.apps`, `namespaces`.
    pub resource: String,
    /// The object's name; `*` for every pod the selector picks.
    pub name: String,
    /// The metric.
    pub metric: String,
}

impl ValuePath {
    /// What authorization asks about: resource `<resource>`, subresource the
    /// metric (RBAC's `<resource>/<metric>`), as the kube-apiserver itself would
    /// parse this path.
    pub fn target(&self) -> Target {
        Target::Resource {
            group: GROUP.to_string(),
            version: self.version.as_str().to_string(),
            resource: self.resource.clone(),
            subresource: Some(self.metric.clone()),
            name: Some(self.name.clone()),
            namespace: self.scope_namespace().to_string(),
        }
    }

    /// The namespace the request is about: the object's, the namespace itself
    /// for a namespace's metrics, empty for other cluster-scoped objects.
    pub fn scope_namespace(&self) -> &str {
        match (&self.namespace, self.resource.as_str()) {
            (Some(ns), _) => ns,
            (None, "namespaces") => &self.name,
            (None, _) => "",
        }
    }
}

/// Parses a request path below [`PREFIX`] into a value request; `None` when it
/// is not one (discovery, an unknown version, a malformed path). Segments are
/// percent-decoded.
pub fn parse_path(path: &str) -> Option<ValuePath> {
    let rest = path.strip_prefix(PREFIX)?.strip_prefix('/')?;
    let segments: Vec<String> = rest.split('/').map(percent_decode).collect();
    if segments.iter().any(String::is_empty) {
        return None;
    }
    let version = Version::parse(segments.first()?)?;
    let seg: Vec<&str> = segments[1..].iter().map(String::as_str).collect();
    let (namespace, resource, name, metric) = match seg.as_slice() {
        ["namespaces", ns, "metrics", metric] => (None, "namespaces", *ns, *metric),
        ["namespaces", ns, resource, name, metric] => (Some(*ns), *resource, *name, *metric),
        [resource, name, metric] => (None, *resource, *name, *metric),
        _ => return None,
    };
    Some(ValuePath {
        version,
        namespace: namespace.map(str::to_string),
        resource: resource.to_string(),
        name: name.to_string(),
        metric: metric.to_string(),
    })
}

/// The query parameters the HPA sends.
#[derive(Debug, Default, Deserialize)]
pub struct Params {
    /// Pods metrics: the target's pod selector.
    #[serde(rename = "labelSelector", default)]
    pub label_selector: Option<String>,
    /// The HPA's `metric.selector`, matched against series labels.
    #[serde(rename = "metricLabelSelector", default)]
    pub metric_label_selector: Option<String>,
}

/// `GET /apis/custom.metrics.k8s.io`: the `APIGroup`, v1beta2 preferred.
pub async fn group(headers: HeaderMap) -> Response {
    media::api_group(&headers, api_group())
}

/// The group as `/apis` lists it.
pub fn api_group() -> Value {
    let versions: Vec<Value> = Version::ALL
        .iter()
        .map(|v| json!({ "groupVersion": v.group_version(), "version": v.as_str() }))
        .collect();
    json!({
        "name": GROUP,
        "preferredVersion": versions[0].clone(),
        "versions": versions,
    })
}

/// `GET /apis/custom.metrics.k8s.io/{version}`: an `APIResourceList` with
/// `<resource>/<metric>` per custom metric and the resources it describes. Also
/// the aggregator's availability check: 2xx before the first snapshot.
pub async fn resource_list(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = media::require_plain(&headers) {
        return e.into_response();
    }
    let version = uri
        .path()
        .strip_prefix(PREFIX)
        .and_then(|p| p.strip_prefix('/'))
        .and_then(Version::parse);
    let Some(version) = version else {
        return Error::NotFound(format!(
            "{GROUP} serves versions v1beta2 and v1beta1, not {:?}",
            uri.path()
        ))
        .into_response();
    };
    let own = listed(&state.shared.load());
    let extra = state.upstreams.custom_extra(version, &own);
    let resources: Vec<Value> = own
        .into_iter()
        .chain(extra)
        .map(|l| {
            json!({
                "name": l.name(),
                "singularName": "",
                "namespaced": l.namespaced,
                "kind": LIST_KIND,
                "verbs": ["get"],
            })
        })
        .collect();
    media::json(
        &json!({
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": version.group_version(),
            "resources": resources,
        }),
        media::JSON,
    )
}

/// A custom metric as discovery lists it: `<resource>/<metric>`, for the
/// objects of `resource` it describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The described objects' resource, group-qualified plural (`pods`,
    /// `statefulsets.apps`).
    pub resource: String,
    /// The metric.
    pub metric: String,
    /// Whether those objects live in a namespace.
    pub namespaced: bool,
}

impl Listed {
    /// `<resource>/<metric>`, the plain discovery name RBAC reads too.
    pub fn name(&self) -> String {
        format!("{}/{}", self.resource, self.metric)
    }
}

/// Every custom metric of `snapshot` as discovery lists it, in metric order.
pub fn listed(snapshot: &Snapshot) -> Vec<Listed> {
    snapshot
        .metrics
        .iter()
        .filter_map(|(metric, entry)| entry.custom.as_deref().map(|m| (metric, m)))
        .flat_map(|(metric, mapping)| discovery_names(mapping, metric))
        .collect()
}

/// The discovery entries of one custom metric.
pub(crate) fn discovery_names(mapping: &Mapping, metric: &str) -> Vec<Listed> {
    let listed = |resource: String, namespaced: bool| Listed {
        resource,
        metric: metric.to_string(),
        namespaced,
    };
    match mapping.metric_type() {
        MetricType::Pods => vec![listed("pods".to_string(), true)],
        MetricType::Object => mapping
            .described()
            .into_iter()
            .map(|(_, r)| listed(r.qualified(), r.namespaced))
            .collect(),
    }
}

/// The value handler, for every path below a version. A metric prescale does
/// not serve goes to the group's upstream adapter when there is one
/// ([`super::upstream`]).
pub async fn get(
    State(state): State<AppState>,
    route: Option<Extension<Route>>,
    uri: Uri,
    headers: HeaderMap,
    params: Result<Query<Params>, QueryRejection>,
) -> Response {
    let route = route.map_or_else(|| Route::parse(uri.path()), |Extension(r)| r);
    let Route::Custom(path) = route else {
        return Error::NotFound(format!(
            "the server could not find the requested resource {:?}: expected .../namespaces/{{ns}}/{{resource}}/{{name}}/{{metric}}, .../namespaces/{{ns}}/metrics/{{metric}} or .../{{resource}}/{{name}}/{{metric}} under {PREFIX}/v1beta2 or /v1beta1",
            uri.path()
        ))
        .into_response();
    };
    if let Some(upstream) = state
        .upstreams
        .custom_for(&state.shared, &path.resource, &path.metric)
    {
        if let Err(e) = check_names(&path) {
            return e.into_response();
        }
        return upstream.forward(&uri, headers.get(header::ACCEPT)).await;
    }
    match answer(&state, &path, params).await {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Rejects namespaces and object names Kubernetes could not have (`..`, a NUL,
/// a slash decoded from `%2F`): the kube-apiserver only sends real names, so
/// anything else is a client crafting paths.
fn check_names(path: &ValuePath) -> Result<(), Error> {
    if let Some(ns) = &path.namespace {
        check_namespace(ns)?;
    }
    if path.resource == "namespaces" {
        check_namespace(&path.name)?;
    }
    if path.name != "*" && !is_dns_subdomain(&path.name) {
        return Err(Error::BadRequest(format!(
            "invalid object name {:?}: must be a lowercase RFC 1123 subdomain (or * for every pod)",
            path.name
        )));
    }
    Ok(())
}

/// Whether `s` is a lowercase RFC 1123 subdomain (most Kubernetes object names).
fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(crate::names::is_dns_label)
}

/// The selectors of one request.
struct Selectors {
    /// The target's pod selector (`labelSelector`), for Pods metrics.
    pods: Selector,
    /// Its text, for lookups that pass it on and for messages.
    pods_text: String,
    /// The HPA's `metric.selector` (`metricLabelSelector`), matched against series labels.
    metric: Selector,
}

/// One item before it is written in a version's shape.
struct Item {
    kind: String,
    api_version: String,
    namespace: Option<String>,
    name: String,
    timestamp_ms: i64,
    window_s: u64,
    value: String,
}

async fn answer(
    state: &AppState,
    path: &ValuePath,
    params: Result<Query<Params>, QueryRejection>,
) -> Result<Vec<u8>, Error> {
    let Query(params) = params.map_err(|e| Error::BadRequest(format!("invalid query: {e}")))?;
    let parse = |name: &str, text: &Option<String>| {
        let text = text.clone().unwrap_or_default();
        selector::parse(&text)
            .map(|s| (s, text.clone()))
            .map_err(|e| Error::BadRequest(format!("invalid {name} {text:?}: {e}")))
    };
    let (pods, pods_text) = parse("labelSelector", &params.label_selector)?;
    let (metric_selector, _) = parse("metricLabelSelector", &params.metric_label_selector)?;
    let selectors = Selectors {
        pods,
        pods_text,
        metric: metric_selector,
    };
    check_names(path)?;
    if !state.shared.is_ready() {
        return Err(Error::ServiceUnavailable(
            "no forecasts published yet: the first refresh is still running".into(),
        ));
    }
    let snapshot = state.shared.load();
    let metric = &path.metric;
    let Some((entry, mapping)) = snapshot
        .metrics
        .get(metric)
        .and_then(|e| e.custom.as_deref().map(|m| (e, m)))
    else {
        return Err(Error::NotFound(format!(
            "custom metric {metric:?} is not served by prescale (see {} for the list)",
            path.version.group_version()
        )));
    };
    let scope = path.scope_namespace();
    serving::allowed(
        &format!("custom metric {metric:?}"),
        entry,
        (!scope.is_empty()).then_some(scope),
    )?;
    let items = match mapping.metric_type() {
        MetricType::Pods => {
            let Some(namespace) = path
                .namespace
                .as_deref()
                .filter(|_| path.resource == "pods")
            else {
                return Err(Error::NotFound(format!(
                    "custom metric {metric:?} is a Pods metric: it is served as namespaces/{{ns}}/pods/*/{metric}, not for {}",
                    path.resource
                )));
            };
            pods_items(state, path, namespace, entry, mapping, &selectors).await?
        }
        MetricType::Object => vec![object_item(
            path,
            entry,
            mapping,
            &selectors.metric,
            state.clock.now_ms(),
        )?],
    };
    let selector_json = label_selector_json(&selectors.metric);
    let items: Vec<Value> = items
        .into_iter()
        .map(|item| write_item(path.version, metric, selector_json.as_ref(), item))
        .collect();
    let list = json!({
        "kind": LIST_KIND,
        "apiVersion": path.version.group_version(),
        "metadata": {},
        "items": items,
    });
    serde_json::to_vec(&list).map_err(|e| Error::Internal(format!("encoding the answer: {e}")))
}

fn write_item(version: Version, metric: &str, selector: Option<&Value>, item: Item) -> Value {
    let mut described = json!({
        "kind": item.kind,
        "name": item.name,
        "apiVersion": item.api_version,
    });
    if let (Some(ns), Some(map)) = (&item.namespace, described.as_object_mut()) {
        map.insert("namespace".into(), json!(ns));
    }
    let timestamp = rfc3339(item.timestamp_ms);
    match version {
        Version::V1beta2 => {
            let mut id = json!({ "name": metric });
            if let (Some(sel), Some(map)) = (selector, id.as_object_mut()) {
                map.insert("selector".into(), sel.clone());
            }
            json!({
                "describedObject": described,
                "metric": id,
                "timestamp": timestamp,
                "windowSeconds": item.window_s,
                "value": item.value,
            })
        }
        Version::V1beta1 => json!({
            "describedObject": described,
            "metricName": metric,
            "timestamp": timestamp,
            "window": item.window_s,
            "value": item.value,
            "selector": selector.cloned().unwrap_or(Value::Null),
        }),
    }
}

/// The metric selector as a `metav1.LabelSelector`; `None` when it selects everything.
fn label_selector_json(selector: &Selector) -> Option<Value> {
    if selector.is_empty() {
        return None;
    }
    let mut match_labels = serde_json::Map::new();
    let mut expressions = Vec::new();
    for r in &selector.requirements {
        let (operator, values): (&str, Vec<&String>) = match &r.op {
            Op::Equals(v) if !match_labels.contains_key(&r.key) => {
                match_labels.insert(r.key.clone(), json!(v));
                continue;
            }
            Op::Equals(v) => ("In", vec![v]),
            Op::NotEquals(v) => ("NotIn", vec![v]),
            Op::In(set) => ("In", set.iter().collect()),
            Op::NotIn(set) => ("NotIn", set.iter().collect()),
            Op::Exists => ("Exists", vec![]),
            Op::DoesNotExist => ("DoesNotExist", vec![]),
        };
        let mut e = json!({ "key": r.key, "operator": operator });
        if !values.is_empty() {
            if let Some(map) = e.as_object_mut() {
                map.insert("values".into(), json!(values));
            }
        }
        expressions.push(e);
    }
    let mut out = serde_json::Map::new();
    if !match_labels.is_empty() {
        out.insert("matchLabels".into(), Value::Object(match_labels));
    }
    if !expressions.is_empty() {
        out.insert("matchExpressions".into(), Value::Array(expressions));
    }
    Some(Value::Object(out))
}

/// The one series of `entry` for the object `what` names that `matches` picks,
/// by the serving rule ([`serving`]): none is 404 (503 while the source
/// fails), more than one is 400, a failed or expired one is 503.
fn one_series<'a>(
    metric: &str,
    what: &str,
    entry: &'a MetricEntry,
    matches: impl Fn(&SeriesEntry) -> bool,
    now_ms: i64,
) -> Result<&'a SeriesEntry, Unservable> {
    let subject = format!("custom metric {metric:?} for {what}");
    let selected = serving::select(&subject, entry, matches, |n| {
        format!(
            "custom metric {metric:?} has no series for {what} ({n} series served{})",
            if n == 0 {
                ": its query currently returns nothing"
            } else {
                ""
            }
        )
    })?;
    let one = serving::one(&subject, selected)?;
    serving::current(&subject, vec![one], now_ms)?;
    Ok(one)
}

fn object_item(
    path: &ValuePath,
    entry: &MetricEntry,
    mapping: &Mapping,
    metric_selector: &Selector,
    now_ms: i64,
) -> Result<Item, Error> {
    let metric = &path.metric;
    let Some((label, resource)) = mapping.describing(&path.resource) else {
        let served: Vec<String> = discovery_names(mapping, metric)
            .iter()
            .map(Listed::name)
            .collect();
        return Err(Error::NotFound(format!(
            "custom metric {metric:?} does not describe {}: it is served as {}",
            path.resource,
            served.join(", ")
        )));
    };
    if resource.namespaced != path.namespace.is_some() {
        return Err(Error::NotFound(format!(
            "{} is {}: ask for it {}",
            resource.qualified(),
            if resource.namespaced {
                "namespaced"
            } else {
                "cluster-scoped"
            },
            if resource.namespaced {
                "under namespaces/{ns}/"
            } else {
                "without a namespace"
            }
        )));
    }
    if path.name == "*" {
        return Err(Error::BadRequest(format!(
            "listing {} by label selector is not served: name the object",
            resource.qualified()
        )));
    }
    let what = match &path.namespace {
        Some(ns) => format!("{} {ns}/{}", resource.qualified(), path.name),
        None => format!("{} {}", resource.qualified(), path.name),
    };
    let matches = |s: &SeriesEntry| {
        mapping.names(&s.labels, label, path.namespace.as_deref(), &path.name)
            && metric_selector.matches(&s.labels)
    };
    let series = one_series(metric, &what, entry, matches, now_ms)?;
    let subject = format!("custom metric {metric:?} for {what}");
    let (value, _) = serving::quantity_of(&subject, Some(&describe(&series.labels)), series.value)?;
    Ok(Item {
        kind: resource.kind.clone(),
        api_version: resource.api_version(),
        namespace: path.namespace.clone(),
        name: path.name.clone(),
        timestamp_ms: series.timestamp_ms,
        window_s: series.window_s,
        value,
    })
}

async fn pods_items(
    state: &AppState,
    path: &ValuePath,
    namespace: &str,
    entry: &MetricEntry,
    mapping: &Mapping,
    selectors: &Selectors,
) -> Result<Vec<Item>, Error> {
    let pod_selector_text = selectors.pods_text.as_str();
    let metric = &path.metric;
    let Some((workload_label, workload)) = mapping.workload() else {
        return Err(Error::Internal(format!(
            "custom metric {metric:?} is a Pods metric without a workload mapping"
        )));
    };
    let pods = state
        .pods
        .pods(namespace, &selectors.pods, pod_selector_text)
        .await
        .map_err(|e| Error::ServiceUnavailable(format!("custom metric {metric:?}: {e}")))?;
    if pods.is_empty() {
        return Err(Error::NotFound(format!(
            "no current pods in namespace {namespace:?} match labelSelector {pod_selector_text:?}, so custom metric {metric:?} has no pods to answer for"
        )));
    }
    let now_ms = state.clock.now_ms();
    let workloads = workloads_of(&pods, workload);
    if workloads.is_empty() {
        return Err(Error::NotFound(format!(
            "the pods labelSelector {pod_selector_text:?} picks in namespace {namespace:?} belong to no {}, which custom metric {metric:?} is forecast for (label {workload_label:?})",
            workload.kind
        )));
    }
    let mut total = 0.0;
    let mut timestamp_ms = i64::MAX;
    let mut window_s = 0;
    for name in &workloads {
        let what = format!("{} {namespace}/{name}", workload.qualified());
        let matches = |s: &SeriesEntry| {
            mapping.names(&s.labels, workload_label, Some(namespace), name)
                && selectors.metric.matches(&s.labels)
        };
        let series = one_series(metric, &what, entry, matches, now_ms)?;
        if !series.value.is_finite() {
            return Err(Unservable::Unusable {
                subject: format!("custom metric {metric:?} for {what}"),
                labels: Some(describe(&series.labels)),
                why: format!("{} is not a finite number", series.value),
            }
            .into());
        }
        total += series.value;
        timestamp_ms = timestamp_ms.min(series.timestamp_ms);
        window_s = window_s.max(series.window_s);
    }
    let per_pod = share(total, &pods);
    let subject = format!(
        "custom metric {metric:?} for the pods of {}",
        workloads.join(", ")
    );
    let (value, _) = serving::quantity_of(&subject, None, per_pod)?;
    let items: Vec<Item> = pods
        .into_iter()
        .filter(|p| path.name == "*" || p.name == path.name)
        .map(|p| Item {
            kind: "Pod".to_string(),
            api_version: "v1".to_string(),
            namespace: Some(namespace.to_string()),
            name: p.name,
            timestamp_ms,
            window_s,
            value: value.clone(),
        })
        .collect();
    if items.is_empty() {
        return Err(Error::NotFound(format!(
            "pod {namespace}/{} is not a current pod matching labelSelector {pod_selector_text:?}",
            path.name
        )));
    }
    Ok(items)
}

/// The names of the `workload` objects that own `pods`, sorted and distinct.
fn workloads_of(pods: &[Pod], workload: &Resource) -> Vec<String> {
    let mut names: Vec<String> = pods
        .iter()
        .filter_map(|p| p.owners.iter().find(|o| o.kind == workload.kind))
        .map(|o| o.name.clone())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Each pod's share of `total`: divided among the pods that are not `Pending`
/// (the ones the HPA averages over), or among all when every pod is pending.
pub fn share(total: f64, pods: &[Pod]) -> f64 {
    let running = pods.iter().filter(|p| !p.pending).count();
    let n = if running == 0 { pods.len() } else { running };
    total / n.max(1) as f64
}

#[cfg(test)]
mod tests;
