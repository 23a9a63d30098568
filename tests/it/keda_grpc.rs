//! The KEDA external scaler over real TLS on loopback, spoken to by a real tonic
//! client: every RPC, its value against the `external.metrics.k8s.io` answer of
//! the real API server reading the same snapshot, `IsActive` from the forecast
//! while the observation is below the threshold, `StreamIsActive` pushing changes
//! and ending when the client leaves, the server stops or the value expires, the
//! refusals, and client-certificate verification.
//! (The wire against KEDA's own generated Go client: the e2e tier, tests/it/e2e/keda.rs.)

use crate::support::pki;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use prescale::api::{AuthMode, Server, Settings, TlsSource};
use prescale::clock::SimClock;
use prescale::config::Config;
use prescale::forecast::{Forecast, QuantilePath};
use prescale::keda::pb::external_scaler_client::ExternalScalerClient;
use prescale::keda::pb::{GetMetricsRequest, ScaledObjectRef};
use prescale::keda::{self, Catalog, Scaler, SharedCatalog};
use prescale::plan::ServePolicy;
use prescale::snapshot::{MetricEntry, SeriesDetail, SeriesEntry, Shared, Snapshot, Status};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic::Code;

const HOST: &str = "prescale.prescale.svc";
const NOW: i64 = 1_790_000_000_000;
const NS: &str = "shop";

/// The signals the scaler knows: `queue_depth` (hpa_target 10), `packets`
/// (none; namespace `shop` only), `latency` (a custom metric).
fn config() -> Config {
    Config::from_yaml(
        "prometheus: {url: 'http://127.0.0.1:9090'}\nsignals:\n\
         - {name: queue_depth, query: q, hpa_target: 10}\n\
         - {name: packets, query: p, namespaces: [shop]}\n\
         - name: latency\n  query: l\n  custom: {type: Object, resources: {overrides: {namespace: {resource: namespace}}}}\n",
    )
    .unwrap()
}

fn catalog() -> SharedCatalog {
    Arc::new(ArcSwap::from_pointee(Catalog::from_signals(
        &config().signals,
    )))
}

fn series(labels: &[(&str, &str)], value: f64) -> SeriesEntry {
    SeriesEntry {
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        status: Status::Ok,
        value,
        timestamp_ms: NOW - 60_000,
        window_s: 60,
        expires_ms: NOW + 300_000,
        detail: SeriesDetail::default(),
    }
}

fn entry(series: Vec<SeriesEntry>) -> MetricEntry {
    MetricEntry {
        namespaces: None,
        custom: None,
        series: series.into_iter().map(Arc::new).collect(),
        error: None,
    }
}

/// `queue_depth{queue=orders}` served `orders`, `{queue=payments}` 3.25, a
/// failed `{queue=dead}`; `packets` for namespace `shop` only; `latency` custom.
fn snapshot(orders: f64) -> Snapshot {
    let mut dead = series(&[("queue", "dead")], 7.0);
    dead.status = Status::Failed;
    dead.detail.reason = Some("the query returned an error".into());
    let mut metrics = BTreeMap::new();
    metrics.insert(
        "queue_depth".to_string(),
        entry(vec![
            series(&[("queue", "orders")], orders),
            series(&[("queue", "payments")], 3.25),
            dead,
        ]),
    );
    metrics.insert(
        "packets".to_string(),
        MetricEntry {
            namespaces: Some(vec![NS.to_string()]),
            ..entry(vec![series(&[("node", "a")], 1.0)])
        },
    );
    metrics.insert(
        "latency".to_string(),
        MetricEntry {
            custom: Some(Arc::new(
                config().signals[2]
                    .custom
                    .as_ref()
                    .unwrap()
                    .mapping("custom")
                    .unwrap(),
            )),
            ..entry(vec![series(&[("namespace", NS)], 0.2)])
        },
    );
    Snapshot {
        published_ms: NOW,
        metrics,
        plan: None,
    }
}

