//! In-memory tests of `custom.metrics.k8s.io`: every path in both versions, the
//! JSON compared field by field, and every error.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use prometheus_client::registry::Registry;
use serde_json::{json, Value};
use tower::ServiceExt;

use super::*;
use crate::api::auth::{
    Attributes, AuthMode, Authorizer, BoxFuture, Decision, PeerCert, Rule, StaticAuthorizer,
};
use crate::api::pods::{NoPods, Phase, PodLookup, StaticPod, StaticPods};
use crate::api::{router, AppState};
use crate::clock::SimClock;
use crate::custom::{known, Mapping, MetricType};
use crate::quantity;
use crate::series::Labels;
use crate::snapshot::{MetricEntry, SeriesDetail, SeriesEntry, Shared, Snapshot, Status};

const T0: i64 = 1_790_000_000_000; // 2026-09-21T14:13:20Z
const STAMP: &str = "2026-09-21T14:13:20Z";
const BASE: &str = "/apis/custom.metrics.k8s.io";

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn series(pairs: &[(&str, &str)], status: Status, value: f64) -> SeriesEntry {
    SeriesEntry {
        labels: labels(pairs),
        status,
        value,
        timestamp_ms: T0,
        window_s: 60,
        expires_ms: T0 + 300_000,
        detail: SeriesDetail {
            reason: (status == Status::Failed).then(|| "prometheus unreachable for 10m".into()),
            ..SeriesDetail::default()
        },
    }
}

fn mapping(metric_type: MetricType, pairs: &[(&str, &str, &str)]) -> Arc<Mapping> {
    let labels: BTreeMap<_, _> = pairs
        .iter()
        .map(|(label, group, resource)| (label.to_string(), known(group, resource).unwrap()))
        .collect();
    Arc::new(Mapping::try_new(metric_type, labels).unwrap())
}

fn entry(custom: Option<Arc<Mapping>>, series: Vec<SeriesEntry>) -> MetricEntry {
    MetricEntry {
        namespaces: None,
        series: series.into_iter().map(Arc::new).collect(),
        error: None,
        custom,
    }
}

fn snapshot() -> Snapshot {
    let mut metrics = BTreeMap::new();
    let pods = mapping(
        MetricType::Pods,
        &[
            ("namespace", "", "namespace"),
            ("deployment", "apps", "deployment"),
        ],
    );
    metrics.insert(
        "packets-per-second".to_string(),
        entry(
            Some(pods.clone()),
            vec![
                series(
                    &[("namespace", "conexus"), ("deployment", "conexus-server")],
                    Status::Ok,
                    4500.0,
                ),
                series(
                    &[("namespace", "other"), ("deployment", "conexus-server")],
                    Status::Ok,
                    99.0,
                ),
                series(
                    &[("namespace", "conexus"), ("deployment", "broken")],
                    Status::Failed,
                    10.0,
                ),
                series(
                    &[
                        ("namespace", "conexus"),
                        ("deployment", "twin"),
                        ("zone", "a"),
                    ],
                    Status::Ok,
                    1.0,
                ),
                series(
                    &[
                        ("namespace", "conexus"),
                        ("deployment", "twin"),
                        ("zone", "b"),
                    ],
                    Status::Ok,
                    2.0,
                ),
            ],
        ),
    );
    metrics.insert(
        "qdrant_search_latency".to_string(),
        entry(
            Some(mapping(
                MetricType::Object,
                &[
                    ("namespace", "", "namespace"),
                    ("statefulset", "apps", "statefulset"),
                ],
            )),
            vec![
                series(
                    &[("namespace", "conexus"), ("statefulset", "conexus-qdrant")],
                    Status::Stale,
                    0.085,
                ),
                series(
                    &[("namespace", "conexus"), ("statefulset", "cold")],
                    Status::Warming,
                    0.2,
                ),
                SeriesEntry {
                    // The engine last said `stale`, but the value outlived max_staleness.
                    expires_ms: T0 - 1,
                    ..series(
                        &[("namespace", "conexus"), ("statefulset", "expired")],
                        Status::Stale,
                        0.3,
                    )
                },
            ],
        ),
    );
    metrics.insert(
        "namespace_requests".to_string(),
        entry(
            Some(mapping(
                MetricType::Object,
                &[("namespace", "", "namespace")],
            )),
            vec![series(&[("namespace", "conexus")], Status::Ok, 120.0)],
        ),
    );
    metrics.insert(
        "node_packets".to_string(),
        entry(
            Some(mapping(MetricType::Object, &[("node", "", "node")])),
            vec![series(&[("node", "node-1")], Status::Ok, 3.25)],
        ),
    );
    let mut restricted = entry(
        Some(mapping(
            MetricType::Object,
            &[("namespace", "", "namespace")],
        )),
        vec![series(&[("namespace", "conexus")], Status::Ok, 1.0)],
    );
    restricted.namespaces = Some(vec!["shop".into()]);
    metrics.insert("restricted".to_string(), restricted);
    metrics.insert(
        "down".to_string(),
        MetricEntry {
            error: Some("prometheus: connection refused".into()),
            ..entry(
                Some(mapping(MetricType::Object, &[("node", "", "node")])),
                vec![],
            )
        },
    );
    metrics.insert(
        "queue_depth".to_string(),
        entry(None, vec![series(&[("queue", "orders")], Status::Ok, 12.0)]),
    );
    Snapshot {
        published_ms: T0,
        metrics,
        plan: None,
    }
}

