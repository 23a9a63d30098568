//! The expander over real TLS on loopback, spoken to by clients of three
//! cluster-autoscaler wire generations:
//! - ≤ 1.33: template nodes and pods as embedded messages (fields 2 and 4) only;
//! - 1.34: both the messages and their serialized bytes (fields 2–5);
//! - ≥ 1.35: serialized bytes only (fields 3 and 5), from a proto without 2 and 4.
//!
//! The clients are generated from tests/proto/ (by build.rs), independently of the
//! server's own proto, so the tests check the wire, not a shared type.

use std::collections::{BTreeMap, HashMap};

use prescale::expander;
use prescale::plan::nodepool::{
    plan, Plan, PoolShape, PoolSpec, PoolState, Resources, WorkloadShape, WorkloadSpec,
};
use prost::Message;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

use crate::support;
use crate::support::expander::{ca134, ca135, Running};

const GI: u64 = 1 << 30;

/// Pools: `app` (8 cpu / 32Gi) identified only by the node label `pool=app`, short
/// of nodes; `db` (8 cpu / 64Gi) by the node group id `db-asg`, not short.
fn seed_plan() -> Plan {
    let pools = [
        PoolSpec::try_new(PoolShape {
            name: "app".into(),
            node_group_ids: vec![],
            node_labels: BTreeMap::from([("pool".into(), "app".into())]),
            allocatable: Resources::new(8000, 32 * GI),
            max_pods_per_node: 58,
            daemonset_overhead: Resources::new(200, GI / 2),
            daemonset_pods: 3,
            provisioning_delay_s: 150,
            min_nodes: 3,
            max_nodes: 20,
        })
        .unwrap(),
        PoolSpec::try_new(PoolShape {
            name: "db".into(),
            node_group_ids: vec!["db-asg".into()],
            node_labels: BTreeMap::new(),
            allocatable: Resources::new(8000, 64 * GI),
            max_pods_per_node: 58,
            daemonset_overhead: Resources::new(200, GI / 2),
            daemonset_pods: 3,
            provisioning_delay_s: 150,
            min_nodes: 2,
            max_nodes: 8,
        })
        .unwrap(),
    ];
    let workloads = [
        WorkloadSpec::try_new(WorkloadShape {
            name: "web".into(),
            pool: "app".into(),
            target_per_replica: 100.0,
            pod_requests: Resources::new(1500, 2 * GI),
            min_replicas: 3,
            max_replicas: 100,
        })
        .unwrap()
        .with_forecast(Some(2400.0))
        .with_current_replicas(12),
        WorkloadSpec::try_new(WorkloadShape {
            name: "pg".into(),
            pool: "db".into(),
            target_per_replica: 1.0,
            pod_requests: Resources::new(6000, 48 * GI),
            min_replicas: 2,
            max_replicas: 8,
        })
        .unwrap()
        .with_forecast(Some(2.0))
        .with_current_replicas(2),
    ];
    let state = BTreeMap::from([
        ("app".to_string(), PoolState { current_nodes: 3 }),
        ("db".to_string(), PoolState { current_nodes: 2 }),
    ]);
    plan(&pools, &workloads, &state, 0)
}

async fn start(plan: Option<Plan>) -> Running {
    start_with(plan, expander::Metrics::unregistered()).await
}

async fn start_with(plan: Option<Plan>, metrics: expander::Metrics) -> Running {
    support::expander::start(plan, metrics).await
}

fn q(s: &str) -> ca134::Quantity {
    ca134::Quantity {
        string: Some(s.into()),
    }
}

fn node(pool: &str, cpu: &str, memory: &str) -> ca134::Node {
    ca134::Node {
        metadata: Some(ca134::ObjectMeta {
            name: Some(format!("template-{pool}")),
            namespace: None,
            labels: HashMap::from([
                ("pool".to_string(), pool.to_string()),
                ("kubernetes.io/os".to_string(), "linux".to_string()),
            ]),
        }),
        spec: Some(ca134::NodeSpec {
            provider_id: Some("aws:///eu-west-1a/i-0".into()),
            taints: vec![],
        }),
        status: Some(ca134::NodeStatus {
            capacity: HashMap::from([("cpu".into(), q("8")), ("memory".into(), q("32Gi"))]),
            allocatable: HashMap::from([
                ("cpu".into(), q(cpu)),
                ("memory".into(), q(memory)),
                ("pods".into(), q("58")),
            ]),
        }),
    }
}

fn pod(name: &str, cpu: &str, memory: &str) -> ca134::Pod {
    ca134::Pod {
        metadata: Some(ca134::ObjectMeta {
            name: Some(name.into()),
            namespace: Some("shop".into()),
            labels: HashMap::new(),
        }),
        spec: Some(ca134::PodSpec {
            containers: vec![ca134::Container {
                name: Some("app".into()),
                image: Some("registry.example/web:1".into()),
                resources: Some(ca134::ResourceRequirements {
                    limits: HashMap::new(),
                    requests: HashMap::from([("cpu".into(), q(cpu)), ("memory".into(), q(memory))]),
                }),
            }],
            node_name: None,
            init_containers: vec![],
        }),
    }
}

