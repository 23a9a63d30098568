//! BestOptions latency: 50 options over a cluster of 1000 node groups (each with a
//! serialized template node, as cluster-autoscaler ≥ 1.34 sends them), 10 pending
//! pods per option.
//!
//! Criterion times the in-process answer (decode + score); after it, the bench
//! prints p50/p99 of the in-process answer and of the full call over TLS on
//! loopback with a tonic client (goal: p99 ≤ 5 ms).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use prescale::clock::SimClock;
use prescale::expander::{self, k8s, pb, Expander};
use prescale::plan::nodepool::{
    plan, Plan, PoolShape, PoolSpec, PoolState, Resources, WorkloadShape, WorkloadSpec,
};
use prescale::snapshot::{Shared, Snapshot};
use prost::Message;

const GROUPS: usize = 1000;
const OPTIONS: usize = 50;
const PODS_PER_OPTION: usize = 10;
const POOLS: usize = 10;
const GI: u64 = 1 << 30;
const DNS_NAME: &str = "prescale.bench.svc";

fn q(s: &str) -> k8s::Quantity {
    k8s::Quantity { string: s.into() }
}

fn node(i: usize) -> Vec<u8> {
    let labels = BTreeMap::from([
        ("pool".to_string(), format!("p{}", i % POOLS)),
        (
            "topology.kubernetes.io/zone".to_string(),
            format!("eu-west-1{}", ["a", "b", "c"][i % 3]),
        ),
        (
            "node.kubernetes.io/instance-type".to_string(),
            "c5.2xlarge".to_string(),
        ),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
    ]);
    k8s::Node {
        metadata: Some(k8s::ObjectMeta {
            name: format!("template-node-for-ng-{i}"),
            namespace: String::new(),
            labels,
        }),
        spec: Some(k8s::NodeSpec {
            taints: vec![k8s::Taint {
                key: "dedicated".into(),
                value: format!("p{}", i % POOLS),
                effect: "NoSchedule".into(),
            }],
        }),
        status: Some(k8s::NodeStatus {
            capacity: BTreeMap::from([
                ("cpu".into(), q("8")),
                ("memory".into(), q("16Gi")),
                ("pods".into(), q("58")),
            ]),
            allocatable: BTreeMap::from([
                ("cpu".into(), q(&format!("{}m", 7800 + (i % 7) * 10))),
                ("memory".into(), q("15Gi")),
                ("pods".into(), q("58")),
            ]),
        }),
    }
    .encode_to_vec()
}

fn pod(j: usize) -> Vec<u8> {
    let requests = BTreeMap::from([
        ("cpu".into(), q(&format!("{}m", 250 + (j % 8) * 125))),
        ("memory".into(), q(&format!("{}Mi", 512 + (j % 5) * 256))),
    ]);
    k8s::Pod {
        metadata: Some(k8s::ObjectMeta {
            name: format!("web-5d8f-{j:05}"),
            namespace: "shop".into(),
            labels: BTreeMap::new(),
        }),
        spec: Some(k8s::PodSpec {
            containers: vec![k8s::Container {
                name: "app".into(),
                resources: Some(k8s::ResourceRequirements {
                    limits: requests.clone(),
                    requests,
                }),
            }],
            init_containers: vec![],
            overhead: BTreeMap::new(),
        }),
    }
    .encode_to_vec()
}

fn request() -> pb::BestOptionsRequest {
    let node_bytes_map: HashMap<String, Vec<u8>> =
        (0..GROUPS).map(|i| (format!("ng-{i}"), node(i))).collect();
    let options = (0..OPTIONS)
        .map(|o| pb::Option {
            // Spread over the cluster's node groups.
            node_group_id: format!("ng-{}", o * (GROUPS / OPTIONS) + 3),
            node_count: 1 + (o % 4) as i32,
            debug: String::new(),
            pod: vec![],
            pod_bytes: (0..PODS_PER_OPTION)
                .map(|j| pod(o * PODS_PER_OPTION + j))
                .collect(),
        })
        .collect();
    pb::BestOptionsRequest {
        options,
        node_map: HashMap::new(),
        node_bytes_map,
    }
}

