//! In-memory tests of every endpoint and error, through `router(..).oneshot`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use serde_json::{json, Value};
use tower::ServiceExt;

use super::auth::{
    Attributes, AuthMode, Authorizer, BoxFuture, Decision, FrontProxy, PeerCert,
    Result as AuthResult, Rule, StaticAuthorizer, StaticTokens, Target, UserInfo,
};
use super::{plain_router, router, AppState};
use crate::clock::SimClock;
use crate::series::Labels;
use crate::snapshot::{MetricEntry, SeriesDetail, SeriesEntry, Shared, Snapshot, Status};

const T0: i64 = 1_790_000_000_000; // 2026-09-21T14:13:20Z
const HPA_ACCEPT: &str = "application/vnd.kubernetes.protobuf, */*";
const VALUES: &str = "/apis/external.metrics.k8s.io/v1beta1/namespaces";

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
        expires_ms: i64::MAX,
        detail: SeriesDetail {
            model: "holt-winters".into(),
            last_fit_ms: Some(T0 - 600_000),
            backtest_mase: Some(0.42),
            latest: Some(value * 0.9),
            forecast_mean: vec![1.0, 2.0],
            forecast_quantile: vec![1.5, 2.5],
            forecast_lower: vec![0.5, 1.0],
            forecast_upper: vec![1.5, 2.5],
            reason: (status == Status::Failed).then(|| "prometheus unreachable for 10m".into()),
            why: None,
            predicted: Some(value),
            shadow: false,
        },
    }
}

fn snapshot() -> Snapshot {
    let mut metrics = BTreeMap::new();
    metrics.insert(
        "queue_depth".to_string(),
        MetricEntry {
            namespaces: None,
            custom: None,
            series: vec![
                series(&[("queue", "orders")], Status::Ok, 12.0).into(),
                series(&[("queue", "payments")], Status::Stale, 0.85).into(),
                series(&[("queue", "audit")], Status::Warming, 3.5).into(),
                series(&[("queue", "legacy")], Status::Failed, 7.0).into(),
            ],
            error: None,
        },
    );
    metrics.insert(
        "cpu".to_string(),
        MetricEntry {
            namespaces: Some(vec!["shop".into()]),
            custom: None,
            series: vec![series(&[], Status::Ok, 0.5).into()],
            error: None,
        },
    );
    metrics.insert(
        "nothing".to_string(),
        MetricEntry {
            namespaces: None,
            custom: None,
            series: vec![],
            error: None,
        },
    );
    Snapshot {
        published_ms: T0,
        metrics,
        plan: None,
    }
}

fn engine_registry() -> Arc<Registry> {
    let mut registry = Registry::default();
    let counter = Counter::<u64>::default();
    counter.inc();
    registry.sub_registry_with_prefix("prescale").register(
        "source_errors",
        "Engine-side test counter.",
        counter,
    );
    Arc::new(registry)
}

fn state_with(auth: AuthMode, publish: bool) -> AppState {
    let shared = Shared::new();
    if publish {
        shared.publish(snapshot());
    }
    AppState::new(shared, auth, engine_registry(), Arc::new(SimClock::new(T0)))
}

fn state() -> AppState {
    state_with(AuthMode::None, true)
}

struct Answer {
    code: StatusCode,
    content_type: String,
    etag: Option<String>,
    body: Value,
    text: String,
}

async fn send(app: axum::Router, request: Request<Body>) -> Answer {
    let response = app.oneshot(request).await.unwrap();
    let code = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let etag = response
        .headers()
        .get(header::ETAG)
        .map(|v| v.to_str().unwrap().to_string());
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Answer {
        code,
        content_type,
        etag,
        body,
        text,
    }
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri)
        .header(header::ACCEPT, HPA_ACCEPT)
        .body(Body::empty())
        .unwrap()
}

/// Asserts `answer` is a Kubernetes Status with `code` and `reason`, and returns its message.
fn assert_status(answer: &Answer, code: u16, reason: &str) -> String {
    assert_eq!(answer.code.as_u16(), code, "{}", answer.text);
    assert_eq!(answer.content_type, "application/json");
    let b = &answer.body;
    assert_eq!(b["kind"], "Status");
    assert_eq!(b["apiVersion"], "v1");
    assert_eq!(b["metadata"], json!({}));
    assert_eq!(b["status"], "Failure");
    assert_eq!(b["reason"], reason);
    assert_eq!(b["code"], code);
    b["message"].as_str().unwrap().to_string()
}

fn value_url(ns: &str, metric: &str, selector: Option<&str>) -> String {
    match selector {
        Some(s) => format!(
            "{VALUES}/{ns}/{metric}?labelSelector={}",
            s.replace(' ', "%20")
                .replace('=', "%3D")
                .replace(',', "%2C")
                .replace('(', "%28")
                .replace(')', "%29")
                .replace('!', "%21")
        ),
        None => format!("{VALUES}/{ns}/{metric}"),
    }
}

// ---- discovery ----

#[tokio::test]
async fn api_group_list_shape() {
    let a = send(router(state()), get("/apis")).await;
    assert_eq!(a.code, StatusCode::OK);
    assert_eq!(a.content_type, "application/json");
    let b = &a.body;
    assert_eq!(b.as_object().unwrap().len(), 3, "{b}");
    assert_eq!(b["kind"], "APIGroupList");
    assert_eq!(b["apiVersion"], "v1");
    let groups = b["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2);
    assert_eq!(groups[1]["name"], "custom.metrics.k8s.io");
    assert_eq!(groups[1]["preferredVersion"]["version"], "v1beta2");
    let g = &groups[0];
    assert_eq!(g["name"], "external.metrics.k8s.io");
    assert_eq!(
        g["versions"],
        json!([{"groupVersion": "external.metrics.k8s.io/v1beta1", "version": "v1beta1"}])
    );
    assert_eq!(
        g["preferredVersion"],
        json!({"groupVersion": "external.metrics.k8s.io/v1beta1", "version": "v1beta1"})
    );
}

#[tokio::test]
async fn api_group_shape() {
    let a = send(router(state()), get("/apis/external.metrics.k8s.io")).await;
    assert_eq!(a.code, StatusCode::OK);
    let b = &a.body;
    assert_eq!(b.as_object().unwrap().len(), 5, "{b}");
    assert_eq!(b["kind"], "APIGroup");
    assert_eq!(b["apiVersion"], "v1");
    assert_eq!(b["name"], "external.metrics.k8s.io");
    assert_eq!(
        b["versions"],
        json!([{"groupVersion": "external.metrics.k8s.io/v1beta1", "version": "v1beta1"}])
    );
    assert_eq!(b["preferredVersion"]["version"], "v1beta1");
    assert_eq!(
        b["preferredVersion"]["groupVersion"],
        "external.metrics.k8s.io/v1beta1"
    );
}

#[tokio::test]
async fn api_resource_list_has_one_resource_per_metric() {
    let a = send(
        router(state()),
        get("/apis/external.metrics.k8s.io/v1beta1"),
    )
    .await;
    assert_eq!(a.code, StatusCode::OK);
    let b = &a.body;
    assert_eq!(b["kind"], "APIResourceList");
    assert_eq!(b["apiVersion"], "v1");
    assert_eq!(b["groupVersion"], "external.metrics.k8s.io/v1beta1");
    let resources = b["resources"].as_array().unwrap();
    let names: Vec<_> = resources
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["cpu", "nothing", "queue_depth"]);
    for r in resources {
        assert_eq!(r["namespaced"], true);
        assert_eq!(r["kind"], "ExternalMetricValueList");
        assert_eq!(r["verbs"], json!(["get"]));
        assert_eq!(r["singularName"], "");
    }
}