fn conexus_pods() -> StaticPods {
    let app = labels(&[("app", "conexus-server"), ("pod-template-hash", "6b7c8d")]);
    let rs = Some(("ReplicaSet", "conexus-server-6b7c8d"));
    let mut pods = StaticPods::new();
    for name in [
        "conexus-server-6b7c8d-aaaaa",
        "conexus-server-6b7c8d-bbbbb",
        "conexus-server-6b7c8d-ccccc",
    ] {
        pods = pods.with_pod(StaticPod::new("conexus", name, app.clone(), rs));
    }
    pods.with_pod(
        StaticPod::new("conexus", "conexus-server-6b7c8d-ddddd", app.clone(), rs)
            .with_phase(Phase::Pending),
    )
    .with_pod(
        StaticPod::new("conexus", "conexus-server-6b7c8d-eeeee", app.clone(), rs)
            .with_phase(Phase::Failed),
    )
    .with_pod(StaticPod::new("conexus", "conexus-server-6b7c8d-fffff", app.clone(), rs).deleting())
    .with_pod(StaticPod::new(
        "conexus",
        "debug",
        labels(&[("app", "debug")]),
        None,
    ))
    .with_pod(StaticPod::new(
        "conexus",
        "twin-0",
        labels(&[("app", "twin"), ("pod-template-hash", "1")]),
        Some(("ReplicaSet", "twin-1")),
    ))
    .with_pod(StaticPod::new(
        "conexus",
        "broken-0",
        labels(&[("app", "broken"), ("pod-template-hash", "1")]),
        Some(("ReplicaSet", "broken-1")),
    ))
    .with_pod(StaticPod::new(
        "conexus",
        "lonely-0",
        labels(&[("app", "lonely"), ("pod-template-hash", "1")]),
        Some(("ReplicaSet", "lonely-1")),
    ))
    .with_pod(StaticPod::new(
        "conexus",
        "qdrant-0",
        labels(&[("app", "qdrant")]),
        Some(("StatefulSet", "conexus-qdrant")),
    ))
}

fn state_with(auth: AuthMode, pods: Arc<dyn PodLookup>, publish: bool) -> AppState {
    let shared = Shared::new();
    if publish {
        shared.publish(snapshot());
    }
    AppState::new(
        shared,
        auth,
        Arc::new(Registry::default()),
        Arc::new(SimClock::new(T0)),
    )
    .with_pods(pods)
}

fn app() -> axum::Router {
    router(state_with(AuthMode::None, conexus_pods().shared(), true))
}

struct Answer {
    code: StatusCode,
    body: Value,
    text: String,
}

async fn send(app: axum::Router, request: Request<Body>) -> Answer {
    let response = app.oneshot(request).await.unwrap();
    let code = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    Answer {
        code,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
    }
}

fn get_req(uri: &str) -> Request<Body> {
    Request::get(uri)
        .header(header::ACCEPT, "application/vnd.kubernetes.protobuf, */*")
        .body(Body::empty())
        .unwrap()
}

async fn fetch(uri: &str) -> Answer {
    send(app(), get_req(uri)).await
}

fn enc(s: &str) -> String {
    s.replace(' ', "%20")
        .replace('=', "%3D")
        .replace(',', "%2C")
        .replace('(', "%28")
        .replace(')', "%29")
        .replace('!', "%21")
}