fn seed_plan() -> Plan {
    let pools: Vec<PoolSpec> = (0..POOLS)
        .map(|p| {
            PoolSpec::try_new(PoolShape {
                name: format!("p{p}"),
                node_group_ids: vec![],
                node_labels: BTreeMap::from([("pool".to_string(), format!("p{p}"))]),
                allocatable: Resources::new(7800, 15 * GI),
                max_pods_per_node: 58,
                daemonset_overhead: Resources::new(300, GI),
                daemonset_pods: 4,
                provisioning_delay_s: 150,
                min_nodes: 2,
                max_nodes: 200,
            })
            .unwrap()
        })
        .collect();
    let workloads: Vec<WorkloadSpec> = (0..POOLS * 3)
        .map(|w| {
            WorkloadSpec::try_new(WorkloadShape {
                name: format!("w{w}"),
                pool: format!("p{}", w % POOLS),
                target_per_replica: 50.0,
                pod_requests: Resources::new(500, GI),
                min_replicas: 2,
                max_replicas: 500,
            })
            .unwrap()
            .with_forecast(Some(1000.0 + 137.0 * w as f64))
            .with_current_replicas(10)
        })
        .collect();
    let state = (0..POOLS)
        .map(|p| (format!("p{p}"), PoolState { current_nodes: 5 }))
        .collect();
    plan(&pools, &workloads, &state, 0)
}

fn service() -> Expander {
    let shared = Shared::new();
    shared.publish(Snapshot {
        plan: Some(Arc::new(seed_plan())),
        ..Snapshot::default()
    });
    Expander::new(
        shared,
        Arc::new(SimClock::new(1)),
        expander::DEFAULT_MAX_PLAN_AGE_MS,
    )
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn report(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    // The machine may be shared: the load average says how much the tail owes to it.
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load.split_whitespace().next().unwrap_or("?").to_string();
    println!(
        "{what}: n={} p50={:.3}ms p99={:.3}ms max={:.3}ms (goal p99 <= 5ms; load average {load} on {} cpus)",
        samples.len(),
        percentile(&samples, 0.50).as_secs_f64() * 1e3,
        percentile(&samples, 0.99).as_secs_f64() * 1e3,
        samples.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        std::thread::available_parallelism().map_or(0, usize::from),
    );
}

fn bench(c: &mut Criterion) {
    let svc = service();
    let req = request();
    let check = svc.answer(req.clone()).expect("bench request decodes");
    assert!(!check.options.is_empty());

    c.bench_function(
        "expander/best_options 50 options x 1000 nodes (in process)",
        |b| {
            b.iter_batched(
                || req.clone(),
                |r| svc.answer(r).expect("answer"),
                BatchSize::SmallInput,
            )
        },
    );

    // p99 of the in-process answer.
    let samples = (0..1000)
        .map(|_| {
            let r = req.clone();
            let t = Instant::now();
            let out = svc.answer(r).expect("answer");
            let d = t.elapsed();
            assert!(!out.options.is_empty());
            d
        })
        .collect();
    report("in-process answer", samples);

    // p99 of the whole call over TLS on loopback.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let samples = rt.block_on(over_tls(svc, req));
    report("gRPC call over TLS on loopback", samples);
}

async fn over_tls(svc: Expander, req: pb::BestOptionsRequest) -> Vec<Duration> {
    use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
    let cert = rcgen::generate_simple_self_signed(vec![DNS_NAME.to_string()]).expect("certificate");
    let identity = Identity::from_pem(cert.cert.pem(), cert.signing_key.serialize_pem());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(expander::serve(listener, identity, svc, async {
        let _ = stopped.await;
    }));
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(cert.cert.pem()))
        .domain_name(DNS_NAME);
    let channel = Channel::from_shared(format!("https://127.0.0.1:{port}"))
        .expect("uri")
        .tls_config(tls)
        .expect("tls")
        .connect()
        .await
        .expect("connect");
    let mut client =
        pb::expander_client::ExpanderClient::new(channel).max_decoding_message_size(64 << 20);
    let mut samples = Vec::with_capacity(300);
    for i in 0..320 {
        let r = req.clone();
        let t = Instant::now();
        let out = client.best_options(r).await.expect("call").into_inner();
        let d = t.elapsed();
        assert!(!out.options.is_empty());
        if i >= 20 {
            samples.push(d); // the first calls warm the connection
        }
    }
    let _ = stop.send(());
    let _ = server.await;
    samples
}

criterion_group!(benches, bench);
criterion_main!(benches);