#[tokio::test]
async fn resource_list_answers_2xx_before_the_first_snapshot() {
    // The aggregator's availability check must pass while the engine warms up.
    let a = send(
        router(state_with(AuthMode::None, false)),
        get("/apis/external.metrics.k8s.io/v1beta1"),
    )
    .await;
    assert_eq!(a.code, StatusCode::OK);
    assert_eq!(a.body["resources"], json!([]));
}

#[tokio::test]
async fn discovery_is_aggregated_only_at_apis_and_plain_or_406_elsewhere() {
    let with_accept = |path: &str, accept: &str| {
        Request::get(path)
            .header(header::ACCEPT, accept)
            .body(Body::empty())
            .unwrap()
    };
    for v in ["v2", "v2beta1"] {
        let only = format!("application/json;g=apidiscovery.k8s.io;v={v};as=APIGroupDiscoveryList");
        let a = send(router(state()), with_accept("/apis", &only)).await;
        assert_eq!(a.code, StatusCode::OK, "{}", a.text);
        assert_eq!(a.content_type, only);
        assert_eq!(a.body["apiVersion"], format!("apidiscovery.k8s.io/{v}"));
        for path in [
            "/apis/external.metrics.k8s.io",
            "/apis/external.metrics.k8s.io/v1beta1",
            "/apis/custom.metrics.k8s.io",
            "/apis/custom.metrics.k8s.io/v1beta2",
            "/apis/custom.metrics.k8s.io/v1beta1",
        ] {
            let a = send(router(state()), with_accept(path, &only)).await;
            let msg = assert_status(&a, 406, "NotAcceptable");
            assert!(msg.contains("application/json"), "{msg}");
            // What client-go sends: aggregated first, plain JSON as the fallback.
            let a = send(
                router(state()),
                with_accept(path, &format!("{only},application/json")),
            )
            .await;
            assert_eq!(a.code, StatusCode::OK, "{path}: {}", a.text);
            assert_eq!(a.content_type, "application/json");
            assert!(a.body["kind"] == "APIGroup" || a.body["kind"] == "APIResourceList");
        }
    }
    let a = send(router(state()), with_accept("/apis", "application/yaml")).await;
    assert_status(&a, 406, "NotAcceptable");
    let a = send(
        router(state()),
        with_accept("/apis", "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList;q=0.5, application/json"),
    )
    .await;
    assert_eq!(a.body["kind"], "APIGroupList", "quality decides");
}

// ---- values ----

