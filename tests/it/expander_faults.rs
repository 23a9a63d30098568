//! The expander over real TLS on loopback against hostile and broken callers:
//! a message over the decoding limit, garbage bytes where Kubernetes Nodes and
//! Pods belong, odd node group ids, and calls the client abandons mid-flight.
//! Every failure is a clear gRPC status naming the field; every success carries
//! the options (an empty answer would cancel the cluster-autoscaler's scale-up);
//! and the server stays healthy after all of it.
//!
//! The client is generated from tests/proto/ca135 (by build.rs), independently of
//! the server's own proto.

use std::time::{Duration, Instant};

use prescale::expander::MAX_REQUEST_BYTES;
use prost::Message;
use tonic::transport::Channel;
use tonic::Code;

use crate::support::expander::{self, ca134, ca135, Running};

/// The expander with no plan: it abstains and returns every option it can decode.
async fn start() -> Running {
    expander::start(None, prescale::expander::Metrics::unregistered()).await
}

/// A client that may send anything: the server's limit is what is under test.
async fn unlimited_client(server: &Running) -> ca135::expander_client::ExpanderClient<Channel> {
    ca135::expander_client::ExpanderClient::new(server.channel().await)
        .max_encoding_message_size(usize::MAX)
        .max_decoding_message_size(usize::MAX)
}

fn q(s: &str) -> ca134::Quantity {
    ca134::Quantity {
        string: Some(s.into()),
    }
}

fn node_bytes(cpu: &str) -> Vec<u8> {
    ca134::Node {
        metadata: Some(ca134::ObjectMeta {
            name: Some("template".into()),
            namespace: None,
            labels: [("pool".to_string(), "app".to_string())].into(),
        }),
        spec: None,
        status: Some(ca134::NodeStatus {
            capacity: [("cpu".to_string(), q(cpu))].into(),
            allocatable: [
                ("cpu".to_string(), q(cpu)),
                ("memory".to_string(), q("8Gi")),
            ]
            .into(),
        }),
    }
    .encode_to_vec()
}

fn pod_bytes(cpu: &str) -> Vec<u8> {
    ca134::Pod {
        metadata: Some(ca134::ObjectMeta {
            name: Some("web".into()),
            namespace: Some("shop".into()),
            labels: Default::default(),
        }),
        spec: Some(ca134::PodSpec {
            containers: vec![ca134::Container {
                name: Some("app".into()),
                image: None,
                resources: Some(ca134::ResourceRequirements {
                    limits: Default::default(),
                    requests: [("cpu".to_string(), q(cpu))].into(),
                }),
            }],
            node_name: None,
            init_containers: vec![],
        }),
    }
    .encode_to_vec()
}

fn request(group: &str, node: Vec<u8>, pods: Vec<Vec<u8>>) -> ca135::BestOptionsRequest {
    ca135::BestOptionsRequest {
        options: vec![ca135::Option {
            node_group_id: group.to_string(),
            node_count: 1,
            debug: String::new(),
            pod_bytes: pods,
        }],
        node_bytes_map: [(group.to_string(), node)].into(),
    }
}

/// The options as the cluster-autoscaler reads them back: group and count. The
/// answer carries no pods (the cluster-autoscaler maps ids back to its own options).
fn offered(options: &[ca135::Option]) -> Vec<(String, i32)> {
    options
        .iter()
        .map(|o| (o.node_group_id.clone(), o.node_count))
        .collect()
}

/// Every option of `req` comes back, without its pods.
fn assert_all_returned(
    resp: &ca135::BestOptionsResponse,
    req: &ca135::BestOptionsRequest,
    what: &str,
) {
    assert_eq!(offered(&resp.options), offered(&req.options), "{what}");
    assert!(
        resp.options.iter().all(|o| o.pod_bytes.is_empty()),
        "{what}"
    );
}

/// A well-formed call answers with all its options (no plan: abstain).
async fn healthy(client: &mut ca135::expander_client::ExpanderClient<Channel>) {
    let req = request("ng-1", node_bytes("4"), vec![pod_bytes("1")]);
    let resp = client.best_options(req.clone()).await.unwrap().into_inner();
    assert_all_returned(&resp, &req, "healthy");
}

