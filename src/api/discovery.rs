//! Discovery: the documents the aggregation layer and clients read to learn
//! what this server serves (the custom group's own are in `custom`).
//!
//! `/apis` answers in two forms, chosen by `Accept` ([`media::discovery`]):
//! the aggregated `APIGroupDiscoveryList` (`apidiscovery.k8s.io` v2, or v2beta1
//! for older apiservers), which is what the kube-aggregator asks every
//! APIService's backend for first, with every group-version and its resources;
//! or the plain `APIGroupList`. `/apis/<group>` and `/apis/<group>/<version>`
//! have only the plain form: an `Accept` that asks for nothing else is a 406.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::external::{GROUP, GROUP_VERSION, LIST_KIND, VERSION};
use super::media::{self, AggregatedVersion, Discovery};
use super::upstream::Upstreams;
use super::{custom, AppState};
use crate::snapshot::Snapshot;

fn group_version() -> Value {
    json!({ "groupVersion": GROUP_VERSION, "version": VERSION })
}

fn api_group() -> Value {
    json!({
        "name": GROUP,
        "versions": [group_version()],
        "preferredVersion": group_version(),
    })
}

/// The external metrics of `snapshot`, by name (custom metrics are listed by
/// custom.metrics.k8s.io, not here), then those only the upstream adapter lists.
fn external_metrics(snapshot: &Snapshot, upstreams: &Upstreams) -> Vec<String> {
    let own: std::collections::BTreeSet<&str> = snapshot
        .metrics
        .iter()
        .filter(|(_, entry)| entry.custom.is_none())
        .map(|(name, _)| name.as_str())
        .collect();
    let extra = upstreams.external_extra(&own);
    own.into_iter()
        .map(str::to_string)
        .chain(extra.into_iter().map(|r| r.name))
        .collect()
}

/// The custom metrics of `version` as discovery lists them: prescale's, then
/// those only the upstream adapter lists.
fn custom_listed(
    own: &[custom::Listed],
    version: custom::Version,
    upstreams: &Upstreams,
) -> Vec<custom::Listed> {
    let extra = upstreams.custom_extra(version, own);
    own.iter().cloned().chain(extra).collect()
}

/// A `metav1.GroupVersionKind`.
fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!({ "group": group, "version": version, "kind": kind })
}

fn scope(namespaced: bool) -> &'static str {
    if namespaced {
        "Namespaced"
    } else {
        "Cluster"
    }
}

/// The resources of one custom metrics version in aggregated form: each
/// described resource once, its metrics as subresources (the plain form's
/// `<resource>/<metric>`, which is how clients read them back). The parent
/// itself has no operations, so no verbs and an empty kind, as the aggregator
/// writes it when it converts the plain form.
fn custom_resources(listed: &[custom::Listed], version: custom::Version) -> Vec<Value> {
    let mut by_resource: BTreeMap<&str, (bool, Vec<Value>)> = BTreeMap::new();
    for l in listed {
        let entry = by_resource
            .entry(l.resource.as_str())
            .or_insert_with(|| (l.namespaced, Vec::new()));
        entry.1.push(json!({
            "subresource": l.metric,
            "responseKind": gvk(custom::GROUP, version.as_str(), custom::LIST_KIND),
            "verbs": ["get"],
        }));
    }
    by_resource
        .into_iter()
        .map(|(resource, (namespaced, subresources))| {
            json!({
                "resource": resource,
                "responseKind": gvk("", "", ""),
                "scope": scope(namespaced),
                "singularResource": "",
                "verbs": [],
                "subresources": subresources,
            })
        })
        .collect()
}

