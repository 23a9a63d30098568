//! Check "i": prescale takes `external.metrics.k8s.io` over from prometheus-adapter
//! and keeps serving its metrics through delegation (`server.upstream`).
//!
//! prometheus-adapter (built from its module, tests/it/e2e/adapter.rs) runs beside
//! prescale on the same Prometheus with an External rule for
//! [`LEGACY`], a metric prescale does not serve; prescale's config names it as the
//! group's upstream. The check:
//! 1. points the APIService `v1beta1.external.metrics.k8s.io` at the adapter (as a
//!    cluster that ran it first has it) and lets an HPA on [`LEGACY`] become
//!    `ScalingActive True` through it;
//! 2. points the APIService back at prescale (the takeover) and watches that HPA
//!    at every controller sync (1 s) for a while: `ScalingActive` must stay True,
//!    while the External HPA on prescale's forecast (check b's `ext`) is True too;
//!    the value through the apiserver equals the adapter's own answer, and
//!    discovery lists both servers' metrics;
//! 3. stops the adapter: its metric answers 503 through the apiserver, prescale's
//!    still 200; the HPA on the adapter's metric is deleted afterwards so later
//!    checks see only their own HPAs.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::adapter::{self, Adapter};
use super::cluster::{base64, Cluster};
use super::{condition, quantity, Check, EXTERNAL, NS};

/// The metric only prometheus-adapter serves.
pub const LEGACY: &str = "legacy_queue_depth";
/// Its value in Prometheus (constant): with the HPA's target of 100 per replica, 4
/// replicas.
const LEGACY_VALUE: f64 = 340.0;
const LEGACY_TARGET: &str = "100";
/// How long the HPA on the adapter's metric is watched after the takeover.
const WATCH: Duration = Duration::from_secs(20);

/// The Prometheus series behind [`LEGACY`].
pub fn series() -> Vec<prescale::series::LabeledSeries> {
    use prescale::clock::{Clock, SystemClock};
    let now = SystemClock.now_ms();
    vec![prescale::series::LabeledSeries {
        labels: [
            ("__name__".to_string(), LEGACY.to_string()),
            ("queue".to_string(), "legacy".to_string()),
        ]
        .into(),
        series: prescale::series::Series {
            start_ms: now - now.rem_euclid(5_000) - 3_600_000,
            step_ms: 5_000,
            values: vec![LEGACY_VALUE; 2 * 720],
        },
    }]
}

/// Starts prometheus-adapter with an External rule for [`LEGACY`].
pub async fn start_adapter(cluster: &Cluster, prometheus_url: &str) -> Adapter {
    Adapter::start(
        cluster,
        prometheus_url,
        &adapter::rules(&[LEGACY], &[]),
        &[],
    )
    .await
}

/// `config` with `server.upstream` for external metrics pointing at `adapter`
/// (its CA, prescale's own token from its kubeconfig).
pub fn with_upstream(config: String, adapter: &Adapter) -> String {
    let upstream = format!(
        "\nserver:\n  upstream:\n    external.metrics.k8s.io:\n      url: {}\n      ca_file: {}\n      timeout: 5s\n      discovery_interval: 2s\n",
        adapter.url,
        adapter.dir.join("serving-ca.crt").display()
    );
    assert!(
        config.contains("\nserver:\n"),
        "prescale's e2e config has no `server:` section"
    );
    config.replacen("\nserver:\n", &upstream, 1)
}

fn legacy_path() -> String {
    format!("/apis/external.metrics.k8s.io/v1beta1/namespaces/{NS}/{LEGACY}?labelSelector=queue%3Dlegacy")
}

async fn available(c: &Cluster) -> Result<(), String> {
    let (_, svc) = c
        .admin_get("/apis/apiregistration.k8s.io/v1/apiservices/v1beta1.external.metrics.k8s.io")
        .await;
    match condition(&svc, "Available") {
        Some(a) if a["status"] == "True" => Ok(()),
        other => Err(format!("Available: {other:?}")),
    }
}

async fn scaling_active(c: &Cluster, name: &str) -> (String, Value) {
    let (_, hpa) = c
        .admin_get(&format!(
            "/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers/{name}"
        ))
        .await;
    let status = condition(&hpa, "ScalingActive")
        .and_then(|c| c["status"].as_str())
        .unwrap_or("?")
        .to_string();
    (status, hpa)
}

/// Points the external APIService at `service` (namespace, name, port) trusting `ca`.
fn point(c: &Cluster, namespace: &str, name: &str, port: u16, ca: &[u8]) {
    let patch = json!({"spec": {"caBundle": base64(ca), "insecureSkipTLSVerify": false,
        "service": {"namespace": namespace, "name": name, "port": port}}})
    .to_string();
    c.kubectl_ok(&[
        "patch",
        "apiservice",
        "v1beta1.external.metrics.k8s.io",
        "--type=merge",
        "-p",
        &patch,
    ]);
}