#[tokio::test]
async fn a_message_over_the_limit_is_out_of_range_and_the_server_lives_on() {
    let server = start().await;
    let mut client = unlimited_client(&server).await;
    let huge = vec![0u8; MAX_REQUEST_BYTES + 1];
    let started = Instant::now();
    let status = client
        .best_options(request("ng-1", node_bytes("4"), vec![huge]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(
        status.message().contains("too large"),
        "{}",
        status.message()
    );
    eprintln!(
        "refused {} bytes in {:?}",
        MAX_REQUEST_BYTES + 1,
        started.elapsed()
    );
    healthy(&mut unlimited_client(&server).await).await;
    healthy(&mut client).await;
    server.stop().await;
}

#[tokio::test]
async fn garbage_in_node_and_pod_bytes_is_invalid_argument_naming_the_field() {
    let server = start().await;
    let mut client = unlimited_client(&server).await;
    let garbage: &[&[u8]] = &[
        &[0xff, 0xff, 0xff],
        &[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f],
        b"\x12\x05abc",
        b"{\"kind\":\"Node\"}",
    ];
    for bytes in garbage {
        let status = client
            .best_options(request("ng-1", bytes.to_vec(), vec![pod_bytes("1")]))
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{bytes:?}: {status:?}"
        );
        assert!(
            status.message().contains("nodeBytesMap[\"ng-1\"]"),
            "{bytes:?}: {}",
            status.message()
        );
        let status = client
            .best_options(request(
                "ng-1",
                node_bytes("4"),
                vec![pod_bytes("1"), bytes.to_vec()],
            ))
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{bytes:?}: {status:?}"
        );
        assert!(
            status.message().contains("options[0].podBytes[1]"),
            "{bytes:?}: {}",
            status.message()
        );
    }
    // Well-formed messages with unusable quantities.
    for (node, pod, field) in [
        (node_bytes("lots"), pod_bytes("1"), "nodeBytesMap[\"ng-1\"]"),
        (node_bytes("4"), pod_bytes("-1"), "options[0].podBytes[0]"),
        (
            node_bytes("4"),
            pod_bytes("1e400"),
            "options[0].podBytes[0]",
        ),
    ] {
        let status = client
            .best_options(request("ng-1", node, vec![pod]))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(field), "{}", status.message());
    }
    // Odd but decodable input is answered with every option, never with none.
    for group in ["", "\0", "../../etc", &"g".repeat(10_000), "💥"] {
        let req = request(group, node_bytes("4"), vec![pod_bytes("1")]);
        let resp = client.best_options(req.clone()).await.unwrap().into_inner();
        assert_all_returned(&resp, &req, &format!("{group:.20}"));
    }
    let mut req = request("ng-1", Vec::new(), vec![Vec::new()]);
    req.node_bytes_map.clear();
    let resp = client.best_options(req.clone()).await.unwrap().into_inner();
    assert_all_returned(&resp, &req, "no template, empty pod");
    let status = client
        .best_options(ca135::BestOptionsRequest {
            options: vec![ca135::Option {
                node_group_id: "ng-1".into(),
                node_count: -3,
                debug: String::new(),
                pod_bytes: vec![],
            }],
            node_bytes_map: Default::default(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("nodeCount"),
        "{}",
        status.message()
    );
    healthy(&mut client).await;
    server.stop().await;
}

#[tokio::test]
async fn cancelled_calls_leave_the_server_healthy() {
    let server = start().await;
    let mut client = unlimited_client(&server).await;
    // Calls abandoned while their (large) request is still being sent, over the
    // same connection and over connections that are then dropped.
    let big = request("ng-1", node_bytes("4"), vec![pod_bytes("1"); 200_000]);
    for _ in 0..5 {
        let call = client.best_options(big.clone());
        let r = tokio::time::timeout(Duration::from_millis(5), call).await;
        assert!(r.is_err(), "the call was meant to be cut off mid-flight");
        let mut other = unlimited_client(&server).await;
        let r =
            tokio::time::timeout(Duration::from_millis(5), other.best_options(big.clone())).await;
        assert!(r.is_err());
        drop(other);
    }
    // Many at once, all abandoned.
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let mut c = client.clone();
            let req = big.clone();
            tokio::spawn(async move { c.best_options(req).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(20)).await;
    for call in calls {
        call.abort();
    }
    healthy(&mut client).await;
    healthy(&mut unlimited_client(&server).await).await;
    // A complete big call still gets its whole answer.
    let resp = client.best_options(big.clone()).await.unwrap().into_inner();
    assert_all_returned(&resp, &big, "a big call");
    server.stop().await;
}