fn assert_status(a: &Answer, code: u16, reason: &str) -> String {
    assert_eq!(a.code.as_u16(), code, "{}", a.text);
    assert_eq!(a.body["kind"], "Status", "{}", a.text);
    assert_eq!(a.body["reason"], reason, "{}", a.text);
    assert_eq!(a.body["code"], code);
    a.body["message"].as_str().unwrap().to_string()
}

fn assert_list(a: &Answer, version: &str) -> Vec<Value> {
    assert_eq!(a.code, StatusCode::OK, "{}", a.text);
    let b = a.body.as_object().unwrap();
    assert_eq!(b.len(), 4, "{}", a.text);
    assert_eq!(b["kind"], "MetricValueList");
    assert_eq!(b["apiVersion"], format!("custom.metrics.k8s.io/{version}"));
    assert_eq!(b["metadata"], json!({}));
    b["items"].as_array().unwrap().clone()
}

/// The item an HPA reads, in `version`'s shape, field by field.
fn expected(
    version: &str,
    described: Value,
    metric: &str,
    selector: Option<Value>,
    value: &str,
) -> Value {
    match version {
        "v1beta2" => {
            let mut id = json!({ "name": metric });
            if let Some(sel) = selector {
                id["selector"] = sel;
            }
            json!({
                "describedObject": described,
                "metric": id,
                "timestamp": STAMP,
                "windowSeconds": 60,
                "value": value,
            })
        }
        _ => json!({
            "describedObject": described,
            "metricName": metric,
            "timestamp": STAMP,
            "window": 60,
            "value": value,
            "selector": selector.unwrap_or(Value::Null),
        }),
    }
}

fn assert_item(got: &Value, want: &Value) {
    let (g, w) = (got.as_object().unwrap(), want.as_object().unwrap());
    let keys = |m: &serde_json::Map<String, Value>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(g), keys(w), "fields of {got}");
    for (k, v) in w {
        assert_eq!(&g[k], v, "field {k} of {got}");
    }
}

const VERSIONS: [&str; 2] = ["v1beta2", "v1beta1"];

// ---- discovery ----

#[tokio::test]
async fn group_prefers_v1beta2_and_serves_both() {
    let a = fetch(BASE).await;
    assert_eq!(a.code, StatusCode::OK);
    let b = &a.body;
    assert_eq!(b.as_object().unwrap().len(), 5, "{b}");
    assert_eq!(b["kind"], "APIGroup");
    assert_eq!(b["apiVersion"], "v1");
    assert_eq!(b["name"], "custom.metrics.k8s.io");
    assert_eq!(
        b["versions"],
        json!([
            {"groupVersion": "custom.metrics.k8s.io/v1beta2", "version": "v1beta2"},
            {"groupVersion": "custom.metrics.k8s.io/v1beta1", "version": "v1beta1"},
        ])
    );
    assert_eq!(
        b["preferredVersion"],
        json!({"groupVersion": "custom.metrics.k8s.io/v1beta2", "version": "v1beta2"})
    );
    let all = fetch("/apis").await;
    let names: Vec<&str> = all.body["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["external.metrics.k8s.io", "custom.metrics.k8s.io"]);
}

#[tokio::test]
async fn resource_lists_name_resource_slash_metric_in_both_versions() {
    for version in VERSIONS {
        let a = fetch(&format!("{BASE}/{version}")).await;
        assert_eq!(a.code, StatusCode::OK, "{}", a.text);
        let b = &a.body;
        assert_eq!(b["kind"], "APIResourceList");
        assert_eq!(b["apiVersion"], "v1");
        assert_eq!(
            b["groupVersion"],
            format!("custom.metrics.k8s.io/{version}")
        );
        let got: Vec<(String, bool)> = b["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                assert_eq!(r["kind"], "MetricValueList");
                assert_eq!(r["verbs"], json!(["get"]));
                assert_eq!(r["singularName"], "");
                (
                    r["name"].as_str().unwrap().to_string(),
                    r["namespaced"].as_bool().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("nodes/down".to_string(), false),
                ("namespaces/namespace_requests".to_string(), false),
                ("nodes/node_packets".to_string(), false),
                ("pods/packets-per-second".to_string(), true),
                ("statefulsets.apps/qdrant_search_latency".to_string(), true),
                ("namespaces/restricted".to_string(), false),
            ]
        );
    }
    let ext = fetch("/apis/external.metrics.k8s.io/v1beta1").await;
    let names: Vec<&str> = ext.body["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["queue_depth"], "custom metrics are not external");
    assert_status(&fetch(&format!("{BASE}/v1alpha1")).await, 404, "NotFound");
    let before = send(
        router(state_with(AuthMode::None, Arc::new(NoPods), false)),
        get_req(&format!("{BASE}/v1beta2")),
    )
    .await;
    assert_eq!(
        before.code,
        StatusCode::OK,
        "availability check before the first snapshot"
    );
}

/// The kube-aggregator's `/apis` request lists the same custom metrics as the
/// plain lists: each `<resource>/<metric>` as subresource `<metric>` of
/// `<resource>`, in both versions, with the resource's scope.
#[tokio::test]
async fn aggregated_discovery_lists_the_plain_names_as_subresources() {
    let request = Request::get("/apis")
        .header(
            header::ACCEPT,
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList",
        )
        .body(Body::empty())
        .unwrap();
    let a = send(app(), request).await;
    assert_eq!(a.code, StatusCode::OK, "{}", a.text);
    let group = a.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["metadata"]["name"] == "custom.metrics.k8s.io")
        .unwrap();
    let versions = group["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 2);
    for (v, version) in versions.iter().zip(VERSIONS) {
        assert_eq!(v["version"], version);
        assert_eq!(v["freshness"], "Current");
        let mut names = Vec::new();
        for r in v["resources"].as_array().unwrap() {
            assert_eq!(r["verbs"], json!([]), "no operations on the parent");
            assert_eq!(
                r["responseKind"],
                json!({"group": "", "version": "", "kind": ""})
            );
            assert_eq!(r["singularResource"], "");
            let namespaced = match r["scope"].as_str().unwrap() {
                "Namespaced" => true,
                "Cluster" => false,
                other => panic!("scope {other}"),
            };
            for sub in r["subresources"].as_array().unwrap() {
                assert_eq!(sub["verbs"], json!(["get"]));
                assert_eq!(
                    sub["responseKind"],
                    json!({"group": "custom.metrics.k8s.io", "version": version, "kind": "MetricValueList"})
                );
                names.push((
                    format!(
                        "{}/{}",
                        r["resource"].as_str().unwrap(),
                        sub["subresource"].as_str().unwrap()
                    ),
                    namespaced,
                ));
            }
        }
        names.sort();
        let plain = fetch(&format!("{BASE}/{version}")).await;
        let mut want: Vec<(String, bool)> = plain.body["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["name"].as_str().unwrap().to_string(),
                    r["namespaced"].as_bool().unwrap(),
                )
            })
            .collect();
        want.sort();
        assert_eq!(names, want, "{version}");
    }
}

