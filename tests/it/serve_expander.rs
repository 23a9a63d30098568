//! `prescale serve` with node pools and the expander, as a real process: the gRPC
//! expander listens beside the HTTPS API with the API's certificate (verified by a
//! real tonic client against the Service DNS name, as the cluster-autoscaler does),
//! the node-pool metrics are served, and SIGTERM stops everything cleanly.
//!
//! No Prometheus and no Kubernetes: the source fails, so the plan has no forecast —
//! the metrics answer 503 and the expander returns every option, as it must when it
//! cannot vouch for a choice.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use prescale::expander::pb;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

use crate::support::prometheus::free_addr;
use crate::support::Killed;

const DNS_NAME: &str = "prescale.prescale.svc";

#[tokio::test]
async fn serve_starts_the_expander_beside_the_api_and_stops_both_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (https, plain, grpc, prometheus) = (free_addr(), free_addr(), free_addr(), free_addr());
    let cert_dir = dir.path().join("cert");
    let config = format!(
        "
prometheus:
  url: http://{prometheus}
  timeout: 1s
signals:
  - name: rps
    query: sum(rate(http_requests_total[1m]))
    step: 15s
    history: 10m
    lead_time: 30s
    max_staleness: 30s
    min_history: 1m
nodepools:
  - name: application
    node_group_ids: [application-c5-2xlarge]
    allocatable: {{ cpu: 7910m, memory: 14500Mi }}
    min_nodes: 3
    max_nodes: 20
workloads:
  - name: web
    signal: rps
    target_per_replica: 100
    pod_requests: {{ cpu: 1, memory: 2Gi }}
    pool: application
    max_replicas: 50
expander:
  address: {grpc}
server:
  https_address: {https}
  http_address: {plain}
  tls:
    cert_dir: {}
    dns_names: [{DNS_NAME}]
  auth:
    mode: none
",
        cert_dir.display()
    );
    let path = dir.path().join("prescale.yaml");
    std::fs::write(&path, config).unwrap();
    let log = dir.path().join("serve.log");
    let mut serve = Killed(
        Command::new(env!("CARGO_BIN_EXE_prescale"))
            .args(["serve", "--config"])
            .arg(&path)
            .current_dir(dir.path())
            // No cluster: no in-cluster variables, no kubeconfig.
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env("KUBECONFIG", dir.path().join("no-kubeconfig"))
            .env("HOME", dir.path())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();

    // Ready: the first snapshot (with the node-pool metrics) is published.
    let http = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = http
            .get(format!("http://{plain}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200);
        if ready {
            break;
        }
        assert!(Instant::now() < deadline, "not ready:\n{}", read_log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let url = format!(
        "https://{https}/apis/external.metrics.k8s.io/v1beta1/namespaces/prescale-balloons/prescale_nodepool_balloons?labelSelector=nodepool%3Dapplication"
    );
    let r = http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 503, "no forecast yet: the HPA must hold");
    let body = r.text().await.unwrap();
    assert!(body.contains("no forecast for web"), "{body}");

    // The expander answers over TLS with the API's generated certificate, which
    // carries the Service name the cluster-autoscaler dials.
    let ca = std::fs::read(cert_dir.join(prescale::api::tls::SELF_SIGNED_CERT)).unwrap();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name(DNS_NAME);
    let channel = Channel::from_shared(format!("https://127.0.0.1:{}", grpc.port()))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap_or_else(|e| panic!("expander: {e:?}\n{}", read_log()));
    let mut client = pb::expander_client::ExpanderClient::new(channel);
    let options = vec![
        pb::Option {
            node_group_id: "application-c5-2xlarge".into(),
            node_count: 2,
            ..Default::default()
        },
        pb::Option {
            node_group_id: "database-r5-2xlarge".into(),
            node_count: 1,
            ..Default::default()
        },
    ];
    let answer = client
        .best_options(pb::BestOptionsRequest {
            options: options.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.options, options, "abstains with every option");

    // SIGTERM stops the engine, the API and the expander, and the process exits 0.
    let pid = serve.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = serve.0.try_wait().unwrap() {
            assert!(
                status.success(),
                "serve exited with {status}:\n{}",
                read_log()
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "serve did not stop:\n{}",
            read_log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        std::net::TcpStream::connect(grpc).is_err(),
        "the expander still listens"
    );
    let text = read_log();
    assert!(text.contains("gRPC expander listening"), "{text}");
}