struct Running {
    addr: SocketAddr,
    ca: pki::Ca,
    shared: Shared,
    clock: Arc<SimClock>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), keda::Error>>,
}

impl Running {
    async fn client(&self, identity: Option<&pki::Pair>) -> ExternalScalerClient<Channel> {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca.cert_pem))
            .domain_name(HOST);
        if let Some(pair) = identity {
            tls = tls.identity(Identity::from_pem(&pair.cert_pem, &pair.key_pem));
        }
        let channel = Channel::from_shared(format!("https://127.0.0.1:{}", self.addr.port()))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect_lazy();
        ExternalScalerClient::new(channel)
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the scaler stops")
            .unwrap()
            .unwrap();
    }
}

/// The scaler over TLS for [`HOST`]; with `client_ca`, client certificates signed
/// by it are required.
async fn start(shared: Shared, clock: Arc<SimClock>, client_ca: Option<&pki::Ca>) -> Running {
    let ca = pki::Ca::new("keda-test-ca");
    let pair = ca.server(&[HOST]);
    let tls = keda::Tls {
        identity: Identity::from_pem(&pair.cert_pem, &pair.key_pem),
        client_ca: client_ca.map(|c| Certificate::from_pem(&c.cert_pem)),
    };
    let scaler = Scaler::new(shared.clone(), clock.clone(), catalog());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(keda::serve(listener, tls, scaler, async {
        let _ = stopped.await;
    }));
    Running {
        addr,
        ca,
        shared,
        clock,
        stop: Some(stop),
        task,
    }
}

async fn published(orders: f64) -> Running {
    let shared = Shared::new();
    shared.publish(snapshot(orders));
    start(shared, Arc::new(SimClock::new(NOW)), None).await
}

fn object(pairs: &[(&str, &str)]) -> ScaledObjectRef {
    ScaledObjectRef {
        name: "worker".into(),
        namespace: NS.into(),
        scaler_metadata: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<HashMap<_, _>>(),
    }
}

fn metrics_request(pairs: &[(&str, &str)]) -> GetMetricsRequest {
    GetMetricsRequest {
        scaled_object_ref: Some(object(pairs)),
        metric_name: "queue_depth".into(),
    }
}