/// The offered options: a db node group (by id) and an app node group known only
/// by its template's labels, each for one pending web pod.
fn templates() -> Vec<(&'static str, ca134::Node)> {
    vec![
        ("db-asg", node("db", "7800m", "62Gi")),
        ("eks-app-2a-0f3c", node("app", "7800m", "30Gi")),
    ]
}

fn old_request(with_bytes: bool, with_messages: bool) -> ca134::BestOptionsRequest {
    let pending = pod("web-7d9-abcde", "1500m", "2Gi");
    let options = templates()
        .iter()
        .map(|(id, _)| ca134::Option {
            node_group_id: Some(id.to_string()),
            node_count: Some(1),
            debug: Some(format!("offered {id}")),
            pod: if with_messages {
                vec![pending.clone()]
            } else {
                vec![]
            },
            pod_bytes: if with_bytes {
                vec![pending.encode_to_vec()]
            } else {
                vec![]
            },
        })
        .collect();
    ca134::BestOptionsRequest {
        options,
        node_map: if with_messages {
            templates()
                .into_iter()
                .map(|(id, n)| (id.to_string(), n))
                .collect()
        } else {
            HashMap::new()
        },
        node_bytes_map: if with_bytes {
            templates()
                .into_iter()
                .map(|(id, n)| (id.to_string(), n.encode_to_vec()))
                .collect()
        } else {
            HashMap::new()
        },
    }
}

fn assert_chose_app(ids: &[String], debugs: &[String]) {
    assert_eq!(ids, ["eks-app-2a-0f3c"], "debug: {debugs:?}");
    // 24 web pods of 1500m on 7800m-200m nodes: 5 per node, 5 nodes; has 3.
    assert!(
        debugs[0].contains("pool app is short 2 node(s) at now+150s"),
        "{}",
        debugs[0]
    );
    assert!(
        debugs[0].contains("web forecast 2400.0 -> 24 replicas"),
        "{}",
        debugs[0]
    );
}

#[tokio::test]
async fn old_clients_send_messages_in_fields_2_and_4() {
    let server = start(Some(seed_plan())).await;
    let mut client = ca134::expander_client::ExpanderClient::new(server.channel().await);
    let resp = client
        .best_options(old_request(false, true))
        .await
        .unwrap()
        .into_inner();
    // The app node group is known only by its template's labels (field 2): choosing
    // it proves the embedded Node was decoded.
    let ids: Vec<String> = resp
        .options
        .iter()
        .map(|o| o.node_group_id().to_string())
        .collect();
    let debugs: Vec<String> = resp.options.iter().map(|o| o.debug().to_string()).collect();
    assert_chose_app(&ids, &debugs);
    // The chosen option comes back without its pods: the cluster-autoscaler reads
    // only the node group id, and echoed pods could exceed its 4 MiB receive limit.
    assert!(resp.options[0].pod.is_empty());
    assert!(resp.options[0].pod_bytes.is_empty());

    // A pod in field 4 with a request that is not a quantity: InvalidArgument.
    let mut bad = old_request(false, true);
    bad.options[1].pod[0].spec.as_mut().unwrap().containers[0]
        .resources
        .as_mut()
        .unwrap()
        .requests
        .insert("cpu".into(), q("one and a half"));
    let status = client.best_options(bad).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status
            .message()
            .contains("options[1].pod[0].spec.containers[0].resources.requests[\"cpu\"]"),
        "{}",
        status.message()
    );
    server.stop().await;
}

#[tokio::test]
async fn transitional_clients_send_both_and_bytes_win() {
    let server = start(Some(seed_plan())).await;
    let mut client = ca134::expander_client::ExpanderClient::new(server.channel().await);
    let resp = client
        .best_options(old_request(true, true))
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<String> = resp
        .options
        .iter()
        .map(|o| o.node_group_id().to_string())
        .collect();
    let debugs: Vec<String> = resp.options.iter().map(|o| o.debug().to_string()).collect();
    assert_chose_app(&ids, &debugs);

    // Field 2 says the app group is a db node, field 3 that it is an app node: the
    // bytes (3) are preferred, so the choice is unchanged...
    let mut req = old_request(true, true);
    req.node_map
        .insert("eks-app-2a-0f3c".into(), node("db", "7800m", "62Gi"));
    let resp = client.best_options(req).await.unwrap().into_inner();
    assert_eq!(resp.options.len(), 1);
    assert_eq!(resp.options[0].node_group_id(), "eks-app-2a-0f3c");
    // ...and garbage in field 3 is reported even though field 2 is fine.
    let mut req = old_request(true, true);
    req.node_bytes_map
        .insert("eks-app-2a-0f3c".into(), vec![0x0a, 0xff, 0x01]);
    let status = client.best_options(req).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status
            .message()
            .starts_with("nodeBytesMap[\"eks-app-2a-0f3c\"]: not a Kubernetes core/v1 Node"),
        "{}",
        status.message()
    );
    server.stop().await;
}