/// `/apis` in aggregated form: both groups, every version (preferred first)
/// with its resources: one namespaced resource per external metric, and the
/// custom metrics under the resources they describe.
pub fn aggregated(snapshot: &Snapshot, version: AggregatedVersion, upstreams: &Upstreams) -> Value {
    let external: Vec<Value> = external_metrics(snapshot, upstreams)
        .into_iter()
        .map(|name| {
            json!({
                "resource": name,
                "responseKind": gvk(GROUP, VERSION, LIST_KIND),
                "scope": scope(true),
                "singularResource": "",
                "verbs": ["get"],
            })
        })
        .collect();
    let listed = custom::listed(snapshot);
    let custom_versions: Vec<Value> = custom::Version::ALL
        .iter()
        .map(|v| {
            json!({
                "version": v.as_str(),
                "resources": custom_resources(&custom_listed(&listed, *v, upstreams), *v),
                "freshness": "Current",
            })
        })
        .collect();
    json!({
        "kind": media::AGGREGATED_KIND,
        "apiVersion": version.api_version(),
        "metadata": {},
        "items": [
            {
                "metadata": { "name": GROUP },
                "versions": [{ "version": VERSION, "resources": external, "freshness": "Current" }],
            },
            {
                "metadata": { "name": custom::GROUP },
                "versions": custom_versions,
            },
        ],
    })
}

/// `GET /apis`: the aggregated `APIGroupDiscoveryList` when asked for it, else
/// an `APIGroupList` with our two groups (external and custom metrics).
pub async fn group_list(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match media::discovery(&headers, true) {
        Some(Discovery::Aggregated(version)) => media::cached_json(
            &headers,
            &aggregated(&state.shared.load(), version, &state.upstreams),
            version.content_type(),
        ),
        Some(Discovery::Plain) => media::json(
            &json!({
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": [api_group(), custom::api_group()],
            }),
            media::JSON,
        ),
        None => media::not_acceptable(
            &headers,
            "/apis is served as application/json, plain or as apidiscovery.k8s.io v2 or v2beta1 APIGroupDiscoveryList",
        )
        .into_response(),
    }
}

/// `GET /apis/external.metrics.k8s.io`: the `APIGroup`.
pub async fn group(headers: HeaderMap) -> Response {
    media::api_group(&headers, api_group())
}

/// `GET /apis/external.metrics.k8s.io/v1beta1`: an `APIResourceList` with one
/// resource per external metric in the current snapshot. This is also the aggregator's
/// availability check, so it answers 2xx even before the first snapshot (with
/// no resources).
pub async fn resource_list(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(e) = media::require_plain(&headers) {
        return e.into_response();
    }
    let snapshot = state.shared.load();
    let resources: Vec<_> = external_metrics(&snapshot, &state.upstreams)
        .into_iter()
        .map(|name| {
            json!({
                "name": name,
                "singularName": "",
                "namespaced": true,
                "kind": LIST_KIND,
                "verbs": ["get"],
            })
        })
        .collect();
    media::json(
        &json!({
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": GROUP_VERSION,
            "resources": resources,
        }),
        media::JSON,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::MetricEntry;

    #[test]
    fn aggregated_lists_every_group_version_with_its_resources() {
        let mut metrics = BTreeMap::new();
        metrics.insert("queue_depth".to_string(), MetricEntry::default());
        let snapshot = Snapshot {
            published_ms: 0,
            metrics,
            plan: None,
        };
        let doc = aggregated(&snapshot, AggregatedVersion::V2beta1, &Upstreams::default());
        assert_eq!(doc["kind"], "APIGroupDiscoveryList");
        assert_eq!(doc["apiVersion"], "apidiscovery.k8s.io/v2beta1");
        assert_eq!(doc["items"][0]["metadata"]["name"], GROUP);
        let external = &doc["items"][0]["versions"][0];
        assert_eq!(external["version"], "v1beta1");
        assert_eq!(external["freshness"], "Current");
        assert_eq!(
            external["resources"],
            json!([{
                "resource": "queue_depth",
                "responseKind": {"group": GROUP, "version": "v1beta1", "kind": "ExternalMetricValueList"},
                "scope": "Namespaced",
                "singularResource": "",
                "verbs": ["get"],
            }])
        );
        let custom = &doc["items"][1];
        assert_eq!(custom["metadata"]["name"], "custom.metrics.k8s.io");
        let versions: Vec<&str> = custom["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["version"].as_str().unwrap())
            .collect();
        assert_eq!(versions, vec!["v1beta2", "v1beta1"], "preferred first");
    }
}