// ---- values ----

#[tokio::test]
async fn pods_metric_splits_the_workload_forecast_across_current_pods() {
    for version in VERSIONS {
        let a = fetch(&format!(
            "{BASE}/{version}/namespaces/conexus/pods/*/packets-per-second?labelSelector={}",
            enc("app=conexus-server")
        ))
        .await;
        let items = assert_list(&a, version);
        // Failed, Succeeded and deleted pods are left out; the pending pod is
        // answered but does not share: 4500 / 3 running pods.
        let names = ["aaaaa", "bbbbb", "ccccc", "ddddd"];
        assert_eq!(items.len(), names.len(), "{}", a.text);
        for (item, suffix) in items.iter().zip(names) {
            let described = json!({
                "kind": "Pod",
                "namespace": "conexus",
                "name": format!("conexus-server-6b7c8d-{suffix}"),
                "apiVersion": "v1",
            });
            assert_item(
                item,
                &expected(version, described, "packets-per-second", None, "1500"),
            );
        }
        // What the HPA computes: the pending pod set aside, the average of the
        // others times their number is the forecast total.
        let running: Vec<f64> = items[..3]
            .iter()
            .map(|i| quantity::parse_f64(i["value"].as_str().unwrap()).unwrap())
            .collect();
        let avg = running.iter().sum::<f64>() / running.len() as f64;
        assert_eq!(
            (avg * running.len() as f64 / 1000.0).ceil(),
            (4500.0_f64 / 1000.0).ceil()
        );
    }
}

