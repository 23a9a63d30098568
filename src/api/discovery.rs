//! Discovery: the documents the aggregation layer and clients read to learn
//! what this server serves (the custom group's own are in `custom`).
//!
//! Only the legacy (per-group) discovery is served. A kube-apiserver that asks
//! for the aggregated format (`apidiscovery.k8s.io`) and nothing else gets 406,
//! which makes it fall back to these documents.

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::status::Error;
use super::AppState;

/// The API group served.
pub const GROUP: &str = "external.metrics.k8s.io";
/// Its only version.
pub const VERSION: &str = "v1beta1";
/// `group/version`.
pub const GROUP_VERSION: &str = "external.metrics.k8s.io/v1beta1";

fn group_version() -> serde_json::Value {
    json!({ "groupVersion": GROUP_VERSION, "version": VERSION })
}

fn api_group() -> serde_json::Value {
    json!({
        "name": GROUP,
        "versions": [group_version()],
        "preferredVersion": group_version(),
    })
}

/// Whether the Accept header asks only for aggregated discovery, i.e. offers no
/// media range that plain JSON satisfies.
pub(crate) fn wants_only_aggregated(headers: &HeaderMap) -> bool {
    let mut any = false;
    for value in headers.get_all(header::ACCEPT) {
        let Ok(text) = value.to_str() else {
            continue;
        };
        for range in text.split(',') {
            let range = range.trim();
            if range.is_empty() {
                continue;
            }
            any = true;
            let is_aggregated = range
                .split(';')
                .skip(1)
                .any(|p| p.trim().eq_ignore_ascii_case("g=apidiscovery.k8s.io"));
            if !is_aggregated {
                return false;
            }
        }
    }
    any
}

pub(crate) fn json_response(body: &serde_json::Value) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => ([(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(e) => Error::Internal(format!("encoding discovery: {e}")).into_response(),
    }
}

pub(crate) fn not_acceptable() -> Error {
    Error::NotAcceptable(
        "only the legacy discovery format (application/json) is served; aggregated discovery (apidiscovery.k8s.io) is not".into(),
    )
}

/// `GET /apis`: an `APIGroupList` with our two groups (external and custom metrics).
pub async fn group_list(headers: HeaderMap) -> Response {
    if wants_only_aggregated(&headers) {
        return not_acceptable().into_response();
    }
    json_response(&json!({
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [api_group(), super::custom::api_group()],
    }))
}

/// `GET /apis/external.metrics.k8s.io`: the `APIGroup`.
pub async fn group(headers: HeaderMap) -> Response {
    if wants_only_aggregated(&headers) {
        return not_acceptable().into_response();
    }
    let mut body = api_group();
    if let Some(map) = body.as_object_mut() {
        map.insert("kind".into(), json!("APIGroup"));
        map.insert("apiVersion".into(), json!("v1"));
    }
    json_response(&body)
}

/// `GET /apis/external.metrics.k8s.io/v1beta1`: an `APIResourceList` with one
/// resource per external metric in the current snapshot. This is also the aggregator's
/// availability check, so it answers 2xx even before the first snapshot (with
/// no resources).
pub async fn resource_list(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if wants_only_aggregated(&headers) {
        return not_acceptable().into_response();
    }
    let snapshot = state.shared.load();
    // Custom metrics are listed by custom.metrics.k8s.io, not here.
    let resources: Vec<_> = snapshot
        .metrics
        .iter()
        .filter(|(_, entry)| entry.custom.is_none())
        .map(|(name, _)| {
            json!({
                "name": name,
                "singularName": "",
                "namespaced": true,
                "kind": "ExternalMetricValueList",
                "verbs": ["get"],
            })
        })
        .collect();
    json_response(&json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": GROUP_VERSION,
        "resources": resources,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, v.parse().unwrap());
        h
    }

    #[test]
    fn only_pure_aggregated_accept_is_refused() {
        assert!(wants_only_aggregated(&accept(
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
        )));
        assert!(wants_only_aggregated(&accept(
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
        )));
        assert!(!wants_only_aggregated(&accept(
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
        )));
        assert!(!wants_only_aggregated(&accept(
            "application/vnd.kubernetes.protobuf, */*"
        )));
        assert!(!wants_only_aggregated(&HeaderMap::new()));
    }
}