/// What `external.metrics.k8s.io` answers for `selector`, read through the real
/// API server (no authentication, on loopback) over the same snapshot and clock:
/// the item's value in milli-units.
async fn external_api_milli(shared: &Shared, clock: Arc<SimClock>, selector: &str) -> i64 {
    let pair = pki::server_pair();
    let settings = Settings::new(
        "127.0.0.1:0".parse().unwrap(),
        "127.0.0.1:0".parse().unwrap(),
        TlsSource::Pem {
            cert_pem: pair.cert_pem.clone(),
            key_pem: pair.key_pem.clone(),
        },
        AuthMode::None,
    );
    let server = Server::bind(
        settings,
        shared.clone(),
        Arc::new(prometheus_client::registry::Registry::default()),
        clock,
    )
    .await
    .unwrap();
    let https = server.https_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    let client = pki::http_client(pki::client_config(&pair.cert_pem, None));
    let body: serde_json::Value = client
        .get(format!(
            "https://127.0.0.1:{}/apis/external.metrics.k8s.io/v1beta1/namespaces/{NS}/queue_depth",
            https.port()
        ))
        .query(&[("labelSelector", selector)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let _ = stop.send(());
    let _ = task.await;
    let items = body["items"].as_array().expect("a MetricValueList");
    assert_eq!(items.len(), 1, "{body}");
    let value = prescale::quantity::parse_f64(items[0]["value"].as_str().unwrap()).unwrap();
    (value * 1000.0).round() as i64
}

#[tokio::test]
async fn every_rpc_over_tls_matches_the_external_api() {
    // 141.0806 is served as the Quantity "141081m": the scaler gives the same number.
    let running = published(141.0806).await;
    let mut client = running.client(None).await;
    let orders = [("signal", "queue_depth"), ("series", "queue=orders")];

    let spec = client
        .get_metric_spec(object(&orders))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(spec.metric_specs.len(), 1);
    assert_eq!(spec.metric_specs[0].metric_name, "queue_depth");
    assert_eq!(
        spec.metric_specs[0].target_size_float, 10.0,
        "the signal's hpa_target"
    );
    assert_eq!(spec.metric_specs[0].target_size, 10);
    let given = client
        .get_metric_spec(object(&[("signal", "queue_depth"), ("target", "2500m")]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(given.metric_specs[0].target_size_float, 2.5);
    assert_eq!(given.metric_specs[0].target_size, 3);

    let values = client
        .get_metrics(metrics_request(&orders))
        .await
        .unwrap()
        .into_inner()
        .metric_values;
    assert_eq!(values.len(), 1);
    assert_eq!(values[0].metric_name, "queue_depth");
    assert_eq!(values[0].metric_value_float, 141.081);
    assert_eq!(values[0].metric_value, 142, "rounded up for old KEDAs");
    let api = external_api_milli(&running.shared, running.clock.clone(), "queue=orders").await;
    assert_eq!(
        (values[0].metric_value_float * 1000.0).round() as i64,
        api,
        "GetMetrics and external.metrics.k8s.io disagree"
    );

    // A fractional value, selected with set syntax.
    let payments = [("signal", "queue_depth"), ("series", "queue in (payments)")];
    let v = client
        .get_metrics(metrics_request(&payments))
        .await
        .unwrap()
        .into_inner()
        .metric_values[0]
        .metric_value_float;
    assert_eq!(v, 3.25);
    assert_eq!(
        (v * 1000.0).round() as i64,
        external_api_milli(
            &running.shared,
            running.clock.clone(),
            "queue in (payments)"
        )
        .await
    );

    for (threshold, want) in [("141", true), ("141.081", false), ("0", true)] {
        let active = client
            .is_active(object(&[
                ("signal", "queue_depth"),
                ("series", "queue=orders"),
                ("activationThreshold", threshold),
            ]))
            .await
            .unwrap()
            .into_inner()
            .result;
        assert_eq!(active, want, "activationThreshold {threshold}");
    }
    running.stop().await;
}

#[tokio::test]
async fn is_active_from_the_forecast_while_the_observation_is_below_the_threshold() {
    // The load is rising: observed 18 now, the q0.9 forecast reaches 128.25 within
    // the lead time. Served value by prescale's own rule (no tolerance factor, so
    // the forecast alone makes the difference).
    let forecast = Forecast {
        mean: vec![25.0, 60.0, 110.0],
        quantiles: vec![QuantilePath {
            q: 0.9,
            values: vec![30.0, 80.0, 128.25],
        }],
    };
    let policy = ServePolicy {
        lead_steps: 3,
        lead_ms: 0,
        tolerance: 0.0,
        quantile: 0.9,
        reactive_floor: true,
    };
    let latest = 18.0;
    let served = prescale::plan::served_value(&forecast, &policy, Some(latest)).unwrap();
    assert_eq!(served, 128.25);
    let running = published(served).await;
    let mut client = running.client(None).await;
    let threshold = 100.0;
    assert!(latest < threshold && threshold < served);
    let active = |t: f64| {
        object(&[
            ("signal", "queue_depth"),
            ("series", "queue=orders"),
            ("activationThreshold", &t.to_string()),
        ])
    };
    assert!(
        client
            .is_active(active(threshold))
            .await
            .unwrap()
            .into_inner()
            .result,
        "the forecast crosses {threshold} within the lead time; the observation ({latest}) does not"
    );
    // Only the forecast: above its peak, inactive.
    assert!(
        !client
            .is_active(active(130.0))
            .await
            .unwrap()
            .into_inner()
            .result
    );
    running.stop().await;
}

/// The stream's next item, which must come within 5 s.
async fn next(
    stream: &mut tonic::Streaming<keda::pb::IsActiveResponse>,
) -> Result<Option<keda::pb::IsActiveResponse>, tonic::Status> {
    tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("a message within 5 s")
}

#[tokio::test]
async fn stream_is_active_pushes_changes_and_ends_when_the_client_leaves() {
    let running = published(5.0).await;
    let mut client = running.client(None).await;
    let before = running.shared.subscribers();
    let trigger = object(&[
        ("signal", "queue_depth"),
        ("series", "queue=orders"),
        ("activationThreshold", "50"),
    ]);
    let mut stream = client
        .stream_is_active(trigger.clone())
        .await
        .unwrap()
        .into_inner();
    assert!(
        !next(&mut stream).await.unwrap().unwrap().result,
        "first: the current answer"
    );
    assert_eq!(running.shared.subscribers(), before + 1);

    // The forecast rises above the threshold: pushed.
    running.shared.publish(snapshot(80.0));
    assert!(next(&mut stream).await.unwrap().unwrap().result);
    // Publications that do not change the answer send nothing.
    running.shared.publish(snapshot(90.0));
    running.shared.publish(snapshot(80.0));
    assert!(
        tokio::time::timeout(Duration::from_millis(300), stream.message())
            .await
            .is_err(),
        "a message without a change"
    );
    // Back below: pushed.
    running.shared.publish(snapshot(10.0));
    assert!(!next(&mut stream).await.unwrap().unwrap().result);

    // The client goes away: the server's watcher ends.
    drop(stream);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while running.shared.subscribers() > before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stream's watcher outlived its client"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A stream open at shutdown ends cleanly (no error), and the server stops.
    let mut open = client.stream_is_active(trigger).await.unwrap().into_inner();
    assert!(!next(&mut open).await.unwrap().unwrap().result);
    let shared = running.shared.clone();
    running.stop().await;
    assert!(matches!(next(&mut open).await, Ok(None)), "not a clean end");
    assert_eq!(shared.subscribers(), before);
}

#[tokio::test]
async fn stream_is_active_ends_unavailable_when_the_value_expires() {
    // No publication at all (a hung engine): the stream wakes at the value's
    // expiry by itself.
    let mut s = snapshot(80.0);
    Arc::make_mut(&mut s.metrics.get_mut("queue_depth").unwrap().series[0]).expires_ms = NOW + 200;
    let shared = Shared::new();
    shared.publish(s);
    let running = start(shared, Arc::new(SimClock::new(NOW)), None).await;
    let mut client = running.client(None).await;
    let mut stream = client
        .stream_is_active(object(&[
            ("signal", "queue_depth"),
            ("series", "queue=orders"),
        ]))
        .await
        .unwrap()
        .into_inner();
    assert!(stream.message().await.unwrap().unwrap().result);
    running.clock.set(NOW + 1_000);
    let end = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("the stream reacts to the expiry");
    let status = end.expect_err("an error status");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status
            .message()
            .contains("older than the allowed staleness"),
        "{status:?}"
    );
    running.stop().await;
}

#[tokio::test]
async fn refusals_carry_the_codes_keda_falls_back_on() {
    let running = published(40.0).await;
    let mut client = running.client(None).await;
    let metrics = async |c: &mut ExternalScalerClient<Channel>, pairs: &[(&str, &str)]| {
        c.get_metrics(metrics_request(pairs)).await.unwrap_err()
    };
    // InvalidArgument, naming the key.
    for (pairs, key) in [
        (&[("series", "queue=orders")][..], "signal"),
        (&[("signal", "nope")][..], "signal"),
        (&[("signal", "latency")][..], "signal"),
        (
            &[("signal", "queue_depth"), ("series", "queue=(")][..],
            "series",
        ),
        (
            &[("signal", "queue_depth"), ("series", "queue!=dead")][..],
            "series",
        ),
        (
            &[
                ("signal", "queue_depth"),
                ("series", "queue=orders"),
                ("target", "-1"),
            ][..],
            "target",
        ),
        (
            &[
                ("signal", "queue_depth"),
                ("series", "queue=orders"),
                ("activationThreshold", "x"),
            ][..],
            "activationThreshold",
        ),
    ] {
        let status = metrics(&mut client, pairs).await;
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{pairs:?}: {status:?}"
        );
        assert!(
            status
                .message()
                .starts_with(&format!("scalerMetadata.{key}: ")),
            "{pairs:?}: {status:?}"
        );
    }
    let status = client
        .get_metric_spec(object(&[("signal", "packets")]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status
            .message()
            .starts_with("scalerMetadata.target: required"),
        "{status:?}"
    );
    let status = client
        .get_metrics(GetMetricsRequest {
            scaled_object_ref: None,
            metric_name: "queue_depth".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);

    // NotFound: no such series.
    let status = metrics(
        &mut client,
        &[("signal", "queue_depth"), ("series", "queue=gone")],
    )
    .await;
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    // Unavailable: a failed series (GetMetrics, IsActive and StreamIsActive alike).
    let dead = [("signal", "queue_depth"), ("series", "queue=dead")];
    assert_eq!(metrics(&mut client, &dead).await.code(), Code::Unavailable);
    assert_eq!(
        client.is_active(object(&dead)).await.unwrap_err().code(),
        Code::Unavailable
    );
    assert_eq!(
        client
            .stream_is_active(object(&dead))
            .await
            .unwrap_err()
            .code(),
        Code::Unavailable
    );
    // PermissionDenied: a namespace outside the signal's allow-list.
    let mut elsewhere = object(&[("signal", "packets"), ("target", "1")]);
    elsewhere.namespace = "other".into();
    let status = client
        .get_metrics(GetMetricsRequest {
            scaled_object_ref: Some(elsewhere.clone()),
            metric_name: "packets".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    elsewhere.namespace = NS.into();
    assert!(
        client
            .is_active(elsewhere)
            .await
            .unwrap()
            .into_inner()
            .result
    );
    // Unavailable: the source failing with no series.
    let mut failing = snapshot(40.0);
    let q = failing.metrics.get_mut("queue_depth").unwrap();
    q.series.clear();
    q.error = Some("connection refused".into());
    running.shared.publish(failing);
    let status = metrics(
        &mut client,
        &[("signal", "queue_depth"), ("series", "queue=orders")],
    )
    .await;
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("source failing"), "{status:?}");
    running.stop().await;

    // Unavailable: nothing published yet.
    let running = start(Shared::new(), Arc::new(SimClock::new(NOW)), None).await;
    let mut client = running.client(None).await;
    let status = client
        .is_active(object(&[("signal", "queue_depth")]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    // GetMetricSpec needs no snapshot.
    assert!(client
        .get_metric_spec(object(&[("signal", "queue_depth")]))
        .await
        .is_ok());
    running.stop().await;
}

#[tokio::test]
async fn client_certificates_are_required_when_a_client_ca_is_configured() {
    let clients = pki::Ca::new("keda-clients");
    let shared = Shared::new();
    shared.publish(snapshot(40.0));
    let running = start(shared, Arc::new(SimClock::new(NOW)), Some(&clients)).await;
    let trigger = object(&[("signal", "queue_depth"), ("series", "queue=orders")]);

    let keda = clients.client("keda-operator");
    let mut with_cert = running.client(Some(&keda)).await;
    assert!(
        with_cert
            .is_active(trigger.clone())
            .await
            .unwrap()
            .into_inner()
            .result
    );

    let mut without = running.client(None).await;
    let refused = without.is_active(trigger.clone()).await;
    assert!(
        refused.is_err(),
        "a client without a certificate was served"
    );

    let stranger = pki::Ca::new("someone-else").client("keda-operator");
    let mut foreign = running.client(Some(&stranger)).await;
    assert!(
        foreign.is_active(trigger).await.is_err(),
        "a certificate from another CA was accepted"
    );
    running.stop().await;
}