#[tokio::test]
async fn pods_metric_for_one_pod_and_with_a_metric_selector() {
    for version in VERSIONS {
        let a = fetch(&format!(
            "{BASE}/{version}/namespaces/conexus/pods/conexus-server-6b7c8d-bbbbb/packets-per-second?labelSelector={}",
            enc("app=conexus-server")
        ))
        .await;
        let items = assert_list(&a, version);
        assert_eq!(items.len(), 1);
        assert_eq!(
            items[0]["describedObject"]["name"],
            "conexus-server-6b7c8d-bbbbb"
        );
        assert_eq!(items[0]["value"], "1500");

        // Two series for one workload: ambiguous until the metric selector picks one.
        let url = format!(
            "{BASE}/{version}/namespaces/conexus/pods/*/packets-per-second?labelSelector={}",
            enc("app=twin")
        );
        let msg = assert_status(&fetch(&url).await, 400, "BadRequest");
        assert!(
            msg.contains("2 series") && msg.contains("metric.selector"),
            "{msg}"
        );
        let a = fetch(&format!(
            "{url}&metricLabelSelector={}",
            enc("zone in (b),deployment!=x")
        ))
        .await;
        let items = assert_list(&a, version);
        let selector = json!({
            "matchExpressions": [
                {"key": "zone", "operator": "In", "values": ["b"]},
                {"key": "deployment", "operator": "NotIn", "values": ["x"]},
            ]
        });
        let described =
            json!({"kind": "Pod", "namespace": "conexus", "name": "twin-0", "apiVersion": "v1"});
        assert_item(
            &items[0],
            &expected(
                version,
                described,
                "packets-per-second",
                Some(selector),
                "2",
            ),
        );
    }
}

#[tokio::test]
async fn namespaced_object_metric_in_both_versions() {
    for version in VERSIONS {
        let a = fetch(&format!(
            "{BASE}/{version}/namespaces/conexus/statefulsets.apps/conexus-qdrant/qdrant_search_latency"
        ))
        .await;
        let items = assert_list(&a, version);
        assert_eq!(items.len(), 1, "exactly one item for an object");
        let described = json!({
            "kind": "StatefulSet",
            "namespace": "conexus",
            "name": "conexus-qdrant",
            "apiVersion": "apps/v1",
        });
        assert_item(
            &items[0],
            &expected(version, described, "qdrant_search_latency", None, "85m"),
        );
        let a = fetch(&format!(
            "{BASE}/{version}/namespaces/conexus/statefulsets.apps/conexus-qdrant/qdrant_search_latency?metricLabelSelector={}",
            enc("statefulset=conexus-qdrant")
        ))
        .await;
        let items = assert_list(&a, version);
        let sel = json!({"matchLabels": {"statefulset": "conexus-qdrant"}});
        let described = items[0]["describedObject"].clone();
        assert_item(
            &items[0],
            &expected(
                version,
                described,
                "qdrant_search_latency",
                Some(sel),
                "85m",
            ),
        );
    }
}

#[tokio::test]
async fn namespace_metric_by_both_paths_and_root_scoped_objects() {
    for version in VERSIONS {
        for path in [
            format!("{BASE}/{version}/namespaces/conexus/metrics/namespace_requests"),
            format!("{BASE}/{version}/namespaces/conexus/namespace_requests"),
        ] {
            let items = assert_list(&fetch(&path).await, version);
            assert_eq!(items.len(), 1);
            let described = json!({"kind": "Namespace", "name": "conexus", "apiVersion": "v1"});
            assert_item(
                &items[0],
                &expected(version, described, "namespace_requests", None, "120"),
            );
        }
        let items = assert_list(
            &fetch(&format!("{BASE}/{version}/nodes/node-1/node_packets")).await,
            version,
        );
        let described = json!({"kind": "Node", "name": "node-1", "apiVersion": "v1"});
        assert_item(
            &items[0],
            &expected(version, described, "node_packets", None, "3250m"),
        );
    }
}

// ---- errors ----