fn new_request() -> ca135::BestOptionsRequest {
    let pending = pod("web-7d9-fghij", "1500m", "2Gi").encode_to_vec();
    ca135::BestOptionsRequest {
        options: templates()
            .iter()
            .map(|(id, _)| ca135::Option {
                node_group_id: id.to_string(),
                node_count: 1,
                debug: String::new(),
                pod_bytes: vec![pending.clone()],
            })
            .collect(),
        node_bytes_map: templates()
            .into_iter()
            .map(|(id, n)| (id.to_string(), n.encode_to_vec()))
            .collect(),
    }
}

#[tokio::test]
async fn new_clients_send_bytes_in_fields_3_and_5_only() {
    let server = start(Some(seed_plan())).await;
    let mut client = ca135::expander_client::ExpanderClient::new(server.channel().await);
    let resp = client
        .best_options(new_request())
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<String> = resp
        .options
        .iter()
        .map(|o| o.node_group_id.clone())
        .collect();
    let debugs: Vec<String> = resp.options.iter().map(|o| o.debug.clone()).collect();
    assert_chose_app(&ids, &debugs);

    // Malformed node bytes: a clear status, and the server keeps serving.
    let mut bad = new_request();
    bad.node_bytes_map
        .insert("db-asg".into(), b"not protobuf at all".to_vec());
    let status = client.best_options(bad).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("nodeBytesMap[\"db-asg\"]"),
        "{}",
        status.message()
    );
    // Malformed pod bytes likewise.
    let mut bad = new_request();
    bad.options[0].pod_bytes = vec![vec![0x12, 0x80]];
    let status = client.best_options(bad).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status
            .message()
            .starts_with("options[0].podBytes[0]: not a Kubernetes core/v1 Pod"),
        "{}",
        status.message()
    );

    let again = client
        .best_options(new_request())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.options.len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn decisions_are_counted_over_the_wire() {
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = expander::Metrics::new(&mut registry);
    let server = start_with(Some(seed_plan()), metrics).await;
    let mut client = ca134::expander_client::ExpanderClient::new(server.channel().await);
    client.best_options(old_request(false, true)).await.unwrap();
    let mut unknown = old_request(false, true);
    unknown.options[0].node_group_id = Some("gpu-asg".into());
    client.best_options(unknown).await.unwrap();
    let mut bad = old_request(false, true);
    bad.options[0].node_count = Some(-3);
    client.best_options(bad).await.unwrap_err();
    server.stop().await;

    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    for want in [
        r#"prescale_expander_decisions_total{result="chose",reason="shortfall",pool="app"} 1"#,
        r#"prescale_expander_decisions_total{result="abstained",reason="unknown_node_group",pool=""} 1"#,
        r#"prescale_expander_decisions_total{result="error",reason="bad_node_count",pool=""} 1"#,
        r#"prescale_expander_request_duration_seconds_count{result="chose"} 1"#,
    ] {
        assert!(text.contains(want), "missing {want}\n{text}");
    }
}

/// What the cluster-autoscaler reads back from an option: its group and count.
fn ids_and_counts(options: &[ca135::Option]) -> Vec<(String, i32)> {
    options
        .iter()
        .map(|o| (o.node_group_id.clone(), o.node_count))
        .collect()
}

#[tokio::test]
async fn the_response_is_never_empty() {
    // No plan at all: every option (ids and counts; the pods are not sent back).
    let server = start(None).await;
    let mut client = ca135::expander_client::ExpanderClient::new(server.channel().await);
    let req = new_request();
    let resp = client.best_options(req.clone()).await.unwrap().into_inner();
    assert_eq!(ids_and_counts(&resp.options), ids_and_counts(&req.options));
    server.stop().await;

    // A plan, but a node group no pool claims: every option.
    let server = start(Some(seed_plan())).await;
    let mut client = ca135::expander_client::ExpanderClient::new(server.channel().await);
    let mut req = new_request();
    req.options.push(ca135::Option {
        node_group_id: "gpu-asg".into(),
        node_count: 2,
        debug: String::new(),
        pod_bytes: vec![],
    });
    let resp = client.best_options(req.clone()).await.unwrap().into_inner();
    assert_eq!(ids_and_counts(&resp.options), ids_and_counts(&req.options));
    // No options offered: nothing to return but nothing to cancel either.
    let resp = client
        .best_options(ca135::BestOptionsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(resp.options.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn the_server_certificate_must_match_the_dialled_name() {
    let server = start(Some(seed_plan())).await;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&server.ca_pem))
        .domain_name("some-other-name.example");
    let channel = Channel::from_shared(format!("https://127.0.0.1:{}", server.addr.port()))
        .unwrap()
        .tls_config(tls)
        .unwrap();
    // The handshake fails at connect or, if the channel connects lazily, at the call.
    if let Ok(channel) = channel.connect().await {
        let mut client = ca135::expander_client::ExpanderClient::new(channel);
        assert!(
            client.best_options(new_request()).await.is_err(),
            "a wrong name must fail the handshake"
        );
    }
    server.stop().await;
}
