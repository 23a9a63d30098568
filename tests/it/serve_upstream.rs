//! Delegation (`server.upstream`) between two real servers over real TLS: a
//! prescale in front owns `external.metrics.k8s.io` and `custom.metrics.k8s.io`
//! and forwards what it does not serve to a second prescale standing in for the
//! adapter that owned the groups before (the e2e tier does the same with
//! prometheus-adapter). Both read the same real Prometheus.
//!
//! Checked: prescale's own metrics are answered by it; the others come back
//! exactly as the upstream answers them directly; discovery lists both; an
//! upstream that is down gives 503 for its metrics only while discovery keeps its
//! last list; it is used again once it is back.

use crate::support::pki;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::prometheus::{free_addr, usable, Prometheus};
use crate::support::{labels, Killed};
use prescale::clock::{Clock, SystemClock};
use prescale::series::{LabeledSeries, Series};
use serde_json::Value;

/// A constant series at 1-second steps from 15 minutes ago to 45 minutes ahead.
fn constant(value: f64) -> Series {
    let now = SystemClock.now_ms();
    Series {
        start_ms: now - now.rem_euclid(1_000) - 900_000,
        step_ms: 1_000,
        values: vec![value; 3_600],
    }
}

const SIGNAL: &str = "step: 1s\n    history: 10m\n    lead_time: 5s\n    model: seasonal-naive\n    max_staleness: 30s\n    refit_interval: 1m\n    min_history: 1m";

/// A config serving one external and one custom (Object, per StatefulSet) signal.
fn config(prom: &str, external: &str, custom: &str, server: &str) -> String {
    format!(
        r#"prometheus:
  url: {prom}
  timeout: 2s
signals:
  - name: {external}
    query: {external}
    {SIGNAL}
  - name: {custom}
    query: {custom}
    {SIGNAL}
    custom:
      type: Object
      resources:
        overrides:
          namespace: {{resource: namespace}}
          statefulset: {{group: apps, resource: statefulset}}
server:
{server}"#
    )
}