#[tokio::test]
async fn unknown_metrics_resources_and_objects_are_404() {
    let v = format!("{BASE}/v1beta2");
    for (url, needle) in [
        (format!("{v}/namespaces/conexus/statefulsets.apps/x/nope"), "not served"),
        (format!("{v}/namespaces/conexus/queue_depth"), "not served"),
        (format!("{v}/namespaces/conexus/deployments.apps/conexus-qdrant/qdrant_search_latency"), "does not describe deployments.apps"),
        (format!("{v}/namespaces/conexus/statefulsets/conexus-qdrant/qdrant_search_latency"), "does not describe statefulsets"),
        (format!("{v}/namespaces/conexus/statefulsets.apps/ghost/qdrant_search_latency"), "no series for statefulsets.apps conexus/ghost"),
        (format!("{v}/namespaces/elsewhere/statefulsets.apps/conexus-qdrant/qdrant_search_latency"), "no series"),
        (format!("{v}/statefulsets.apps/conexus-qdrant/qdrant_search_latency"), "namespaced"),
        (format!("{v}/namespaces/conexus/nodes/node-1/node_packets"), "cluster-scoped"),
        (format!("{v}/namespaces/ghost/metrics/namespace_requests"), "no series"),
        (format!("{v}/nodes/node-9/node_packets"), "no series"),
        (format!("{v}/namespaces/conexus/deployments.apps/conexus-server/packets-per-second"), "Pods metric"),
        (format!("{v}/namespaces/conexus/pods/*/packets-per-second?labelSelector=app%3Dnobody"), "no current pods"),
        (format!("{v}/namespaces/conexus/pods/*/packets-per-second?labelSelector=app%3Dqdrant"), "belong to no Deployment"),
        (format!("{v}/namespaces/conexus/pods/*/packets-per-second?labelSelector=app%3Dlonely"), "no series for deployments.apps conexus/lonely"),
        (format!("{v}/namespaces/conexus/pods/nobody/packets-per-second?labelSelector=app%3Dconexus-server"), "not a current pod"),
        (format!("{v}/namespaces/conexus/pods/*"), "could not find"),
        (format!("{BASE}/v1alpha1/namespaces/conexus/metrics/namespace_requests"), "could not find"),
        (format!("{v}/namespaces/conexus/statefulsets.apps/conexus-qdrant/qdrant_search_latency/extra"), "could not find"),
    ] {
        let msg = assert_status(&fetch(&url).await, 404, "NotFound");
        assert!(msg.contains(needle), "{url}: {msg}");
    }
    // And the other way round: a custom metric is not an external one.
    let msg = assert_status(
        &fetch("/apis/external.metrics.k8s.io/v1beta1/namespaces/conexus/qdrant_search_latency")
            .await,
        404,
        "NotFound",
    );
    assert!(msg.contains("custom.metrics.k8s.io"), "{msg}");
}

#[tokio::test]
async fn bad_selectors_are_400() {
    let v = format!("{BASE}/v1beta1");
    for (url, needle) in [
        (format!("{v}/namespaces/conexus/pods/*/packets-per-second?labelSelector={}", enc("app in (")), "invalid labelSelector"),
        (format!("{v}/namespaces/conexus/pods/*/packets-per-second?labelSelector={}", enc("=x")), "invalid labelSelector"),
        (format!("{v}/namespaces/conexus/statefulsets.apps/conexus-qdrant/qdrant_search_latency?metricLabelSelector={}", enc("zone notin ()")), "invalid metricLabelSelector"),
        (format!("{v}/namespaces/conexus/statefulsets.apps/*/qdrant_search_latency"), "name the object"),
        (format!("{v}/namespaces/Bad_NS/metrics/namespace_requests"), "invalid namespace"),
        (format!("{v}/namespaces/Bad_NS/namespace_requests"), "invalid namespace"),
        (format!("{v}/namespaces/a%2Fb/statefulsets.apps/x/qdrant_search_latency"), "invalid namespace"),
        (format!("{v}/namespaces/conexus/statefulsets.apps/bad%2Fname/qdrant_search_latency"), "invalid object name"),
        (format!("{v}/nodes/%2E%2E/node_packets"), "invalid object name"),
    ] {
        let msg = assert_status(&fetch(&url).await, 400, "BadRequest");
        assert!(msg.contains(needle), "{url}: {msg}");
    }
}

#[tokio::test]
async fn failed_series_missing_lookup_and_no_snapshot_are_503_and_allow_list_403() {
    let msg = assert_status(
        &fetch(&format!(
            "{BASE}/v1beta2/namespaces/conexus/pods/*/packets-per-second?labelSelector=app%3Dbroken"
        ))
        .await,
        503,
        "ServiceUnavailable",
    );
    assert!(
        msg.contains("failed") && msg.contains("prometheus unreachable"),
        "{msg}"
    );
    let no_cluster = router(state_with(AuthMode::None, Arc::new(NoPods), true));
    let a = send(
        no_cluster.clone(),
        get_req(&format!(
            "{BASE}/v1beta2/namespaces/conexus/pods/*/packets-per-second?labelSelector=app%3Dx"
        )),
    )
    .await;
    let msg = assert_status(&a, 503, "ServiceUnavailable");
    assert!(msg.contains("no Kubernetes API"), "{msg}");
    // Object metrics need no pods.
    let a = send(
        no_cluster,
        get_req(&format!("{BASE}/v1beta2/nodes/node-1/node_packets")),
    )
    .await;
    assert_eq!(a.code, StatusCode::OK);
    let msg = assert_status(
        &fetch(&format!(
            "{BASE}/v1beta1/namespaces/conexus/statefulsets.apps/expired/qdrant_search_latency"
        ))
        .await,
        503,
        "ServiceUnavailable",
    );
    assert!(msg.contains("older than the allowed staleness"), "{msg}");
    let msg = assert_status(
        &fetch(&format!("{BASE}/v1beta2/nodes/node-1/down")).await,
        503,
        "ServiceUnavailable",
    );
    assert!(
        msg.contains("source failing") && msg.contains("connection refused"),
        "{msg}"
    );
    let cold = router(state_with(AuthMode::None, conexus_pods().shared(), false));
    let a = send(
        cold,
        get_req(&format!("{BASE}/v1beta2/nodes/node-1/node_packets")),
    )
    .await;
    assert_status(&a, 503, "ServiceUnavailable");
    let msg = assert_status(
        &fetch(&format!(
            "{BASE}/v1beta2/namespaces/conexus/metrics/restricted"
        ))
        .await,
        403,
        "Forbidden",
    );
    assert!(msg.contains("allow-list"), "{msg}");
}