/// The check. `prescale_port` and `prescale_ca` are prescale's registration (Service
/// `prescale/prescale`).
pub async fn check(
    c: &Cluster,
    adapter: &mut Adapter,
    prescale_port: u16,
    prescale_ca: &[u8],
) -> Check {
    // The adapter serves its metric (directly, as the aggregator would ask it).
    let direct = adapter
        .wait_for(
            &legacy_path(),
            "e2e-admin",
            "system:masters",
            Duration::from_secs(60),
        )
        .await?;
    let direct: Value = serde_json::from_str(&direct).map_err(|e| e.to_string())?;
    let direct_value = quantity(&direct["items"][0]["value"]);

    // 1. The cluster as it was: the adapter owns the group.
    c.apply(&json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "prometheus-adapter", "namespace": adapter::NAMESPACE},
         "spec": {"type": "ExternalName", "externalName": "localhost",
                  "ports": [{"name": "https", "port": adapter.addr.port(), "protocol": "TCP"}]}},
    ]}));
    point(
        c,
        adapter::NAMESPACE,
        "prometheus-adapter",
        adapter.addr.port(),
        adapter.ca_pem.as_bytes(),
    );
    super::wait_for(Duration::from_secs(60), async || available(c).await)
        .await
        .map_err(|e| format!("the APIService pointed at prometheus-adapter: {e}"))?;
    c.apply(&json!({"apiVersion": "v1", "kind": "List", "items": [
        super::deployment("legacy"),
        super::hpa("legacy", "Deployment", json!({"type": "External", "external": {
            "metric": {"name": LEGACY, "selector": {"matchLabels": {"queue": "legacy"}}},
            "target": {"type": "AverageValue", "averageValue": LEGACY_TARGET}}})),
    ]}));
    super::wait_for(Duration::from_secs(90), async || {
        match scaling_active(c, "legacy").await {
            (s, _) if s == "True" => Ok(()),
            (s, hpa) => Err(format!("ScalingActive {s}: {}", hpa["status"])),
        }
    })
    .await
    .map_err(|e| format!("the HPA on the adapter's metric, before the takeover: {e}"))?;

    // 2. The takeover: the APIService points at prescale again. From this moment
    // the HPA on the adapter's metric must stay True at every look; the one on
    // prescale's forecast (False while the adapter owned the group) comes back.
    point(c, "prescale", "prescale", prescale_port, prescale_ca);
    let start = Instant::now();
    let mut polls = 0;
    let mut ext_back: Option<Duration> = None;
    while start.elapsed() < WATCH || ext_back.is_none() {
        let (legacy, hpa) = scaling_active(c, "legacy").await;
        if legacy != "True" {
            return Err(format!(
                "after the takeover the HPA on the adapter's metric went ScalingActive {legacy} after {:?}: {}",
                start.elapsed(),
                hpa["status"]
            ));
        }
        let (ext, hpa) = scaling_active(c, "ext").await;
        match (ext == "True", ext_back) {
            (true, None) => ext_back = Some(start.elapsed()),
            (false, Some(at)) => {
                return Err(format!(
                "the HPA on prescale's metric was True {at:?} after the takeover, then {ext}: {}",
                hpa["status"]
            ))
            }
            (false, None) if start.elapsed() > Duration::from_secs(60) => {
                return Err(format!(
                    "the HPA on prescale's metric is not True 60 s after the takeover: {}",
                    hpa["status"]
                ))
            }
            _ => {}
        }
        polls += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let watched = start.elapsed();
    available(c)
        .await
        .map_err(|e| format!("the APIService pointed back at prescale: {e}"))?;
    let (code, through) = c.admin_get(&legacy_path()).await;
    if code != 200 {
        return Err(format!(
            "{LEGACY} through the apiserver after the takeover: {code} {through}"
        ));
    }
    let through_value = quantity(&through["items"][0]["value"]);
    if through_value != direct_value {
        return Err(format!(
            "{LEGACY} through prescale is {through_value}, the adapter itself says {direct_value}"
        ));
    }
    let (_, hpa) = scaling_active(c, "legacy").await;
    let legacy_replicas = hpa["status"]["desiredReplicas"].as_u64().unwrap_or(0);
    let (_, list) = c.admin_get("/apis/external.metrics.k8s.io/v1beta1").await;
    let names: Vec<&str> = list["resources"]
        .as_array()
        .map(|r| r.iter().filter_map(|r| r["name"].as_str()).collect())
        .unwrap_or_default();
    if !names.contains(&LEGACY) || !names.contains(&EXTERNAL) {
        return Err(format!(
            "discovery through the apiserver does not list both servers' metrics: {names:?}"
        ));
    }

    // 3. The adapter stops: 503 for its metric only.
    adapter.stop();
    let (code, body) = c.admin_get(&legacy_path()).await;
    let message = body["message"].as_str().unwrap_or_default().to_string();
    if code != 503 || !message.contains("upstream") {
        return Err(format!(
            "{LEGACY} with the adapter stopped: {code} {body} (want 503 naming the upstream)"
        ));
    }
    let (own, body) = c
        .admin_get(&format!(
            "/apis/external.metrics.k8s.io/v1beta1/namespaces/{NS}/{EXTERNAL}?labelSelector=queue%3Djobs"
        ))
        .await;
    if own != 200 {
        return Err(format!(
            "prescale's own {EXTERNAL} with the adapter stopped: {own} {body}"
        ));
    }
    c.kubectl_ok(&[
        "delete",
        "hpa,deployment",
        "legacy",
        "-n",
        NS,
        "--wait=false",
    ]);
    Ok(format!(
        "HPA on the adapter's {LEGACY} ScalingActive True before and through the takeover ({polls} looks over {:?}, desired {legacy_replicas}), HPA ext on prescale's forecast True again {:?} after it; value through prescale {through_value} = adapter's {direct_value}; discovery lists both ({} resources); adapter stopped → {LEGACY} 503 \"{}\", {EXTERNAL} 200",
        watched,
        ext_back.unwrap_or_default(),
        names.len(),
        message.chars().take(90).collect::<String>()
    ))
}
