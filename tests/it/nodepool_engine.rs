//! The node-pool path end to end in memory: a recorded signal replayed by the file
//! source on a simulated clock, the engine's forecast of a workload at now +
//! provisioning delay + pod start-up, the published `prescale_nodepool_*` external
//! metrics as the API serves them (and as the balloon HPA reads them), and the
//! gRPC expander choosing a node group by the same plan.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use prost::Message;
use tower::ServiceExt;

use prescale::api::auth::AuthMode;
use prescale::api::{router, AppState};
use prescale::clock::SimClock;
use prescale::config::Config;
use prescale::engine::nodepools::{
    NodePools, Observation, Planner, PoolObservation, StaticCluster, BALLOONS_METRIC, NODES_METRIC,
};
use prescale::engine::{Engine, Metrics, SignalSettings};
use prescale::expander::{k8s, pb, Expander};
use prescale::plan::nodepool::hpa_replicas;
use prescale::quantity::Quantity;
use prescale::series::{LabeledSeries, Series};
use prescale::snapshot::{Shared, Status};
use prescale::source::file::FileSource;

const STEP: i64 = 3_600_000;
/// Hour 8 of a day: the spike (hours 10-12) is 2-4 steps ahead.
const NOW: i64 = STEP * (24 * 100 + 8);

/// Requests per second of the web tier: 1000, and 3350 from 10:00 to 13:00 every
/// day. The other series belongs to another service.
fn rps(ts_ms: i64, service: &str) -> f64 {
    if service != "web" {
        return 50_000.0;
    }
    let hour = (ts_ms / STEP).rem_euclid(24);
    if (10..13).contains(&hour) {
        3350.0
    } else {
        1000.0
    }
}

fn recording(service: &str) -> LabeledSeries {
    let n = 200;
    let start = NOW - (n - 1) * STEP;
    let values = (0..n).map(|i| rps(start + i * STEP, service)).collect();
    LabeledSeries {
        labels: [("service".to_string(), service.to_string())].into(),
        series: Series {
            start_ms: start,
            step_ms: STEP,
            values,
        },
    }
}

/// The configuration, through the real parser: the seeds' application pool
/// (c5.2xlarge, 3-20 nodes) and database pool (r5.2xlarge, 2-8), with a
/// provisioning delay of 2h so that, on this hourly grid, the pool looks 3 steps
/// ahead (2h + 30m pod start-up) where the signal serves 1 step ahead.
const CONFIG: &str = "
prometheus:
  url: http://127.0.0.1:9090
signals:
  - name: http_requests_per_second
    query: rps
    step: 1h
    history: 200h
    lead_time: 1h
    min_history: 20h
    refit_interval: 10h
    max_staleness: 3h
    model: seasonal-naive
nodepools:
  - name: application
    node_group_ids: [application-c5-2xlarge]
    allocatable: { cpu: 7910m, memory: 14500Mi }
    daemonset_overhead: { cpu: 150m, memory: 256Mi, pods: 3 }
    max_pods_per_node: 58
    provisioning_delay: 2h
    min_nodes: 3
    max_nodes: 20
  - name: database
    node_labels: { pool: database }
    allocatable: { cpu: 7910m, memory: 61Gi }
    max_pods_per_node: 58
    provisioning_delay: 3m
    min_nodes: 2
    max_nodes: 8
workloads:
  - name: web
    signal: http_requests_per_second
    series: { service: web }
    target_per_replica: 100
    pod_requests: { cpu: 1, memory: 2Gi }
    pool: application
    min_replicas: 3
    max_replicas: 100
    pod_startup: 30m
    replicas: { namespace: shop, pod_labels: { app: web } }
  - name: qdrant
    signal: http_requests_per_second
    series: { service: search }
    target_per_replica: 100000
    pod_requests: { cpu: 3, memory: 24Gi }
    pool: database
    min_replicas: 2
    max_replicas: 4
expander: {}
server:
  tls: { dns_names: [prescale.prescale.svc] }
";

async fn request(app: axum::Router, uri: &str) -> (StatusCode, serde_json::Value) {
    let response = app
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let code = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (code, serde_json::from_slice(&bytes).unwrap())
}

/// What an HPA with an `AverageValue` target of `target_milli` does with a served
/// Quantity string.
fn hpa(value: &str, target_milli: u64) -> u64 {
    let milli = Quantity::parse(value).unwrap().milli_ceil();
    hpa_replicas(u64::try_from(milli).unwrap(), target_milli)
}