// ---- authorization ----

/// Remembers every question and allows them all.
#[derive(Default)]
struct Recorder(Mutex<Vec<Attributes>>);

impl Authorizer for Recorder {
    fn authorize<'a>(
        &'a self,
        attributes: &'a Attributes,
    ) -> BoxFuture<'a, crate::api::auth::Result<Decision>> {
        self.0.lock().unwrap().push(attributes.clone());
        Box::pin(async { Ok(Decision::Allow) })
    }
}

fn from_front_proxy(uri: &str) -> Request<Body> {
    let mut request = Request::get(uri)
        .header(
            "X-Remote-User",
            "system:serviceaccount:kube-system:horizontal-pod-autoscaler",
        )
        .body(Body::empty())
        .unwrap();
    request.extensions_mut().insert(PeerCert {
        common_name: Some("front-proxy-client".into()),
    });
    request
}

fn delegated(authorizer: Arc<dyn Authorizer>) -> AuthMode {
    AuthMode::Delegated {
        front_proxy: Some(crate::api::auth::FrontProxy::new("unused in memory")),
        tokens: None,
        authorizer,
    }
}

#[tokio::test]
async fn access_reviews_ask_for_resource_slash_metric_in_the_custom_group() {
    let recorder = Arc::new(Recorder::default());
    let app = router(state_with(
        delegated(recorder.clone()),
        conexus_pods().shared(),
        true,
    ));
    let cases = [
        ("v1beta2/namespaces/conexus/pods/*/packets-per-second?labelSelector=app%3Dconexus-server", "v1beta2", "pods", "packets-per-second", "*", "conexus"),
        ("v1beta1/namespaces/conexus/statefulsets.apps/conexus-qdrant/qdrant_search_latency", "v1beta1", "statefulsets.apps", "qdrant_search_latency", "conexus-qdrant", "conexus"),
        ("v1beta2/namespaces/conexus/metrics/namespace_requests", "v1beta2", "namespaces", "namespace_requests", "conexus", "conexus"),
        ("v1beta2/nodes/node-1/node_packets", "v1beta2", "nodes", "node_packets", "node-1", ""),
    ];
    for (path, ..) in &cases {
        let a = send(app.clone(), from_front_proxy(&format!("{BASE}/{path}"))).await;
        assert_eq!(a.code, StatusCode::OK, "{path}: {}", a.text);
    }
    let asked = recorder.0.lock().unwrap().clone();
    assert_eq!(asked.len(), cases.len());
    for (attributes, (path, version, resource, metric, name, namespace)) in asked.iter().zip(cases)
    {
        assert_eq!(attributes.verb, "get");
        assert_eq!(
            attributes.target,
            Target::Resource {
                group: "custom.metrics.k8s.io".into(),
                version: version.into(),
                resource: resource.into(),
                subresource: Some(metric.into()),
                name: Some(name.into()),
                namespace: namespace.into(),
            },
            "{path}"
        );
    }

    // RBAC reads resource/subresource as `<resource>/<metric>`; the cache keys on the group.
    let rbac = StaticAuthorizer::new().with_rule(Rule {
        user: None,
        resource: Some("pods/packets-per-second".into()),
        namespace: Some("conexus".into()),
    });
    let app = router(state_with(
        delegated(Arc::new(rbac)),
        conexus_pods().shared(),
        true,
    ));
    let ok = send(
        app.clone(),
        from_front_proxy(&format!("{BASE}/{}", cases[0].0)),
    )
    .await;
    assert_eq!(ok.code, StatusCode::OK, "{}", ok.text);
    let denied = send(app, from_front_proxy(&format!("{BASE}/{}", cases[1].0))).await;
    let msg = assert_status(&denied, 403, "Forbidden");
    assert!(
        msg.contains("\"statefulsets.apps/qdrant_search_latency\"")
            && msg.contains("custom.metrics.k8s.io"),
        "{msg}"
    );
}