fn start(dir: &Path, name: &str, config: &str) -> Killed {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, config).unwrap();
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    Killed(
        Command::new(env!("CARGO_BIN_EXE_prescale"))
            .arg("serve")
            .arg("--config")
            .arg(&path)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("KUBERNETES_SERVICE_PORT")
            .env("KUBECONFIG", dir.join("no-kubeconfig"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

async fn get(client: &reqwest::Client, url: &str, accept: &str) -> (u16, Value) {
    match client.get(url).header("Accept", accept).send().await {
        Ok(resp) => {
            let code = resp.status().as_u16();
            (code, resp.json().await.unwrap_or(Value::Null))
        }
        Err(e) => (0, Value::String(e.to_string())),
    }
}

/// Waits until `url` answers `want` (and returns that answer).
async fn until(client: &reqwest::Client, url: &str, want: u16, dir: &Path) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, body) = get(client, url, "application/json").await;
        if code == want {
            return body;
        }
        if Instant::now() > deadline {
            let log = |n: &str| std::fs::read_to_string(dir.join(n)).unwrap_or_default();
            panic!(
                "{url} answered {code} {body}, not {want}\nfront log:\n{}\nupstream log:\n{}",
                log("front.log"),
                log("upstream.log")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `path` through the front and straight from the upstream: both 200 and equal
/// but for the timestamp (read a moment apart; the value is constant). The front's
/// answer.
async fn same_both_ways(
    client: &reqwest::Client,
    front: &str,
    direct: &str,
    path: &str,
    dir: &Path,
) -> Value {
    let mut through = until(client, &format!("{front}{path}"), 200, dir).await;
    let mut straight = until(client, &format!("{direct}{path}"), 200, dir).await;
    for doc in [&mut through, &mut straight] {
        doc["items"][0]["timestamp"] = Value::Null;
    }
    assert_eq!(through, straight, "{path}");
    through
}

fn names(list: &Value) -> Vec<String> {
    list["resources"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(|r| r["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn metric_value(text: &str, name: &str, labels: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l.contains(labels))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn metrics_prescale_does_not_serve_are_answered_by_the_upstream() {
    if !usable() {
        return;
    }
    let queue = |name: &str, v: f64| LabeledSeries {
        labels: labels(&[("__name__", name), ("queue", "orders")]),
        series: constant(v),
    };
    let sts = |name: &str, v: f64| LabeledSeries {
        labels: labels(&[
            ("__name__", name),
            ("namespace", "shop"),
            ("statefulset", "db"),
        ]),
        series: constant(v),
    };
    let prom = Prometheus::start(&[
        queue("own_queue", 100.0),
        queue("adapter_queue", 40.0),
        sts("own_latency", 0.05),
        sts("adapter_latency", 0.5),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // The upstream: its own CA-signed serving certificate, verified by the front.
    let ca = pki::Ca::new("upstream-ca");
    let pair = ca.server(&["127.0.0.1", "localhost"]);
    std::fs::write(d.join("ca.crt"), &ca.cert_pem).unwrap();
    std::fs::write(d.join("tls.crt"), &pair.cert_pem).unwrap();
    std::fs::write(d.join("tls.key"), &pair.key_pem).unwrap();
    std::fs::write(d.join("token"), "front-token\n").unwrap();
    let (up_https, up_plain): (SocketAddr, SocketAddr) = (free_addr(), free_addr());
    let upstream_config = config(
        &prom.url(),
        "adapter_queue",
        "adapter_latency",
        &format!(
            "  https_address: {up_https}\n  http_address: {up_plain}\n  tls: {{cert_file: {}, key_file: {}}}\n  auth: {{mode: none}}\n",
            d.join("tls.crt").display(),
            d.join("tls.key").display()
        ),
    );
    let mut upstream = start(d, "upstream", &upstream_config);

    let (https, plain) = (free_addr(), free_addr());
    let to_upstream = format!(
        "url: https://127.0.0.1:{}, ca_file: {}, token_file: {}, discovery_interval: 1s, timeout: 3s",
        up_https.port(),
        d.join("ca.crt").display(),
        d.join("token").display()
    );
    let front_config = config(
        &prom.url(),
        "own_queue",
        "own_latency",
        &format!(
            "  https_address: {https}\n  http_address: {plain}\n  tls: {{cert_dir: {}}}\n  auth: {{mode: none}}\n  upstream:\n    external.metrics.k8s.io: {{{to_upstream}}}\n    custom.metrics.k8s.io: {{{to_upstream}}}\n",
            d.join("certs").display()
        ),
    );
    let _front = start(d, "front", &front_config);

    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let front = format!("https://{https}");
    let direct = format!("https://{up_https}");
    let external = "/apis/external.metrics.k8s.io/v1beta1/namespaces/shop";
    let custom = "/apis/custom.metrics.k8s.io/v1beta2/namespaces/shop/statefulsets.apps/db";

    // prescale's own metric, answered by the front.
    let own = until(&client, &format!("{front}{external}/own_queue"), 200, d).await;
    let value = prescale::quantity::parse_f64(own["items"][0]["value"].as_str().unwrap()).unwrap();
    assert!((100.0..=111.0).contains(&value), "{own}");

    // The upstream's metric, through the front: exactly the upstream's own answer.
    let query = "?labelSelector=queue%3Dorders";
    let through = same_both_ways(
        &client,
        &front,
        &direct,
        &format!("{external}/adapter_queue{query}"),
        d,
    )
    .await;
    assert_eq!(through["items"][0]["metricName"], "adapter_queue");
    let (code, _) = get(
        &client,
        &format!("{front}{external}/adapter_queue?labelSelector=queue%3Dnone"),
        "application/json",
    )
    .await;
    assert_eq!(code, 404, "the upstream's own 404 comes back as is");

    // Custom metrics: a pair prescale lists is its own, the others go upstream.
    let own = until(&client, &format!("{front}{custom}/own_latency"), 200, d).await;
    assert_eq!(own["items"][0]["metric"]["name"], "own_latency", "{own}");
    same_both_ways(
        &client,
        &front,
        &direct,
        &format!("{custom}/adapter_latency"),
        d,
    )
    .await;

    // Discovery lists both servers' metrics, plain and aggregated.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (ext_names, custom_names) = loop {
        let (_, e) = get(
            &client,
            &format!("{front}/apis/external.metrics.k8s.io/v1beta1"),
            "application/json",
        )
        .await;
        let (_, c) = get(
            &client,
            &format!("{front}/apis/custom.metrics.k8s.io/v1beta1"),
            "application/json",
        )
        .await;
        let (e, c) = (names(&e), names(&c));
        if e.len() >= 2 || Instant::now() > deadline {
            break (e, c);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(ext_names, vec!["own_queue", "adapter_queue"]);
    for want in [
        "statefulsets.apps/own_latency",
        "statefulsets.apps/adapter_latency",
    ] {
        assert!(
            custom_names.iter().any(|n| n == want),
            "{want} not in {custom_names:?}"
        );
    }
    let (code, aggregated) = get(
        &client,
        &format!("{front}/apis"),
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
    )
    .await;
    assert_eq!(code, 200);
    let listed: Vec<&str> = aggregated["items"][0]["versions"][0]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["resource"].as_str())
        .collect();
    assert_eq!(listed, vec!["own_queue", "adapter_queue"]);
    let text = aggregated.to_string();
    assert!(
        text.contains("\"subresource\":\"adapter_latency\""),
        "{text}"
    );

    let metrics_url = format!("http://{plain}/metrics");
    let text = client.get(&metrics_url).send().await.unwrap();
    let text = text.text().await.unwrap();
    assert_eq!(
        metric_value(
            &text,
            "prescale_upstream_up",
            "group=\"external.metrics.k8s.io\""
        ),
        Some(1.0),
        "{text}"
    );
    assert!(
        metric_value(
            &text,
            "prescale_api_requests_total",
            "endpoint=\"upstream\",code=\"200\""
        )
        .is_some_and(|n| n >= 2.0),
        "{text}"
    );

    // The upstream goes down: its metrics are 503 naming it, prescale's are not
    // touched, and discovery keeps the last list it read.
    drop(upstream);
    let (code, body) = get(
        &client,
        &format!("{front}{external}/adapter_queue{query}"),
        "application/json",
    )
    .await;
    assert_eq!(code, 503, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("external.metrics.k8s.io upstream https://127.0.0.1:")
            && message.contains("prescale's own metrics are unaffected"),
        "{body}"
    );
    let (code, _) = get(&client, &format!("{front}{custom}/adapter_latency"), "*/*").await;
    assert_eq!(code, 503);
    let (code, _) = get(
        &client,
        &format!("{front}{external}/own_queue"),
        "application/json",
    )
    .await;
    assert_eq!(code, 200);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let (_, e) = get(
        &client,
        &format!("{front}/apis/external.metrics.k8s.io/v1beta1"),
        "application/json",
    )
    .await;
    assert_eq!(names(&e), vec!["own_queue", "adapter_queue"]);
    let text = client.get(&metrics_url).send().await.unwrap();
    let text = text.text().await.unwrap();
    assert_eq!(
        metric_value(
            &text,
            "prescale_upstream_up",
            "group=\"external.metrics.k8s.io\""
        ),
        Some(0.0),
        "{text}"
    );

    // Back again: answered through the front as before.
    upstream = start(d, "upstream", &upstream_config);
    until(
        &client,
        &format!("{front}{external}/adapter_queue{query}"),
        200,
        d,
    )
    .await;
    drop(upstream);
}
