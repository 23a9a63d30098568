//! The HTTPS API over real sockets on 127.0.0.1 with real TLS clients and
//! certificates generated here: front-proxy client certificates from the
//! request-header CA, from another CA, with a CN outside the allowed names;
//! bearer tokens; authorization denials; the plain port; slow clients.

use crate::support::pki;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prescale::api::auth::{
    Attributes, AuthMode, Authorizer, BoxFuture, Decision, FrontProxy, Rule, StaticAuthorizer,
    StaticTokens, Target, UserInfo,
};
use prescale::api::{Limits, Server, Settings, TlsSource};
use prescale::clock::SimClock;
use prescale::snapshot::{MetricEntry, SeriesDetail, SeriesEntry, Shared, Snapshot, Status};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const HPA: &str = "system:serviceaccount:kube-system:horizontal-pod-autoscaler";
const FRONT_PROXY_CN: &str = "front-proxy-client";

struct Running {
    https: SocketAddr,
    plain: SocketAddr,
    server_pair: pki::Pair,
    front_proxy_ca: pki::Ca,
    shared: Shared,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("server stops within the drain timeout")
                .unwrap();
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.https.port())
    }

    fn client(&self, identity: Option<&pki::Pair>) -> reqwest::Client {
        pki::http_client(pki::client_config(&self.server_pair.cert_pem, identity))
    }
}

fn snapshot(value: f64) -> Snapshot {
    let entry = |queue: &str, value: f64| SeriesEntry {
        labels: [("queue".to_string(), queue.to_string())].into(),
        status: Status::Ok,
        value,
        timestamp_ms: 1_790_000_000_000,
        window_s: 60,
        expires_ms: i64::MAX,
        detail: SeriesDetail::default(),
    };
    let mut metrics = BTreeMap::new();
    metrics.insert(
        "queue_depth".to_string(),
        MetricEntry {
            namespaces: None,
            custom: None,
            series: vec![entry("orders", value).into(), entry("payments", 3.0).into()],
            error: None,
        },
    );
    Snapshot {
        published_ms: 1_790_000_000_000,
        metrics,
        plan: None,
    }
}

async fn start(limits: Limits) -> Running {
    let authorizer = StaticAuthorizer::new().with_rule(Rule {
        user: Some(HPA.into()),
        resource: Some("queue_depth".into()),
        namespace: Some("shop".into()),
    });
    start_with(limits, Arc::new(authorizer)).await
}

async fn start_with(limits: Limits, authorizer: Arc<dyn Authorizer>) -> Running {
    let server_pair = pki::server_pair();
    let front_proxy_ca = pki::Ca::new("front-proxy-ca");
    let tokens = StaticTokens::new().with_token(
        "hpa-token",
        UserInfo {
            username: HPA.into(),
            ..UserInfo::default()
        },
    );
    let auth = AuthMode::Delegated {
        front_proxy: Some(
            FrontProxy::new(front_proxy_ca.cert_pem.clone())
                .with_allowed_names(vec![FRONT_PROXY_CN.into()]),
        ),
        tokens: Some(Arc::new(tokens)),
        authorizer,
    };
    let mut settings = Settings::new(
        "127.0.0.1:0".parse().unwrap(),
        "127.0.0.1:0".parse().unwrap(),
        TlsSource::Pem {
            cert_pem: server_pair.cert_pem.clone(),
            key_pem: server_pair.key_pem.clone(),
        },
        auth,
    );
    settings.limits = limits;
    let shared = Shared::new();
    let server = Server::bind(
        settings,
        shared.clone(),
        Arc::new(prometheus_client::registry::Registry::default()),
        Arc::new(SimClock::new(0)),
    )
    .await
    .unwrap();
    let (https, plain) = (server.https_addr(), server.plain_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        server
            .run(async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    Running {
        https,
        plain,
        server_pair,
        front_proxy_ca,
        shared,
        stop: Some(stop),
        task: Some(task),
    }
}

const VALUE_PATH: &str = "/apis/external.metrics.k8s.io/v1beta1/namespaces/shop/queue_depth";

async fn get_as_hpa(client: &reqwest::Client, url: &str) -> reqwest::Result<reqwest::Response> {
    client
        .get(url)
        .header("Accept", "application/vnd.kubernetes.protobuf, */*")
        .header("X-Remote-User", HPA)
        .header("X-Remote-Group", "system:serviceaccounts")
        .send()
        .await
}

#[tokio::test]
async fn front_proxy_certificate_gets_the_published_value() {
    let server = start(Limits::default()).await;
    server.shared.publish(snapshot(12.5));
    let identity = server.front_proxy_ca.client(FRONT_PROXY_CN);
    let client = server.client(Some(&identity));

    let url = format!("{}?labelSelector=queue%3Dorders", server.url(VALUE_PATH));
    let response = get_as_hpa(&client, &url).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["kind"], "ExternalMetricValueList");
    assert_eq!(body["items"].as_array().unwrap().len(), 1);
    assert_eq!(body["items"][0]["value"], "12500m");
    assert_eq!(body["items"][0]["metricLabels"]["queue"], "orders");

    // A new snapshot is served on the same keep-alive connection.
    server.shared.publish(snapshot(7.0));
    let body: Value = get_as_hpa(&client, &url)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["items"][0]["value"], "7");

    // Discovery works for the aggregator's identity (system:masters is always allowed).
    let response = client
        .get(server.url("/apis/external.metrics.k8s.io/v1beta1"))
        .header("X-Remote-User", "system:kube-aggregator")
        .header("X-Remote-Group", "system:masters")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    server.stop().await;
}