#[test]
fn paths_parse_and_decode() {
    let p = parse_path("/apis/custom.metrics.k8s.io/v1beta2/namespaces/a/pods/%2A/m%3Ax").unwrap();
    assert_eq!((p.name.as_str(), p.metric.as_str()), ("*", "m:x"));
    assert_eq!(p.version, Version::V1beta2);
    for bad in [
        "/apis/custom.metrics.k8s.io",
        "/apis/custom.metrics.k8s.io/v1beta2",
        "/apis/custom.metrics.k8s.io/v1beta2/",
        "/apis/custom.metrics.k8s.io/v1beta2/namespaces//pods/*/m",
        "/apis/custom.metrics.k8s.io/v1/nodes/n/m",
        "/apis/custom.metrics.k8s.io/v1beta1/a/b",
    ] {
        assert_eq!(parse_path(bad), None, "{bad}");
    }
}

#[test]
fn share_divides_among_pods_the_hpa_averages() {
    let pod = |pending| Pod {
        name: "p".into(),
        pending,
        owners: vec![],
    };
    assert_eq!(share(900.0, &[pod(false), pod(false), pod(true)]), 450.0);
    assert_eq!(share(900.0, &[pod(true), pod(true)]), 450.0);
    assert_eq!(share(900.0, &[]), 900.0);
}

/// The state of [`app`] with `metric` replaced by `entry`, its clock at `now_ms`.
fn state_at(metric: &str, entry: MetricEntry, now_ms: i64) -> AppState {
    let shared = Shared::new();
    let mut snap = snapshot();
    snap.metrics.insert(metric.to_string(), entry);
    shared.publish(snap);
    AppState::new(
        shared,
        AuthMode::None,
        Arc::new(Registry::default()),
        Arc::new(SimClock::new(now_ms)),
    )
    .with_pods(conexus_pods().shared())
}

#[tokio::test]
async fn expired_values_and_a_failing_source_are_503_for_objects_and_pods() {
    let object = snapshot().metrics["qdrant_search_latency"].clone();
    let url = format!(
        "{BASE}/v1beta2/namespaces/conexus/statefulsets.apps/conexus-qdrant/qdrant_search_latency"
    );
    let mut expiring = object.clone();
    for s in &mut expiring.series {
        Arc::make_mut(s).expires_ms = T0 + 1_000;
    }
    let at = |now| router(state_at("qdrant_search_latency", expiring.clone(), now));
    assert_eq!(
        send(at(T0 + 1_000), get_req(&url)).await.code,
        StatusCode::OK
    );
    let msg = assert_status(
        &send(at(T0 + 1_001), get_req(&url)).await,
        503,
        "ServiceUnavailable",
    );
    assert!(msg.contains("older than the allowed staleness"), "{msg}");
    // The source fails before the object has a series: 503, not 404.
    let failing = MetricEntry {
        series: vec![],
        error: Some("connection refused".into()),
        ..object
    };
    let app = router(state_at("qdrant_search_latency", failing, T0));
    let msg = assert_status(&send(app, get_req(&url)).await, 503, "ServiceUnavailable");
    assert!(
        msg.contains("source failing") && msg.contains("connection refused"),
        "{msg}"
    );
    // Pods metrics too.
    let mut pods = snapshot().metrics["packets-per-second"].clone();
    for s in &mut pods.series {
        Arc::make_mut(s).expires_ms = T0;
    }
    let url = format!(
        "{BASE}/v1beta2/namespaces/conexus/pods/*/packets-per-second?labelSelector={}",
        enc("app=conexus-server")
    );
    let ok = send(
        router(state_at("packets-per-second", pods.clone(), T0)),
        get_req(&url),
    )
    .await;
    assert_eq!(ok.code, StatusCode::OK, "{}", ok.text);
    let late = send(
        router(state_at("packets-per-second", pods, T0 + 1)),
        get_req(&url),
    )
    .await;
    assert_status(&late, 503, "ServiceUnavailable");
}