fn node_bytes(labels: &[(&str, &str)], cpu: &str, memory: &str) -> Vec<u8> {
    let q = |s: &str| k8s::Quantity { string: s.into() };
    k8s::Node {
        metadata: Some(k8s::ObjectMeta {
            name: "template".into(),
            namespace: String::new(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }),
        spec: None,
        status: Some(k8s::NodeStatus {
            capacity: BTreeMap::new(),
            allocatable: BTreeMap::from([
                ("cpu".to_string(), q(cpu)),
                ("memory".to_string(), q(memory)),
            ]),
        }),
    }
    .encode_to_vec()
}

#[tokio::test]
async fn a_workload_forecast_becomes_nodepool_metrics_and_drives_the_expander() {
    let config = Config::from_yaml(CONFIG).unwrap();
    let settings: Vec<SignalSettings> = config
        .signals
        .iter()
        .map(|s| SignalSettings::from_config(s).unwrap())
        .collect();
    let source =
        FileSource::new(NOW).with_recording("rps", vec![recording("web"), recording("search")]);
    let clock = Arc::new(SimClock::new(NOW));
    let shared = Shared::new();
    // Now: the application pool has 3 nodes and 20 web pods; the database pool
    // 2 nodes; qdrant's pods are not counted (its minimum is assumed).
    let cluster = Arc::new(StaticCluster::new(Some(Observation {
        pools: BTreeMap::from([
            (
                "application".to_string(),
                PoolObservation {
                    nodes: 3,
                    allocatable: None,
                },
            ),
            (
                "database".to_string(),
                PoolObservation {
                    nodes: 2,
                    allocatable: None,
                },
            ),
        ]),
        replicas: BTreeMap::from([("web".to_string(), 20)]),
    })));
    let nodepools = NodePools::new(Planner::new(config.planning.clone()), cluster);
    let mut engine = Engine::new(
        settings,
        Arc::new(source),
        shared.clone(),
        clock.clone(),
        Metrics::unregistered(),
    )
    .with_nodepools(nodepools);
    engine.step().await.unwrap();

    // The signal itself serves 1 step ahead: before the spike, 1000 rps, times
    // 1.1 to make up for the HPA's 10 % tolerance band (`hpa_tolerance`, default
    // 0.1): a Deployment the HPA sizes from it lands on ceil(1000 / target).
    let snapshot = shared.load();
    let signal = &snapshot.metrics["http_requests_per_second"];
    let web = signal
        .series
        .iter()
        .find(|s| s.labels["service"] == "web")
        .unwrap();
    assert_eq!(web.status, Status::Ok, "{:?}", web.detail);
    assert!(
        (web.value - 1100.0).abs() < 1.0,
        "served {} 1h ahead",
        web.value
    );

    // The pool looks 2h30m ahead (3 steps): the spike, 3350 rps, served as 3685
    // (the tolerance factor, as the HPA will see it) -> the 37 pods of 1 cpu / 2Gi
    // the HPA will ask for. Room per node 7760m / 14244Mi: 6 pods by memory -> 7
    // nodes. The 20 running pods take 4 nodes: 3 balloons; 7 - 3 = 4 nodes to add.
    let p = snapshot.plan.clone().expect("a plan is published");
    assert_eq!(p.computed_at_ms, NOW);
    let app = p.pool("application").unwrap();
    let w = &app.workloads[0];
    assert!(
        w.forecast.is_some_and(|f| (f - 3685.0).abs() < 1.0),
        "{w:?}"
    );
    assert_eq!(w.replicas, 37);
    assert_eq!(
        (
            app.nodes_needed,
            app.nodes_for_current_pods,
            app.balloons,
            app.extra_nodes
        ),
        (7, 4, 3, 4),
        "{}",
        app.reasoning
    );
    let db = p.pool("database").unwrap();
    assert_eq!(
        (db.nodes_needed, db.extra_nodes),
        (2, 0),
        "{}",
        db.reasoning
    );

    // Served through the external metrics API, read as the balloon HPA reads it
    // (averageValue "1"), the counts come back exactly.
    let state = AppState::new(
        shared.clone(),
        AuthMode::None,
        Arc::new(prometheus_client::registry::Registry::default()),
        clock.clone(),
    );
    let base = "/apis/external.metrics.k8s.io/v1beta1/namespaces/prescale-balloons";
    for (metric, pool, want) in [
        (BALLOONS_METRIC, "application", 3),
        (NODES_METRIC, "application", 7),
        // Database: qdrant's 2 minimum pods (3 cpu / 24Gi, 2 per node) need 1
        // node, the pool's minimum is 2: 2 nodes, 1 node-sized balloon.
        (BALLOONS_METRIC, "database", 1),
        (NODES_METRIC, "database", 2),
    ] {
        let (code, body) = request(
            router(state.clone()),
            &format!("{base}/{metric}?labelSelector=nodepool%3D{pool}"),
        )
        .await;
        assert_eq!(code, StatusCode::OK, "{metric} {pool}: {body}");
        let items = body["items"].as_array().unwrap();
        assert_eq!(items.len(), 1, "{body}");
        assert_eq!(items[0]["metricLabels"]["nodepool"], pool);
        let value = items[0]["value"].as_str().unwrap();
        assert_eq!(hpa(value, 1000), want, "{metric} {pool}: served {value}");
    }

    // The expander prefers the pool the plan says is short, whatever the order.
    let expander = Expander::new(shared.clone(), clock.clone(), 5 * 60 * 1000);
    let option = |id: &str| pb::Option {
        node_group_id: id.into(),
        node_count: 1,
        debug: String::new(),
        pod: vec![],
        pod_bytes: vec![],
    };
    let request = pb::BestOptionsRequest {
        options: vec![
            option("database-r5-2xlarge"),
            option("application-c5-2xlarge"),
        ],
        node_map: HashMap::new(),
        node_bytes_map: HashMap::from([
            (
                "database-r5-2xlarge".to_string(),
                node_bytes(&[("pool", "database")], "7910m", "61Gi"),
            ),
            (
                "application-c5-2xlarge".to_string(),
                node_bytes(&[], "7910m", "14500Mi"),
            ),
        ]),
    };
    let answer = expander.answer(request.clone()).unwrap();
    assert_eq!(answer.options.len(), 1);
    assert_eq!(answer.options[0].node_group_id, "application-c5-2xlarge");
    assert!(
        answer.options[0]
            .debug
            .contains("pool application is short 4 node(s)"),
        "{}",
        answer.options[0].debug
    );

    // Once the plan is older than the expander trusts, it abstains: every option.
    clock.advance(6 * 60 * 1000);
    let answer = expander.answer(request.clone()).unwrap();
    assert_eq!(answer.options, request.options);

    // The next engine step plans again from the new time.
    engine.step().await.unwrap();
    assert_eq!(
        shared.load().plan.clone().unwrap().computed_at_ms,
        NOW + 6 * 60 * 1000
    );
    let answer = expander.answer(request).unwrap();
    assert_eq!(answer.options.len(), 1);
}

#[tokio::test]
async fn a_pool_without_a_forecast_answers_503_and_the_expander_abstains() {
    // The workload's series selector matches nothing: no forecast, so the pool's
    // metrics are failed (the balloon HPA holds) and the expander returns every
    // option.
    let text = CONFIG.replace("series: { service: web }", "series: { service: gone }");
    let config = Config::from_yaml(&text).unwrap();
    let settings: Vec<SignalSettings> = config
        .signals
        .iter()
        .map(|s| SignalSettings::from_config(s).unwrap())
        .collect();
    let source = FileSource::new(NOW).with_recording("rps", vec![recording("web")]);
    let clock = Arc::new(SimClock::new(NOW));
    let shared = Shared::new();
    let mut engine = Engine::new(
        settings,
        Arc::new(source),
        shared.clone(),
        clock.clone(),
        Metrics::unregistered(),
    )
    .with_nodepools(NodePools::new(
        Planner::new(config.planning.clone()),
        // The cluster cannot be read: pools count as their minimum.
        Arc::new(StaticCluster::new(None)),
    ));
    engine.step().await.unwrap();

    let snapshot = shared.load();
    let balloons = &snapshot.metrics[BALLOONS_METRIC];
    let app = balloons
        .series
        .iter()
        .find(|s| s.labels["nodepool"] == "application")
        .unwrap();
    assert_eq!(app.status, Status::Failed);
    assert!(
        app.detail
            .reason
            .as_deref()
            .unwrap()
            .starts_with("no forecast for web"),
        "{:?}",
        app.detail.reason
    );
    let state = AppState::new(
        shared.clone(),
        AuthMode::None,
        Arc::new(prometheus_client::registry::Registry::default()),
        clock.clone(),
    );
    let (code, _) = request(
        router(state),
        "/apis/external.metrics.k8s.io/v1beta1/namespaces/x/prescale_nodepool_balloons?labelSelector=nodepool%3Dapplication",
    )
    .await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);

    let expander = Expander::new(shared.clone(), clock, 5 * 60 * 1000);
    let request = pb::BestOptionsRequest {
        options: vec![
            pb::Option {
                node_group_id: "application-c5-2xlarge".into(),
                node_count: 1,
                ..Default::default()
            },
            pb::Option {
                node_group_id: "other".into(),
                node_count: 2,
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    let answer = expander.answer(request.clone()).unwrap();
    assert_eq!(answer.options, request.options);
}