/// RBAC's default `system:discovery` binding: discovery and OpenAPI paths to
/// `system:authenticated`, nothing else.
struct DiscoveryRbac;

impl Authorizer for DiscoveryRbac {
    fn authorize<'a>(
        &'a self,
        attributes: &'a Attributes,
    ) -> BoxFuture<'a, prescale::api::auth::Result<Decision>> {
        let authenticated = attributes
            .user
            .groups
            .iter()
            .any(|g| g == "system:authenticated");
        let discovery = matches!(&attributes.target, Target::NonResource { path }
            if ["/apis", "/openapi"].iter().any(|p| path == p || path.starts_with(&format!("{p}/"))));
        let decision = if authenticated && discovery {
            Decision::Allow
        } else {
            Decision::Deny("no RBAC rule".into())
        };
        Box::pin(async move { Ok(decision) })
    }
}

/// What the kube-aggregator asks every APIService backend, over real TLS with
/// its front-proxy certificate: aggregated discovery as system:kube-aggregator
/// (system:masters), plain discovery without groups, OpenAPI as
/// system:aggregator without groups.
#[tokio::test]
async fn the_aggregators_own_requests_are_answered() {
    let server = start_with(Limits::default(), Arc::new(DiscoveryRbac)).await;
    server.shared.publish(snapshot(1.0));
    let identity = server.front_proxy_ca.client(FRONT_PROXY_CN);
    let client = server.client(Some(&identity));
    let ask = |path: &str, user: &str, groups: &[&str], accept: Option<&str>| {
        let mut request = client.get(server.url(path)).header("X-Remote-User", user);
        for g in groups {
            request = request.header("X-Remote-Group", *g);
        }
        if let Some(accept) = accept {
            request = request.header("Accept", accept);
        }
        request.send()
    };

    let v2 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
    let accept =
        format!("{v2},application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList");
    let response = ask(
        "/apis",
        "system:kube-aggregator",
        &["system:masters"],
        Some(&accept),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], v2);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["kind"], "APIGroupDiscoveryList");
    assert_eq!(
        body["items"][0]["versions"][0]["resources"][0]["resource"],
        "queue_depth"
    );

    for path in [
        "/apis/external.metrics.k8s.io/v1beta1",
        "/apis/custom.metrics.k8s.io/v1beta2",
        "/apis/custom.metrics.k8s.io/v1beta1",
    ] {
        for user in ["system:kube-aggregator", "system:aggregator"] {
            let response = ask(path, user, &[], Some("application/json"))
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{user} {path}");
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["kind"], "APIResourceList");
        }
    }

    let response = ask(
        "/openapi/v2",
        "system:aggregator",
        &[],
        Some("application/json"),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("etag"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["swagger"], "2.0");
    let root: Value = ask("/openapi/v3", "system:aggregator", &[], None)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let listed = root["paths"].as_object().unwrap();
    assert_eq!(listed.len(), 3);
    for item in listed.values() {
        let url = item["serverRelativeURL"].as_str().unwrap();
        let response = ask(url, "system:aggregator", &[], Some("application/json"))
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{url}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["openapi"], "3.0.0", "{url}");
    }

    // Anything else is still denied.
    let response = ask(VALUE_PATH, "system:aggregator", &[], None)
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    server.stop().await;
}