#[tokio::test]
async fn value_list_shape_for_the_hpa() {
    let a = send(
        router(state()),
        get(&value_url("shop", "queue_depth", Some("queue=orders"))),
    )
    .await;
    assert_eq!(a.code, StatusCode::OK, "{}", a.text);
    assert_eq!(a.content_type, "application/json");
    let b = &a.body;
    assert_eq!(b.as_object().unwrap().len(), 4);
    assert_eq!(b["kind"], "ExternalMetricValueList");
    assert_eq!(b["apiVersion"], "external.metrics.k8s.io/v1beta1");
    assert_eq!(b["metadata"], json!({}));
    let items = b["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    let item = &items[0];
    assert_eq!(item.as_object().unwrap().len(), 5);
    assert_eq!(item["metricName"], "queue_depth");
    assert_eq!(item["metricLabels"], json!({"queue": "orders"}));
    assert_eq!(item["timestamp"], "2026-09-21T14:13:20Z");
    assert_eq!(item["window"], 60);
    assert_eq!(item["value"], "12");
}

#[tokio::test]
async fn selectors_filter_and_stale_and_warming_serve_values() {
    let a = send(
        router(state()),
        get(&value_url(
            "shop",
            "queue_depth",
            Some("queue in (payments, audit)"),
        )),
    )
    .await;
    assert_eq!(a.code, StatusCode::OK, "{}", a.text);
    let items = a.body["items"].as_array().unwrap();
    let got: Vec<_> = items
        .iter()
        .map(|i| {
            (
                i["metricLabels"]["queue"].as_str().unwrap(),
                i["value"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, vec![("payments", "850m"), ("audit", "3500m")]);

    let a = send(
        router(state()),
        get(&value_url(
            "shop",
            "queue_depth",
            Some("queue!=legacy,queue notin (audit)"),
        )),
    )
    .await;
    assert_eq!(a.body["items"].as_array().unwrap().len(), 2, "{}", a.text);
}

#[tokio::test]
async fn metric_labels_are_present_even_when_empty() {
    let a = send(router(state()), get(&value_url("shop", "cpu", None))).await;
    assert_eq!(a.code, StatusCode::OK, "{}", a.text);
    assert_eq!(a.body["items"][0]["metricLabels"], json!({}));
    assert_eq!(a.body["items"][0]["value"], "500m");
}

#[tokio::test]
async fn unknown_metric_is_404() {
    let a = send(router(state()), get(&value_url("shop", "nope", None))).await;
    let msg = assert_status(&a, 404, "NotFound");
    assert!(msg.contains("\"nope\""), "{msg}");
}

#[tokio::test]
async fn namespace_outside_the_allow_list_is_403() {
    let a = send(router(state()), get(&value_url("other", "cpu", None))).await;
    let msg = assert_status(&a, 403, "Forbidden");
    assert!(
        msg.contains("\"other\"") && msg.contains("allow-list"),
        "{msg}"
    );
}

#[tokio::test]
async fn bad_selector_is_400_with_the_reason() {
    let a = send(
        router(state()),
        get(&value_url("shop", "queue_depth", Some("queue in (a"))),
    )
    .await;
    let msg = assert_status(&a, 400, "BadRequest");
    assert!(
        msg.contains("labelSelector") && msg.contains("expected"),
        "{msg}"
    );
}

#[tokio::test]
async fn no_matching_series_is_404_with_why_not_an_empty_list() {
    let a = send(
        router(state()),
        get(&value_url("shop", "queue_depth", Some("queue=nonexistent"))),
    )
    .await;
    let msg = assert_status(&a, 404, "NotFound");
    assert!(
        msg.contains("matches") && msg.contains("empty list"),
        "{msg}"
    );

    let a = send(router(state()), get(&value_url("shop", "nothing", None))).await;
    let msg = assert_status(&a, 404, "NotFound");
    assert!(msg.contains("no series"), "{msg}");
}

#[tokio::test]
async fn a_failed_selected_series_is_503_with_the_reason() {
    let a = send(
        router(state()),
        get(&value_url("shop", "queue_depth", None)),
    )
    .await;
    let msg = assert_status(&a, 503, "ServiceUnavailable");
    assert!(msg.contains("prometheus unreachable for 10m"), "{msg}");
    assert!(msg.contains("legacy"), "{msg}");
    // The failed series does not poison selections that exclude it.
    let a = send(
        router(state()),
        get(&value_url("shop", "queue_depth", Some("queue!=legacy"))),
    )
    .await;
    assert_eq!(a.code, StatusCode::OK);
}

/// A state serving `entry` as `queue_depth` at `now_ms`.
fn state_at(entry: MetricEntry, now_ms: i64) -> AppState {
    let shared = Shared::new();
    let mut snap = snapshot();
    snap.metrics.insert("queue_depth".to_string(), entry);
    shared.publish(snap);
    AppState::new(
        shared,
        AuthMode::None,
        engine_registry(),
        Arc::new(SimClock::new(now_ms)),
    )
}

#[tokio::test]
async fn an_expired_value_is_503_even_if_the_snapshot_says_stale() {
    let mut stale = series(&[("queue", "orders")], Status::Stale, 12.0);
    stale.expires_ms = T0 + 1_000;
    let entry = MetricEntry {
        series: vec![stale.into()],
        ..MetricEntry::default()
    };
    let url = value_url("shop", "queue_depth", None);
    // Up to its expiry the value is served; one millisecond later it is not.
    let a = send(router(state_at(entry.clone(), T0 + 1_000)), get(&url)).await;
    assert_eq!(a.code, StatusCode::OK, "{}", a.text);
    let a = send(router(state_at(entry, T0 + 1_001)), get(&url)).await;
    let msg = assert_status(&a, 503, "ServiceUnavailable");
    assert!(msg.contains("older than the allowed staleness"), "{msg}");
}

#[tokio::test]
async fn an_expired_value_counts_as_failed_in_the_self_metrics() {
    let mut stale = series(&[("queue", "orders")], Status::Stale, 12.0);
    stale.expires_ms = T0 + 1_000;
    let entry = MetricEntry {
        series: vec![stale.into()],
        ..MetricEntry::default()
    };
    for (now, stale_n, failed_n) in [(T0 + 1_000, 1, 0), (T0 + 1_001, 0, 1)] {
        let a = send(plain_router(state_at(entry.clone(), now)), get("/metrics")).await;
        let t = &a.text;
        for want in [
            format!("prescale_series{{status=\"stale\"}} {stale_n}"),
            format!("prescale_series{{status=\"failed\"}} {failed_n}"),
        ] {
            assert!(t.contains(&want), "at {now}: missing {want}\n{t}");
        }
    }
}

#[tokio::test]
async fn a_failing_source_without_series_is_503_not_404() {
    let entry = MetricEntry {
        error: Some("connection refused".into()),
        ..MetricEntry::default()
    };
    let url = value_url("shop", "queue_depth", None);
    let a = send(router(state_at(entry, T0)), get(&url)).await;
    let msg = assert_status(&a, 503, "ServiceUnavailable");
    assert!(msg.contains("source failing"), "{msg}");
    assert!(msg.contains("connection refused"), "{msg}");
    // Without the error, an empty signal is still a 404 (the query returns nothing).
    let a = send(router(state_at(MetricEntry::default(), T0)), get(&url)).await;
    assert_status(&a, 404, "NotFound");
}

#[tokio::test]
async fn before_the_first_snapshot_values_are_503_and_not_ready() {
    let state = state_with(AuthMode::None, false);
    let a = send(router(state.clone()), get(&value_url("shop", "cpu", None))).await;
    assert_status(&a, 503, "ServiceUnavailable");
    let a = send(router(state.clone()), get("/readyz")).await;
    assert_status(&a, 503, "ServiceUnavailable");
    let a = send(plain_router(state.clone()), get("/readyz")).await;
    assert_status(&a, 503, "ServiceUnavailable");
    state.shared.publish(snapshot());
    assert_eq!(
        send(router(state.clone()), get("/readyz")).await.code,
        StatusCode::OK
    );
    assert_eq!(
        send(plain_router(state), get("/readyz")).await.code,
        StatusCode::OK
    );
}

#[tokio::test]
async fn health_endpoints_answer_on_both_routers() {
    for path in ["/healthz", "/livez", "/readyz"] {
        for app in [router(state()), plain_router(state())] {
            let a = send(app, get(path)).await;
            assert_eq!(a.code, StatusCode::OK, "{path}");
            assert_eq!(a.text, "ok");
        }
    }
}

#[tokio::test]
async fn unsupported_method_is_405_status() {
    for app in [router(state()), plain_router(state())] {
        let request = Request::post("/healthz").body(Body::empty()).unwrap();
        assert_status(&send(app, request).await, 405, "MethodNotAllowed");
    }
    let request = Request::delete(value_url("shop", "cpu", None))
        .body(Body::empty())
        .unwrap();
    assert_status(
        &send(router(state()), request).await,
        405,
        "MethodNotAllowed",
    );
}

#[tokio::test]
async fn unknown_path_is_404_status() {
    for uri in [
        "/nope",
        "/apis/custom.metrics.k8s.io/v1alpha1",
        "/apis/metrics.k8s.io",
        "/apis/external.metrics.k8s.io/v1beta1/namespaces/a/b/c",
    ] {
        assert_status(&send(router(state()), get(uri)).await, 404, "NotFound");
    }
    assert_status(
        &send(plain_router(state()), get("/apis")).await,
        404,
        "NotFound",
    );
}

#[tokio::test]
async fn oversized_bodies_are_413() {
    let request = Request::get("/apis")
        .header(header::CONTENT_LENGTH, "10000000")
        .body(Body::empty())
        .unwrap();
    assert_status(
        &send(router(state()), request).await,
        413,
        "RequestEntityTooLarge",
    );
}

// ---- authentication and authorization ----

fn delegated(authorizer: StaticAuthorizer) -> AuthMode {
    let tokens = StaticTokens::new().with_token(
        "hpa-token",
        UserInfo {
            username: "hpa".into(),
            ..UserInfo::default()
        },
    );
    AuthMode::Delegated {
        front_proxy: Some(
            FrontProxy::new("unused in memory")
                .with_allowed_names(vec!["front-proxy-client".into()]),
        ),
        tokens: Some(Arc::new(tokens)),
        authorizer: Arc::new(authorizer),
    }
}

fn hpa_may_read_shop() -> StaticAuthorizer {
    StaticAuthorizer::new().with_rule(Rule {
        user: Some("system:serviceaccount:kube-system:horizontal-pod-autoscaler".into()),
        resource: Some("cpu".into()),
        namespace: Some("shop".into()),
    })
}

fn from_front_proxy(uri: &str, cn: &str, user: &str, groups: &[&str]) -> Request<Body> {
    let mut request = Request::get(uri).header("X-Remote-User", user);
    for g in groups {
        request = request.header("X-Remote-Group", *g);
    }
    let mut request = request.body(Body::empty()).unwrap();
    request.extensions_mut().insert(PeerCert {
        common_name: Some(cn.into()),
    });
    request
}

const HPA_SA: &str = "system:serviceaccount:kube-system:horizontal-pod-autoscaler";

#[tokio::test]
async fn front_proxy_identity_is_authorized() {
    let app = router(state_with(delegated(hpa_may_read_shop()), true));
    let a = send(
        app.clone(),
        from_front_proxy(
            &value_url("shop", "cpu", None),
            "front-proxy-client",
            HPA_SA,
            &[],
        ),
    )
    .await;
    assert_eq!(a.code, StatusCode::OK, "{}", a.text);
    let a = send(
        app.clone(),
        from_front_proxy(
            &value_url("shop", "queue_depth", None),
            "front-proxy-client",
            HPA_SA,
            &[],
        ),
    )
    .await;
    let msg = assert_status(&a, 403, "Forbidden");
    assert!(msg.contains("queue_depth") && msg.contains("shop"), "{msg}");
    let a = send(
        app,
        from_front_proxy("/apis", "front-proxy-client", "root", &["system:masters"]),
    )
    .await;
    assert_eq!(a.code, StatusCode::OK);
}

#[tokio::test]
async fn no_identity_is_401() {
    let app = router(state_with(delegated(StaticAuthorizer::allow_all()), true));
    let a = send(app.clone(), get(&value_url("shop", "cpu", None))).await;
    assert_status(&a, 401, "Unauthorized");
    // Identity headers without the front-proxy certificate are ignored.
    let request = Request::get(value_url("shop", "cpu", None))
        .header("X-Remote-User", "admin")
        .header("X-Remote-Group", "system:masters")
        .body(Body::empty())
        .unwrap();
    assert_status(&send(app.clone(), request).await, 401, "Unauthorized");
    // A certificate with a CN outside the allowed names.
    let a = send(
        app.clone(),
        from_front_proxy(&value_url("shop", "cpu", None), "someone-else", HPA_SA, &[]),
    )
    .await;
    let msg = assert_status(&a, 401, "Unauthorized");
    assert!(msg.contains("someone-else"), "{msg}");
    // A rejected token.
    let request = Request::get(value_url("shop", "cpu", None))
        .header(header::AUTHORIZATION, "Bearer wrong")
        .body(Body::empty())
        .unwrap();
    assert_status(&send(app, request).await, 401, "Unauthorized");
}

#[tokio::test]
async fn bearer_tokens_are_reviewed_and_authorized() {
    let authz = StaticAuthorizer::new().with_rule(Rule {
        user: Some("hpa".into()),
        ..Rule::default()
    });
    let app = router(state_with(delegated(authz), true));
    let request = Request::get(value_url("shop", "cpu", None))
        .header(header::AUTHORIZATION, "Bearer hpa-token")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(app, request).await.code, StatusCode::OK);
}

#[tokio::test]
async fn health_needs_no_identity() {
    let app = router(state_with(delegated(StaticAuthorizer::new()), true));
    for path in ["/healthz", "/livez", "/readyz"] {
        assert_eq!(
            send(app.clone(), get(path)).await.code,
            StatusCode::OK,
            "{path}"
        );
    }
    assert_status(&send(app, get("/apis")).await, 401, "Unauthorized");
}

// ---- what the kube-aggregator asks ----
//
// Its requests replayed as prescale receives them: over the front-proxy
// certificate, with X-Remote-User / X-Remote-Group, and the Accept headers it
// sends (kube-aggregator's discovery manager and OpenAPI downloaders).

/// `/apis` of an APIService's backend, Kubernetes 1.30 and later.
const AGGREGATOR_ACCEPT: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList";
/// `/apis` of an APIService's backend, older Kubernetes (aggregated discovery
/// in beta).
const AGGREGATOR_ACCEPT_V2BETA1: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList";
/// The user of the aggregator's discovery requests.
const KUBE_AGGREGATOR: &str = "system:kube-aggregator";
/// The user of its OpenAPI downloads (and, in some versions, of the plain
/// discovery fallback).
const AGGREGATOR: &str = "system:aggregator";

/// A SubjectAccessReview stand-in with RBAC's default `system:discovery`
/// binding: the discovery and OpenAPI paths to group `system:authenticated`,
/// and nothing else. Remembers every question.
#[derive(Default)]
struct Rbac(std::sync::Mutex<Vec<Attributes>>);

impl Rbac {
    fn asked(&self) -> Vec<Attributes> {
        self.0.lock().unwrap().clone()
    }
}

impl Authorizer for Rbac {
    fn authorize<'a>(&'a self, attributes: &'a Attributes) -> BoxFuture<'a, AuthResult<Decision>> {
        self.0.lock().unwrap().push(attributes.clone());
        let discovery = |path: &str| {
            ["/api", "/apis", "/openapi", "/version"]
                .iter()
                .any(|p| path == *p || path.starts_with(&format!("{p}/")))
        };
        let authenticated = attributes
            .user
            .groups
            .iter()
            .any(|g| g == "system:authenticated");
        let decision = match &attributes.target {
            Target::NonResource { path } if authenticated && discovery(path) => Decision::Allow,
            _ => Decision::Deny("no RBAC rule".into()),
        };
        Box::pin(async move { Ok(decision) })
    }
}

fn with_rbac(rbac: Arc<Rbac>) -> AppState {
    let shared = Shared::new();
    shared.publish(snapshot());
    let auth = AuthMode::Delegated {
        front_proxy: Some(
            FrontProxy::new("unused in memory")
                .with_allowed_names(vec!["front-proxy-client".into()]),
        ),
        tokens: Some(Arc::new(StaticTokens::new().with_token(
            "sa-token",
            UserInfo {
                username: "system:serviceaccount:ops:dashboard".into(),
                groups: vec!["system:serviceaccounts".into()],
                ..UserInfo::default()
            },
        ))),
        authorizer: rbac,
    };
    AppState::new(shared, auth, engine_registry(), Arc::new(SimClock::new(T0)))
}

/// A request from the aggregator through the front proxy.
fn from_aggregator(uri: &str, user: &str, groups: &[&str], accept: Option<&str>) -> Request<Body> {
    let mut request = from_front_proxy(uri, "front-proxy-client", user, groups);
    if let Some(accept) = accept {
        request
            .headers_mut()
            .insert(header::ACCEPT, accept.parse().unwrap());
    }
    request
}

#[tokio::test]
async fn aggregator_gets_aggregated_discovery_at_apis() {
    let rbac = Arc::new(Rbac::default());
    let app = router(with_rbac(rbac.clone()));
    let a = send(
        app.clone(),
        from_aggregator(
            "/apis",
            KUBE_AGGREGATOR,
            &["system:masters"],
            Some(AGGREGATOR_ACCEPT),
        ),
    )
    .await;
    assert_eq!(a.code, StatusCode::OK, "{}", a.text);
    // The aggregator decodes only when the content type names the conversion.
    assert_eq!(
        a.content_type,
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
    );
    let b = &a.body;
    assert_eq!(b["kind"], "APIGroupDiscoveryList");
    assert_eq!(b["apiVersion"], "apidiscovery.k8s.io/v2");
    assert_eq!(b["metadata"], json!({}));
    let items = b["items"].as_array().unwrap();
    let names: Vec<&str> = items
        .iter()
        .map(|g| g["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["external.metrics.k8s.io", "custom.metrics.k8s.io"]);
    let external = items[0]["versions"].as_array().unwrap();
    assert_eq!(external.len(), 1);
    assert_eq!(external[0]["version"], "v1beta1");
    assert_eq!(external[0]["freshness"], "Current");
    let resources = external[0]["resources"].as_array().unwrap();
    let metrics: Vec<&str> = resources
        .iter()
        .map(|r| r["resource"].as_str().unwrap())
        .collect();
    assert_eq!(metrics, ["cpu", "nothing", "queue_depth"]);
    for r in resources {
        assert_eq!(r.as_object().unwrap().len(), 5, "{r}");
        assert_eq!(
            r["responseKind"],
            json!({"group": "external.metrics.k8s.io", "version": "v1beta1", "kind": "ExternalMetricValueList"})
        );
        assert_eq!(r["scope"], "Namespaced");
        assert_eq!(r["singularResource"], "");
        assert_eq!(r["verbs"], json!(["get"]));
    }
    let custom: Vec<(&str, &str)> = items[1]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["version"].as_str().unwrap(),
                v["freshness"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(custom, [("v1beta2", "Current"), ("v1beta1", "Current")]);
    assert!(rbac.asked().is_empty(), "system:masters is not reviewed");

    // It sends the ETag back; an unchanged document is a 304.
    let etag = a.etag.clone().expect("an ETag");
    let mut again = from_aggregator(
        "/apis",
        KUBE_AGGREGATOR,
        &["system:masters"],
        Some(AGGREGATOR_ACCEPT),
    );
    again
        .headers_mut()
        .insert(header::IF_NONE_MATCH, etag.parse().unwrap());
    let a = send(app.clone(), again).await;
    assert_eq!(a.code, StatusCode::NOT_MODIFIED);
    assert!(a.text.is_empty());

    // Older aggregators ask for v2beta1 only.
    let a = send(
        app,
        from_aggregator(
            "/apis",
            KUBE_AGGREGATOR,
            &["system:masters"],
            Some(AGGREGATOR_ACCEPT_V2BETA1),
        ),
    )
    .await;
    assert_eq!(a.code, StatusCode::OK, "{}", a.text);
    assert_eq!(a.content_type, AGGREGATOR_ACCEPT_V2BETA1);
    assert_eq!(a.body["apiVersion"], "apidiscovery.k8s.io/v2beta1");
    assert_eq!(
        a.body["items"][0]["versions"][0]["resources"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
}

/// The aggregator's fallback to plain discovery comes without groups; the
/// default RBAC allows it only as `system:authenticated`, which every
/// authenticated user carries into the SubjectAccessReview.
#[tokio::test]
async fn plain_discovery_fallback_is_reviewed_as_system_authenticated() {
    let rbac = Arc::new(Rbac::default());
    let app = router(with_rbac(rbac.clone()));
    let paths = [
        "/apis/external.metrics.k8s.io/v1beta1",
        "/apis/custom.metrics.k8s.io/v1beta2",
        "/apis/custom.metrics.k8s.io/v1beta1",
        "/apis",
        "/apis/external.metrics.k8s.io",
    ];
    for user in [KUBE_AGGREGATOR, AGGREGATOR] {
        for path in paths {
            let a = send(
                app.clone(),
                from_aggregator(path, user, &[], Some("application/json")),
            )
            .await;
            assert_eq!(a.code, StatusCode::OK, "{user} {path}: {}", a.text);
            assert_eq!(a.content_type, "application/json");
        }
    }
    let asked = rbac.asked();
    assert_eq!(asked.len(), 2 * paths.len());
    for (i, attributes) in asked.iter().enumerate() {
        assert_eq!(
            attributes.user.groups,
            vec!["system:authenticated"],
            "once, not duplicated"
        );
        assert_eq!(attributes.verb, "get");
        assert_eq!(
            attributes.target,
            Target::NonResource {
                path: paths[i % paths.len()].to_string()
            }
        );
    }

    // A front-proxy group list that already has it keeps it once.
    let a = send(
        app.clone(),
        from_aggregator("/apis", "someone", &["system:authenticated", "ops"], None),
    )
    .await;
    assert_eq!(a.code, StatusCode::OK, "{}", a.text);
    assert_eq!(
        rbac.asked().last().unwrap().user.groups,
        vec!["system:authenticated", "ops"]
    );

    // A token whose review answered without it gets it too.
    let request = Request::get("/apis")
        .header(header::AUTHORIZATION, "Bearer sa-token")
        .body(Body::empty())
        .unwrap();
    let a = send(app, request).await;
    assert_eq!(a.code, StatusCode::OK, "{}", a.text);
    assert_eq!(
        rbac.asked().last().unwrap().user.groups,
        vec!["system:serviceaccounts", "system:authenticated"]
    );
}

#[tokio::test]
async fn aggregator_downloads_both_openapi_documents() {
    let rbac = Arc::new(Rbac::default());
    let app = router(with_rbac(rbac.clone()));

    // v2: one download with `Accept: application/json`, then with the ETag.
    let a = send(
        app.clone(),
        from_aggregator("/openapi/v2", AGGREGATOR, &[], Some("application/json")),
    )
    .await;
    assert_eq!(a.code, StatusCode::OK, "{}", a.text);
    assert_eq!(a.content_type, "application/json");
    assert_eq!(a.body["swagger"], "2.0");
    let paths: Vec<&String> = a.body["paths"].as_object().unwrap().keys().collect();
    assert_eq!(paths.len(), 7, "{paths:?}");
    assert!(
        paths.contains(
            &&"/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/{metric}".to_string()
        ),
        "{paths:?}"
    );
    let external = &a.body["paths"]
        ["/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/{metric}"]["get"];
    assert_eq!(
        external["x-kubernetes-group-version-kind"],
        json!({"group": "external.metrics.k8s.io", "kind": "ExternalMetricValueList", "version": "v1beta1"})
    );
    assert!(external["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "labelSelector" && p["in"] == "query"));
    for name in [
        "io.k8s.metrics.pkg.apis.external_metrics.v1beta1.ExternalMetricValueList",
        "io.k8s.metrics.pkg.apis.custom_metrics.v1beta2.MetricValueList",
        "io.k8s.metrics.pkg.apis.custom_metrics.v1beta1.MetricValueList",
    ] {
        assert!(a.body["definitions"].get(name).is_some(), "{name}");
    }
    let mut again = from_aggregator("/openapi/v2", AGGREGATOR, &[], Some("application/json"));
    again
        .headers_mut()
        .insert(header::IF_NONE_MATCH, a.etag.unwrap().parse().unwrap());
    assert_eq!(
        send(app.clone(), again).await.code,
        StatusCode::NOT_MODIFIED
    );

    // v3: the root (no Accept), then each document it lists, by its URL.
    let root = send(
        app.clone(),
        from_aggregator("/openapi/v3", AGGREGATOR, &[], None),
    )
    .await;
    assert_eq!(root.code, StatusCode::OK, "{}", root.text);
    assert_eq!(root.content_type, "application/json");
    let listed = root.body["paths"].as_object().unwrap();
    let mut keys: Vec<&str> = listed.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "apis/custom.metrics.k8s.io/v1beta1",
            "apis/custom.metrics.k8s.io/v1beta2",
            "apis/external.metrics.k8s.io/v1beta1",
        ]
    );
    // Decisions are cached: the second v2 download is not reviewed again.
    let mut reviewed = vec!["/openapi/v2".to_string(), "/openapi/v3".into()];
    for (key, item) in listed {
        let url = item["serverRelativeURL"].as_str().unwrap();
        assert!(
            url.starts_with(&format!("/openapi/v3/{key}?hash=")),
            "{url}"
        );
        let a = send(
            app.clone(),
            from_aggregator(url, AGGREGATOR, &[], Some("application/json")),
        )
        .await;
        assert_eq!(a.code, StatusCode::OK, "{url}: {}", a.text);
        assert_eq!(a.content_type, "application/json");
        assert!(
            a.body["openapi"].as_str().unwrap().starts_with("3.0."),
            "{}",
            a.body["openapi"]
        );
        let group_version = key.strip_prefix("apis/").unwrap();
        for (path, item) in a.body["paths"].as_object().unwrap() {
            assert!(
                path.starts_with(&format!("/apis/{group_version}/")),
                "{path}"
            );
            let gvk = &item["get"]["x-kubernetes-group-version-kind"];
            assert_eq!(
                format!(
                    "{}/{}",
                    gvk["group"].as_str().unwrap(),
                    gvk["version"].as_str().unwrap()
                ),
                group_version
            );
        }
        reviewed.push(format!("/openapi/v3/{key}"));
    }

    // Every download was reviewed as a non-resource path, as system:authenticated.
    let asked = rbac.asked();
    let asked_paths: Vec<String> = asked
        .iter()
        .map(|a| match &a.target {
            Target::NonResource { path } => path.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(asked_paths, reviewed);
    for a in &asked {
        assert_eq!(a.user.username, AGGREGATOR);
        assert_eq!(a.user.groups, vec!["system:authenticated"]);
        assert_eq!(a.verb, "get");
    }
}

#[tokio::test]
async fn openapi_answers_json_when_acceptable_and_406_for_protobuf_only() {
    let v2_pb = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";
    let v3_pb = "application/com.github.proto-openapi.spec.v3.v1.0+protobuf";
    let v3_doc = "/openapi/v3/apis/custom.metrics.k8s.io/v1beta2";
    for (path, protobuf) in [
        ("/openapi/v2", v2_pb),
        ("/openapi/v3", v3_pb),
        (v3_doc, v3_pb),
        (
            v3_doc,
            "application/com.github.proto-openapi.spec.v3@v1.0+protobuf",
        ),
    ] {
        let only = Request::get(path)
            .header(header::ACCEPT, protobuf)
            .body(Body::empty())
            .unwrap();
        let msg = assert_status(&send(router(state()), only).await, 406, "NotAcceptable");
        assert!(msg.contains("application/json"), "{msg}");
        for accept in [
            format!("{protobuf}, application/json"),
            format!("{protobuf};q=1, */*;q=0.1"),
        ] {
            let request = Request::get(path)
                .header(header::ACCEPT, &accept)
                .body(Body::empty())
                .unwrap();
            let a = send(router(state()), request).await;
            assert_eq!(a.code, StatusCode::OK, "{path} {accept}: {}", a.text);
            assert_eq!(a.content_type, "application/json");
        }
    }
    for missing in [
        "/openapi/v3/apis/metrics.k8s.io/v1beta1",
        "/openapi/v3/apis",
        "/openapi/v3/",
        "/openapi/v1",
    ] {
        assert_status(&send(router(state()), get(missing)).await, 404, "NotFound");
    }
}

/// Sample values for a path template's parameters.
fn instantiate(template: &str) -> String {
    template
        .replace("{namespace}", "shop")
        .replace("{metric}", "queue_depth")
        .replace("{resource}", "statefulsets.apps")
        .replace("{name}", "db-0")
}

/// Whether `template` (`{param}` segments match any one segment) matches `path`.
fn matches_template(template: &str, path: &str) -> bool {
    let (t, p): (Vec<&str>, Vec<&str>) = (template.split('/').collect(), path.split('/').collect());
    t.len() == p.len()
        && t.iter()
            .zip(&p)
            .all(|(t, p)| (t.starts_with('{') && t.ends_with('}') && !p.is_empty()) || t == p)
}

/// Both ways: every value path the router serves is in the documents of its
/// group-version, and every path the documents describe is a value path.
#[test]
fn openapi_documents_describe_every_served_value_path() {
    let served = [
        "/apis/external.metrics.k8s.io/v1beta1/namespaces/shop/queue_depth",
        "/apis/custom.metrics.k8s.io/v1beta2/namespaces/conexus/pods/*/packets-per-second",
        "/apis/custom.metrics.k8s.io/v1beta2/namespaces/conexus/statefulsets.apps/db-0/latency",
        "/apis/custom.metrics.k8s.io/v1beta2/namespaces/conexus/metrics/requests",
        "/apis/custom.metrics.k8s.io/v1beta2/nodes/node-1/node_packets",
        "/apis/custom.metrics.k8s.io/v1beta1/namespaces/conexus/pods/*/packets-per-second",
        "/apis/custom.metrics.k8s.io/v1beta1/namespaces/conexus/metrics/requests",
        "/apis/custom.metrics.k8s.io/v1beta1/namespaces/x/statefulsets.apps/db-0/latency",
        "/apis/custom.metrics.k8s.io/v1beta1/nodes/node-1/node_packets",
    ];
    let v2 = super::openapi::v2();
    let v2_paths: Vec<&String> = v2["paths"].as_object().unwrap().keys().collect();
    for path in served {
        assert!(
            matches!(
                super::Route::parse(path).endpoint(),
                super::Endpoint::External | super::Endpoint::Custom
            ),
            "{path}"
        );
        assert!(
            v2_paths.iter().any(|t| matches_template(t, path)),
            "v2 lacks {path}"
        );
        let gv = super::openapi::GroupVersion::ALL
            .into_iter()
            .find(|gv| path.starts_with(&format!("/{}/", gv.key())))
            .unwrap();
        let v3 = super::openapi::v3(gv);
        assert!(
            v3["paths"]
                .as_object()
                .unwrap()
                .keys()
                .any(|t| matches_template(t, path)),
            "v3 {} lacks {path}",
            gv.key()
        );
    }
    for template in v2_paths {
        let path = instantiate(template);
        assert!(
            matches!(
                super::Route::parse(&path).endpoint(),
                super::Endpoint::External | super::Endpoint::Custom
            ),
            "{template} is not a value path"
        );
    }
}

// ---- plain port ----

#[tokio::test]
async fn self_metrics_count_requests_and_series_by_status() {
    let state = state();
    let _ = send(router(state.clone()), get(&value_url("shop", "cpu", None))).await;
    let _ = send(router(state.clone()), get(&value_url("shop", "nope", None))).await;
    let a = send(plain_router(state), get("/metrics")).await;
    assert_eq!(a.code, StatusCode::OK);
    assert!(a.content_type.starts_with("application/openmetrics-text"));
    let t = &a.text;
    assert!(
        t.contains("prescale_api_requests_total{endpoint=\"external\",code=\"200\"} 1"),
        "{t}"
    );
    assert!(
        t.contains("prescale_api_requests_total{endpoint=\"external\",code=\"404\"} 1"),
        "{t}"
    );
    assert!(
        t.contains("prescale_api_request_duration_seconds_count{endpoint=\"external\"} 2"),
        "{t}"
    );
    for (status, n) in [("ok", 2), ("stale", 1), ("warming", 1), ("failed", 1)] {
        assert!(
            t.contains(&format!("prescale_series{{status=\"{status}\"}} {n}")),
            "{t}"
        );
    }
    assert!(
        t.contains("prescale_source_errors_total 1"),
        "engine registry rendered too: {t}"
    );
    assert_eq!(t.matches("# EOF").count(), 1);
    assert!(t.trim_end().ends_with("# EOF"));
}

#[tokio::test]
async fn debug_signals_explain_every_series() {
    let a = send(plain_router(state()), get("/debug/signals")).await;
    assert_eq!(a.code, StatusCode::OK);
    let b = &a.body;
    assert_eq!(b["ready"], true);
    assert_eq!(b["published"], "2026-09-21T14:13:20Z");
    let metrics = b["metrics"].as_array().unwrap();
    assert_eq!(metrics.len(), 3);
    let queue = metrics.iter().find(|m| m["name"] == "queue_depth").unwrap();
    let s = &queue["series"][1];
    assert_eq!(s["labels"], json!({"queue": "payments"}));
    assert_eq!(s["status"], "stale");
    assert_eq!(s["model"], "holt-winters");
    assert_eq!(s["last_fit"], "2026-09-21T14:03:20Z");
    assert_eq!(s["backtest_mase"], 0.42);
    assert!((s["latest"].as_f64().unwrap() - 0.765).abs() < 1e-9);
    assert_eq!(s["forecast_mean"], json!([1.0, 2.0]));
    assert_eq!(s["forecast_quantile"], json!([1.5, 2.5]));
    assert_eq!(s["forecast_lower"], json!([0.5, 1.0]));
    assert_eq!(s["forecast_upper"], json!([1.5, 2.5]));
    assert_eq!(s["served_value"], 0.85);
    assert_eq!(s["served_quantity"], "850m");
    assert_eq!(
        queue["series"][3]["reason"],
        "prometheus unreachable for 10m"
    );
    let cpu = metrics.iter().find(|m| m["name"] == "cpu").unwrap();
    assert_eq!(cpu["namespaces"], json!(["shop"]));
}

/// The integration tests' check of prescale's JSON key style, shared.
#[path = "../../tests/it/support/json.rs"]
mod json;

#[tokio::test]
async fn debug_signals_keys_are_snake_case_as_the_cli_json() {
    let mut snap = snapshot();
    let entry = snap.metrics.get_mut("queue_depth").unwrap();
    let first = std::sync::Arc::make_mut(&mut entry.series[0]);
    first.detail.why = Some(crate::snapshot::Why {
        text: "1.1 × max(q0.9 forecast 2.5 at step 2 of 2, latest 10.8) = 11.88".into(),
        quantile: 0.9,
        steps_due: 2,
        forecast_peak: Some(2.5),
        peak_step: Some(2),
        latest: Some(10.8),
        floor_applied: true,
        tolerance_factor: 1.1,
        calibration: Some(crate::snapshot::CalibrationDoc {
            outcomes: 3,
            model_peak: 2.0,
            recent_level: Some(10.8),
            base: 10.8,
            offset: Some(0.5),
        }),
    });
    first.detail.shadow = true;
    let doc = crate::api::plain::signals_doc(&snap, true, T0, &Default::default()).unwrap();
    let bad = json::non_snake_keys(&doc);
    assert!(bad.is_empty(), "not snake_case: {bad:?}");
    let queue = doc["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "queue_depth")
        .unwrap();
    let s = &queue["series"][0];
    assert_eq!(s["why"]["calibration"]["recent_level"], 10.8, "{s}");
    assert_eq!(s["shadow_would_serve"], 12.0, "{s}");
}

#[tokio::test]
async fn debug_signals_narrow_to_a_signal_and_series_and_say_how_stale() {
    let mut entry = snapshot().metrics["queue_depth"].clone();
    std::sync::Arc::make_mut(&mut entry.series[0]).expires_ms = T0 + 90_000;
    let now = T0 + 30_000;
    let url = "/debug/signals?signal=queue_depth&series=queue%20in%20(orders,audit)";
    let a = send(plain_router(state_at(entry.clone(), now)), get(url)).await;
    assert_eq!(a.code, StatusCode::OK, "{}", a.body);
    let metrics = a.body["metrics"].as_array().unwrap();
    assert_eq!(metrics.len(), 1);
    let series = metrics[0]["series"].as_array().unwrap();
    let names: Vec<&str> = series
        .iter()
        .map(|s| s["labels"]["queue"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["orders", "audit"]);
    assert_eq!(series[0]["age_seconds"], 30.0);
    assert_eq!(series[0]["expires_in_seconds"], 60.0);
    assert!(
        series[1].get("expires_in_seconds").is_none(),
        "never expires"
    );
    // Past its expiry the status is what a request would get: failed (503).
    let a = send(
        plain_router(state_at(entry.clone(), T0 + 100_000)),
        get(url),
    )
    .await;
    assert_eq!(a.body["metrics"][0]["series"][0]["status"], "failed");
    assert_eq!(
        a.body["metrics"][0]["series"][0]["expires_in_seconds"],
        -10.0
    );

    let a = send(
        plain_router(state_at(entry.clone(), now)),
        get("/debug/signals?signal=nope"),
    )
    .await;
    assert_eq!(a.code, StatusCode::NOT_FOUND);
    assert!(
        a.body["message"].as_str().unwrap().contains("queue_depth"),
        "{}",
        a.body
    );
    let a = send(
        plain_router(state_at(entry, now)),
        get("/debug/signals?series=queue%20in%20("),
    )
    .await;
    assert_eq!(a.code, StatusCode::BAD_REQUEST);
    assert!(
        a.body["message"].as_str().unwrap().starts_with("series: "),
        "{}",
        a.body
    );
}

#[tokio::test]
async fn auth_none_refuses_a_non_loopback_bind() {
    let (cert_pem, key_pem) = super::tls::self_signed(&[]).unwrap();
    let settings = super::Settings::new(
        "0.0.0.0:0".parse().unwrap(),
        "127.0.0.1:0".parse().unwrap(),
        super::TlsSource::Pem { cert_pem, key_pem },
        AuthMode::None,
    );
    let err = super::Server::bind(
        settings,
        Shared::new(),
        Arc::new(Registry::default()),
        Arc::new(SimClock::new(0)),
    )
    .await
    .err()
    .unwrap();
    assert!(matches!(err, super::Error::NotLoopback(_)), "{err}");
}

#[test]
fn routes_are_parsed_once_with_their_parts_decoded() {
    use super::{Endpoint, Route};
    for (path, endpoint) in [
        ("/healthz", Endpoint::Health),
        ("/readyz", Endpoint::Health),
        ("/metrics", Endpoint::Metrics),
        ("/apis", Endpoint::Discovery),
        ("/apis/external.metrics.k8s.io/v1beta1", Endpoint::Discovery),
        ("/apis/custom.metrics.k8s.io/v1beta2", Endpoint::Discovery),
        ("/debug/signals", Endpoint::Debug),
        (
            "/apis/external.metrics.k8s.io/v1beta1/namespaces/a/b",
            Endpoint::External,
        ),
        (
            "/apis/external.metrics.k8s.io/v1beta1/namespaces/a/b/c",
            Endpoint::Other,
        ),
        (
            "/apis/external.metrics.k8s.io/v1beta1/namespaces//b",
            Endpoint::Other,
        ),
        (
            "/apis/custom.metrics.k8s.io/v1beta1/namespaces/a/pods/*/m",
            Endpoint::Custom,
        ),
        (
            "/apis/custom.metrics.k8s.io/v1alpha1/namespaces/a/pods/*/m",
            Endpoint::Other,
        ),
        ("/openapi/v2", Endpoint::OpenApi),
        ("/openapi/v3", Endpoint::OpenApi),
        (
            "/openapi/v3/apis/external.metrics.k8s.io/v1beta1",
            Endpoint::OpenApi,
        ),
        ("/openapi/v1", Endpoint::Other),
        ("/nope", Endpoint::Other),
    ] {
        assert_eq!(Route::parse(path).endpoint(), endpoint, "{path}");
    }
    let route = Route::parse("/apis/external.metrics.k8s.io/v1beta1/namespaces/sh%6Fp/q%2Fx");
    assert_eq!(
        route,
        Route::External {
            namespace: "shop".into(),
            metric: "q/x".into()
        }
    );
    let Some(super::auth::Target::Resource {
        resource,
        namespace,
        ..
    }) = route.target("/ignored")
    else {
        panic!("an external value is a resource");
    };
    assert_eq!((resource.as_str(), namespace.as_str()), ("q/x", "shop"));
    assert_eq!(Route::Health.target("/healthz"), None);
    assert!(matches!(
        Route::Discovery.target("/apis"),
        Some(super::auth::Target::NonResource { path }) if path == "/apis"
    ));
}