#[tokio::test]
async fn no_certificate_and_no_token_is_401() {
    let server = start(Limits::default()).await;
    server.shared.publish(snapshot(1.0));
    let client = server.client(None);
    let response = get_as_hpa(&client, &server.url(VALUE_PATH)).await.unwrap();
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["kind"], "Status");
    assert_eq!(body["reason"], "Unauthorized");
    // Health needs no identity.
    let response = client.get(server.url("/readyz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    server.stop().await;
}

#[tokio::test]
async fn bearer_token_without_certificate_is_reviewed() {
    let server = start(Limits::default()).await;
    server.shared.publish(snapshot(1.0));
    let client = server.client(None);
    let response = client
        .get(server.url(VALUE_PATH))
        .bearer_auth("hpa-token")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = client
        .get(server.url(VALUE_PATH))
        .bearer_auth("forged")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    server.stop().await;
}

#[tokio::test]
async fn certificate_from_another_ca_is_rejected() {
    let server = start(Limits::default()).await;
    server.shared.publish(snapshot(1.0));
    // A CA with another name (unknown issuer), and an impostor CA with the same
    // name as the real one (the signature does not verify).
    for (ca_name, alert) in [
        ("some-other-ca", "UnknownCA"),
        ("front-proxy-ca", "DecryptError"),
    ] {
        let impostor = pki::Ca::new(ca_name).client(FRONT_PROXY_CN);
        let client = server.client(Some(&impostor));
        let result = get_as_hpa(&client, &server.url(VALUE_PATH)).await;
        let err = result.expect_err("the TLS handshake must fail");
        let chain = format!("{err:?}");
        assert!(chain.contains(alert), "{ca_name}: {chain}");
    }
    server.stop().await;
}

#[tokio::test]
async fn certificate_with_a_cn_outside_the_allowed_names_is_401() {
    let server = start(Limits::default()).await;
    server.shared.publish(snapshot(1.0));
    let identity = server.front_proxy_ca.client("not-the-front-proxy");
    let client = server.client(Some(&identity));
    let response = get_as_hpa(&client, &server.url(VALUE_PATH)).await.unwrap();
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("not-the-front-proxy"));
    server.stop().await;
}

#[tokio::test]
async fn denied_by_the_authorizer_is_403() {
    let server = start(Limits::default()).await;
    server.shared.publish(snapshot(1.0));
    let identity = server.front_proxy_ca.client(FRONT_PROXY_CN);
    let client = server.client(Some(&identity));
    let url = server.url("/apis/external.metrics.k8s.io/v1beta1/namespaces/other/queue_depth");
    let response = get_as_hpa(&client, &url).await.unwrap();
    assert_eq!(response.status(), 403);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["reason"], "Forbidden");
    assert_eq!(body["code"], 403);
    server.stop().await;
}

#[tokio::test]
async fn plain_port_serves_health_metrics_and_debug() {
    let server = start(Limits::default()).await;
    let client = reqwest::Client::new();
    let plain = |path: &str| format!("http://{}{path}", server.plain);
    assert_eq!(
        client.get(plain("/readyz")).send().await.unwrap().status(),
        503
    );
    server.shared.publish(snapshot(1.0));
    assert_eq!(
        client.get(plain("/readyz")).send().await.unwrap().status(),
        200
    );
    assert_eq!(
        client.get(plain("/healthz")).send().await.unwrap().status(),
        200
    );
    let metrics = client
        .get(plain("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("prescale_series{status=\"ok\"} 2"),
        "{metrics}"
    );
    let debug: Value = client
        .get(plain("/debug/signals"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(debug["metrics"][0]["name"], "queue_depth");
    server.stop().await;
}

#[tokio::test]
async fn slow_clients_are_cut_off() {
    let limits = Limits {
        header_read_timeout: Duration::from_millis(300),
        tls_handshake_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let server = start(limits).await;
    // Half a request head on the plain port, then silence.
    let mut tcp = tokio::net::TcpStream::connect(server.plain).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "connection closed by the server");
    // No TLS handshake at all on the HTTPS port.
    let mut tcp = tokio::net::TcpStream::connect(server.https).await.unwrap();
    let read = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "handshake timeout closes the connection");
    server.stop().await;
}

#[tokio::test]
async fn oversized_request_heads_are_refused() {
    let server = start(Limits::default()).await;
    let client = reqwest::Client::new();
    let response = client
        .get(format!("http://{}/healthz", server.plain))
        .header("X-Big", "a".repeat(100 * 1024))
        .send()
        .await;
    // hyper answers 431 or just closes the connection; it must not serve it.
    if let Ok(r) = response {
        assert_eq!(r.status(), 431);
    }
    server.stop().await;
}

/// The aggregation layer may speak HTTP/2 (negotiated by ALPN): the same answer.
#[tokio::test]
async fn http2_by_alpn_serves_the_same_answer() {
    let server = start(Limits::default()).await;
    server.shared.publish(snapshot(12.5));
    let identity = server.front_proxy_ca.client(FRONT_PROXY_CN);
    let mut config = pki::client_config(&server.server_pair.cert_pem, Some(&identity));
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(server.https).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    for _ in 0..3 {
        let request = hyper::Request::get(format!(
            "https://127.0.0.1:{}{VALUE_PATH}?labelSelector=queue%3Dorders",
            server.https.port()
        ))
        .header("X-Remote-User", HPA)
        .body(axum::body::Body::empty())
        .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.version(), hyper::Version::HTTP_2);
        let body = axum::body::to_bytes(axum::body::Body::new(response.into_body()), 1 << 20)
            .await
            .unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["items"][0]["value"], "12500m");
    }
    server.stop().await;
}

/// A header limit below hyper's minimum is raised to it rather than crashing
/// every connection.
#[tokio::test]
async fn tiny_header_limit_is_clamped_not_fatal() {
    let server = start(Limits {
        max_header_bytes: 16,
        ..Limits::default()
    })
    .await;
    let response = reqwest::Client::new()
        .get(format!("http://{}/healthz", server.plain))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    server.stop().await;
}
