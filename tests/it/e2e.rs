//! The end-to-end tier: real Kubernetes peers on 127.0.0.1 and prescale against them.
//!
//! Starts etcd (Debian's `etcd-server`), kube-apiserver and kube-controller-manager
//! (built by `tests/e2e/peers.sh` from the pinned `k8s.io/kubernetes` module into
//! `~/.cache/prescale-peers`), a real Prometheus backfilled with promtool, and the
//! `prescale` binary as a host process in `auth.mode: kubernetes`, running as its own
//! ServiceAccount with `deploy/base`'s RBAC behind the three APIServices of
//! `deploy/base` (an ExternalName Service `localhost`). There is no kubelet: the test
//! marks pods Running and Ready through the status subresource.
//!
//! Checks (all are run; the failures are reported together at the end):
//! a. the APIServices are Available and the apiserver's aggregated discovery lists
//!    prescale's group-versions as `Current`;
//! b. External (AverageValue), Pods and Object (AverageValue) HPAs reach exactly
//!    `ceil(served / target)` replicas, the served value read through the aggregator;
//! c. 401 for a client without credentials at prescale, 403 for a front-proxy user
//!    without RBAC rights at prescale, 403 for a token user without rights at the apiserver;
//! d. prescale's Lease is held, node-pool metrics are served from Node objects, its
//!    CapacityBuffer is written, and prescale's log shows no forbidden call;
//! e. Prometheus paused (SIGSTOP) past `max_staleness` → the HPAs' `ScalingActive`
//!    turns False; resumed (SIGCONT) → True again;
//! f. `kubectl apply --dry-run=server -k` of every kustomization in deploy/ is accepted,
//!    and so is the Helm chart rendered by `helm template`, which also installs,
//!    upgrades (keeping its self-signed certificate) and uninstalls (tests/it/e2e/helm.rs);
//! g. backtester fidelity: a bundled trace replayed at 15× through an exporter and
//!    Prometheus into prescale (reactive value) and a real HPA with a sped-up
//!    behavior; `prescale::backtest::Hpa` replayed at the controller's logged syncs
//!    gives the same replicas at ≥ 95 % of them (tests/it/e2e/fidelity.rs);
//! h. KEDA's own generated Go client calls prescale's KEDA external scaler over TLS
//!    with a client certificate (tests/it/e2e/keda.rs; the KEDA operator does not run).
//!
//! Without the peer binaries (or etcd, prometheus) it skips with the reason, except
//! with `CI=true`, where it fails. Run alone: `bash tests/e2e/peers.sh && cargo test
//! --test it e2e:: -- --nocapture` (prints every check's figures); `PRESCALE_E2E_KEEP=1` keeps the
//! temporary directory (PKI, kubeconfigs, every process's log) when a check fails.

mod adapter;
mod cluster;
mod fidelity;
mod helm;
mod keda;
use crate::support::pki;
mod upstream;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::labels;
use crate::support::prometheus::{free_addr, http_status, Prometheus};
use cluster::{base64, find_peers, kubeconfig, write, Cluster, Proc};
use prescale::clock::{Clock, SystemClock};
use prescale::series::{LabeledSeries, Series};
use serde_json::{json, Value};

const NS: &str = "e2e";
const STEP_MS: i64 = 5_000;
const EXTERNAL: &str = "e2e_queue_depth";
const PODS: &str = "e2e-packets";
const OBJECT: &str = "e2e-db-latency";
/// The signals' values (constant, so that forecasts and the expected replica
/// counts are stable) and the HPAs' AverageValue targets.
const EXTERNAL_VALUE: f64 = 370.0;
const EXTERNAL_TARGET: &str = "100";
const PODS_VALUE: f64 = 2500.0;
const PODS_TARGET: &str = "1000";
const OBJECT_VALUE: f64 = 0.33;
const OBJECT_TARGET: &str = "100m";
const MAX_STALENESS_S: u64 = 15;
const APISERVICES: [&str; 3] = [
    "v1beta1.external.metrics.k8s.io",
    "v1beta1.custom.metrics.k8s.io",
    "v1beta2.custom.metrics.k8s.io",
];

// ---------------------------------------------------------------------------
// Fixture

/// Constant series from 40 minutes ago to 40 minutes ahead (Prometheus serves
/// future samples once their time has come).
fn series() -> Vec<LabeledSeries> {
    let now = SystemClock.now_ms();
    let start_ms = now - now.rem_euclid(STEP_MS) - 40 * 60_000;
    let n = (80 * 60_000 / STEP_MS) as usize;
    let constant = |v: f64| Series {
        start_ms,
        step_ms: STEP_MS,
        values: vec![v; n],
    };
    vec![
        LabeledSeries {
            labels: labels(&[("__name__", "e2e_queue_depth"), ("queue", "jobs")]),
            series: constant(EXTERNAL_VALUE),
        },
        LabeledSeries {
            labels: labels(&[("__name__", "e2e_queue_depth"), ("queue", "other")]),
            series: constant(5000.0),
        },
        LabeledSeries {
            labels: labels(&[
                ("__name__", "e2e_packets"),
                ("namespace", NS),
                ("deployment", "web"),
            ]),
            series: constant(PODS_VALUE),
        },
        LabeledSeries {
            labels: labels(&[
                ("__name__", "e2e_db_latency"),
                ("namespace", NS),
                ("statefulset", "db"),
            ]),
            series: constant(OBJECT_VALUE),
        },
    ]
}

fn prescale_config(prom: &str, https: SocketAddr, plain: SocketAddr, cert_dir: &Path) -> String {
    let signal = |name: &str, query: &str| {
        format!(
            "  - name: {name}\n    query: {query}\n    step: 5s\n    history: 30m\n    lead_time: 30s\n\
             \x20   quantile: 0.9\n    model: seasonal-naive\n    max_staleness: {MAX_STALENESS_S}s\n\
             \x20   refit_interval: 30s\n    min_history: 5m\n"
        )
    };
    format!(
        "prometheus:\n  url: {prom}\n  timeout: 1s\nsignals:\n{replay}{ext}{pods}    custom:\n      type: Pods\n      resources:\n        overrides:\n\
         \x20         namespace: {{resource: namespace}}\n          deployment: {{group: apps, resource: deployment}}\n\
         {obj}    custom:\n      type: Object\n      resources:\n        overrides:\n\
         \x20         namespace: {{resource: namespace}}\n          statefulset: {{group: apps, resource: statefulset}}\n\
         nodepools:\n  - name: e2e\n    node_group_ids: [e2e-group]\n    node_labels: {{pool: e2e}}\n    max_pods_per_node: 20\n\
         \x20   provisioning_delay: 10s\n    min_nodes: 1\n    max_nodes: 10\n    balloon_target: \"1\"\n\
         \x20   capacity_buffer: {{namespace: {NS}, pod_template: balloon-e2e}}\n\
         workloads:\n  - name: ext\n    signal: {EXTERNAL}\n    series: {{queue: jobs}}\n    target_per_replica: 50\n\
         \x20   pod_requests: {{cpu: 1500m, memory: 1Gi}}\n    pool: e2e\n    min_replicas: 1\n    max_replicas: 40\n\
         \x20   pod_startup: 5s\n    replicas: {{namespace: {NS}, pod_labels: {{app: ext}}}}\n\
         capacity_buffers:\n  enabled: true\n  dry_run: false\n  lease_namespace: prescale\n  lease_name: prescale-capacity-buffers\n  lease_duration: 15s\n\
         server:\n  https_address: {https}\n  http_address: {plain}\n  tls:\n    cert_dir: {certs}\n    dns_names: [prescale.prescale.svc]\n\
         \x20 auth:\n    mode: kubernetes\n",
        replay = fidelity::signal_config(),
        ext = signal(EXTERNAL, "e2e_queue_depth"),
        pods = signal(PODS, "e2e_packets"),
        obj = signal(OBJECT, "e2e_db_latency"),
        certs = cert_dir.display(),
    )
}

fn deployment(name: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "automountServiceAccountToken": false,
                    "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10",
                                    "resources": {"requests": {"cpu": "1500m", "memory": "1Gi"}}}]
                }
            }
        }
    })
}

fn hpa(name: &str, kind: &str, metric: Value) -> Value {
    let api = "apps/v1";
    json!({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "scaleTargetRef": {"apiVersion": api, "kind": kind, "name": name},
            "minReplicas": 1, "maxReplicas": 10,
            "metrics": [metric],
        }
    })
}

fn workloads() -> Value {
    json!({"apiVersion": "v1", "kind": "List", "items": [
        deployment("ext"),
        deployment("web"),
        {
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "db", "namespace": NS},
            "spec": {
                "replicas": 1, "serviceName": "db", "podManagementPolicy": "Parallel",
                "selector": {"matchLabels": {"app": "db"}},
                "template": {
                    "metadata": {"labels": {"app": "db"}},
                    "spec": {"automountServiceAccountToken": false,
                             "containers": [{"name": "db", "image": "registry.k8s.io/pause:3.10"}]}
                }
            }
        },
        hpa("ext", "Deployment", json!({"type": "External", "external": {
            "metric": {"name": EXTERNAL, "selector": {"matchLabels": {"queue": "jobs"}}},
            "target": {"type": "AverageValue", "averageValue": EXTERNAL_TARGET}}})),
        hpa("web", "Deployment", json!({"type": "Pods", "pods": {
            "metric": {"name": PODS},
            "target": {"type": "AverageValue", "averageValue": PODS_TARGET}}})),
        hpa("db", "StatefulSet", json!({"type": "Object", "object": {
            "metric": {"name": OBJECT},
            "describedObject": {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db"},
            "target": {"type": "AverageValue", "averageValue": OBJECT_TARGET}}})),
    ]})
}

fn node(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"pool": "e2e", "kubernetes.io/hostname": name}},
        "status": {
            "capacity": {"cpu": "4", "memory": "8Gi", "pods": "20"},
            "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "20"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "E2E", "message": "no kubelet"}]
        }
    })
}

/// Marks the namespace's pods Running and Ready with a podIP (there is no kubelet),
/// until `stop`.
async fn mark_pods_ready(url: String, admin: reqwest::Client, stop: Arc<AtomicBool>) {
    let mut next_ip = 10u32;
    let mut ips: BTreeMap<String, String> = BTreeMap::new();
    while !stop.load(Ordering::Relaxed) {
        if let Ok(r) = admin
            .get(format!("{url}/api/v1/namespaces/{NS}/pods"))
            .send()
            .await
        {
            let list: Value = r.json().await.unwrap_or(Value::Null);
            for pod in list["items"].as_array().into_iter().flatten() {
                let name = pod["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let ready = pod["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True");
                if ready || pod["metadata"]["deletionTimestamp"].is_string() {
                    continue;
                }
                let ip = ips
                    .entry(name.clone())
                    .or_insert_with(|| {
                        next_ip += 1;
                        format!("10.244.{}.{}", next_ip / 250, next_ip % 250)
                    })
                    .clone();
                let now = chrono::DateTime::from_timestamp_millis(SystemClock.now_ms())
                    .unwrap()
                    .format("%Y-%m-%dT%H:%M:%SZ")
                    .to_string();
                let cond =
                    |t: &str| json!({"type": t, "status": "True", "lastTransitionTime": now});
                let patch = json!({"status": {
                    "phase": "Running",
                    "hostIP": "127.0.0.1",
                    "podIP": ip, "podIPs": [{"ip": ip}],
                    "startTime": now,
                    "conditions": [cond("PodScheduled"), cond("Initialized"), cond("ContainersReady"), cond("Ready")],
                    "containerStatuses": pod["spec"]["containers"].as_array().into_iter().flatten().map(|c| json!({
                        "name": c["name"], "image": c["image"], "imageID": "", "ready": true, "restartCount": 0,
                        "started": true, "state": {"running": {"startedAt": now}}
                    })).collect::<Vec<_>>(),
                }});
                let _ = admin
                    .patch(format!("{url}/api/v1/namespaces/{NS}/pods/{name}/status"))
                    .header(
                        reqwest::header::CONTENT_TYPE,
                        "application/merge-patch+json",
                    )
                    .body(patch.to_string())
                    .send()
                    .await;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn quantity(v: &Value) -> f64 {
    prescale::quantity::parse_f64(v.as_str().unwrap_or_default())
        .unwrap_or_else(|e| panic!("quantity {v}: {e:?}"))
}

/// Sum of the values of a MetricValueList (External or custom).
fn sum_values(body: &Value) -> Option<f64> {
    let items = body["items"].as_array()?;
    if items.is_empty() {
        return None;
    }
    Some(items.iter().map(|i| quantity(&i["value"])).sum())
}

fn condition<'a>(obj: &'a Value, kind: &str) -> Option<&'a Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

/// One check's outcome: figures seen, or what went wrong.
type Check = Result<String, String>;

async fn wait_for<T>(
    within: Duration,
    mut probe: impl AsyncFnMut() -> Result<T, String>,
) -> Result<T, String> {
    let deadline = Instant::now() + within;
    loop {
        match probe().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() > deadline => {
                return Err(format!("not within {within:?}: {e}"))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

// ---------------------------------------------------------------------------
// The test

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_against_real_kubernetes_peers() {
    let _heavy = crate::support::heavy();
    let peers = match find_peers() {
        Ok(p) => p,
        Err(why) => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("e2e tier cannot run in CI: {why}");
            }
            eprintln!("skipped: {why}");
            return;
        }
    };
    let started = Instant::now();
    let mut cluster = Cluster::start(&peers).await;
    eprintln!("e2e: apiserver ready after {:?}", started.elapsed());

    // Cluster objects prescale needs before it starts: deploy/base's namespace and
    // RBAC, the CapacityBuffer CRD, the test namespaces, the pool's nodes.
    cluster.kubectl_ok(&[
        "apply",
        "-f",
        "deploy/base/namespace.yaml",
        "-f",
        "deploy/base/rbac.yaml",
    ]);
    cluster.kubectl_ok(&[
        "apply",
        "-f",
        "tests/e2e/crds/capacitybuffers.yaml",
        "-f",
        "tests/e2e/crds/cert-manager.yaml",
    ]);
    let namespace =
        |n: &str| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}});
    cluster.apply(&json!({"apiVersion": "v1", "kind": "List", "items": [
        namespace(NS), namespace("llm"), namespace("conexus"), namespace("prescale-balloons"),
        node("e2e-node-a"), node("e2e-node-b"),
    ]}));

    // f. every kustomization in deploy/, server-side dry run, on the cluster as it is
    // before prescale is registered (the dev overlay's insecureSkipTLSVerify may not
    // meet the caBundle this test sets on the live APIServices).
    let f = check_kustomizations(&cluster);
    let f_helm = helm::check(&cluster);

    // prescale's own identity: a TokenRequest for its ServiceAccount.
    let token = cluster
        .kubectl_ok(&[
            "create",
            "token",
            "prescale",
            "-n",
            "prescale",
            "--duration=2h",
        ])
        .trim()
        .to_string();
    let sa_kubeconfig = cluster.path("prescale.kubeconfig");
    write(
        &sa_kubeconfig,
        &kubeconfig(&cluster.url, &cluster.ca_file, &token),
    );

    // Prometheus holds the backfilled series and scrapes g.'s trace exporter.
    let exporter = fidelity::Exporter::start().await;
    let prom = Prometheus::start_scraping(
        &[series(), keda::series(), upstream::series()].concat(),
        &exporter.prometheus_yml(),
    );
    let (https, plain) = (free_addr(), free_addr());
    let cert_dir = cluster.path("prescale-certs");
    let config_path = cluster.path("prescale.yaml");
    let keda = keda::Setup::new(&cluster);
    // i.'s prometheus-adapter, prescale's upstream for external metrics (it may read
    // them as prescale's ServiceAccount: deploy/examples/upstream-rbac.yaml).
    let mut adapter = upstream::start_adapter(&cluster, &prom.url()).await;
    cluster.kubectl_ok(&["apply", "-f", "deploy/examples/upstream-rbac.yaml"]);
    write(
        &config_path,
        &upstream::with_upstream(
            keda.with_scaler(prescale_config(&prom.url(), https, plain, &cert_dir)),
            &adapter,
        ),
    );
    let mut prescale = Proc::spawn(
        "prescale",
        Command::new(env!("CARGO_BIN_EXE_prescale"))
            .args(["serve", "--config"])
            .arg(&config_path)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env("KUBECONFIG", &sa_kubeconfig)
            .env("HOSTNAME", "prescale-e2e-0")
            .env("RUST_LOG", "info"),
        cluster.dir.path(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while http_status(plain, "/readyz") != Some(200) {
        prescale.assert_running();
        assert!(
            Instant::now() < deadline,
            "prescale not ready:\n{}",
            prescale.log_tail(40)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("e2e: prescale ready after {:?}", started.elapsed());

    // Registration: an ExternalName Service `localhost` (Endpoints may not point at
    // loopback) and deploy/base's APIServices, trusting prescale's serving cert, at
    // prescale's port.
    let serving_cert =
        std::fs::read(cert_dir.join("apiserver.crt")).expect("prescale's serving certificate");
    cluster.apply(&json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "prescale", "namespace": "prescale"},
        "spec": {"type": "ExternalName", "externalName": "localhost",
                 "ports": [{"name": "https", "port": https.port(), "protocol": "TCP"}]}
    }));
    cluster.kubectl_ok(&["apply", "-f", "deploy/base/apiservices.yaml"]);
    let patch =
        json!({"spec": {"caBundle": base64(&serving_cert), "service": {"port": https.port()}}})
            .to_string();
    for name in APISERVICES {
        cluster.kubectl_ok(&["patch", "apiservice", name, "--type=merge", "-p", &patch]);
    }

    // Workloads and their HPAs; pods are made Running and Ready as they appear.
    let sa = wait_for(Duration::from_secs(60), async || {
        match cluster
            .admin_get(&format!("/api/v1/namespaces/{NS}/serviceaccounts/default"))
            .await
        {
            (200, _) => Ok(()),
            (code, body) => Err(format!("{code} {body}")),
        }
    })
    .await;
    assert!(
        sa.is_ok(),
        "no default ServiceAccount in {NS} (serviceaccount-controller): {sa:?}"
    );
    cluster.apply(&workloads());
    let stop = Arc::new(AtomicBool::new(false));
    let marker = tokio::spawn(mark_pods_ready(
        cluster.url.clone(),
        cluster.admin.clone(),
        stop.clone(),
    ));

    let mut report: Vec<(&str, Check)> = vec![
        ("f. kubectl apply --dry-run=server -k", f),
        ("f. Helm chart: dry-run, install, upgrade", f_helm),
    ];

    // a. APIServices Available, aggregated discovery Current.
    report.push(("a. APIServices Available", check_available(&cluster).await));
    report.push((
        "a. aggregated discovery Current",
        check_discovery(&cluster).await,
    ));

    // c. auth.
    report.push((
        "c. auth 401/403",
        check_auth(&cluster, https, &cert_dir).await,
    ));

    // b. HPAs reach ceil(served / target).
    report.push(("b. External HPA", check_hpa(&cluster, "ext",
        &format!("/apis/external.metrics.k8s.io/v1beta1/namespaces/{NS}/{EXTERNAL}?labelSelector=queue%3Djobs"), EXTERNAL_TARGET).await));
    report.push(("b. Pods HPA", check_hpa(&cluster, "web",
        &format!("/apis/custom.metrics.k8s.io/v1beta2/namespaces/{NS}/pods/*/{PODS}?labelSelector=app%3Dweb"), PODS_TARGET).await));
    report.push((
        "b. Object HPA",
        check_hpa(
            &cluster,
            "db",
            &format!(
                "/apis/custom.metrics.k8s.io/v1beta2/namespaces/{NS}/statefulsets.apps/db/{OBJECT}"
            ),
            OBJECT_TARGET,
        )
        .await,
    ));

    // d. prescale as its ServiceAccount: Lease, node-pool metrics, CapacityBuffer.
    report.push(("d. Lease held", check_lease(&cluster).await));
    report.push((
        "d. node-pool metrics and CapacityBuffer",
        check_nodepool(&cluster).await,
    ));

    // h. the KEDA external scaler, through KEDA's generated client.
    report.push((
        "h. KEDA external scaler (KEDA's Go client)",
        keda.check(&cluster, plain, &cert_dir).await,
    ));

    // i. prescale takes the external group over from prometheus-adapter, delegating.
    report.push((
        "i. takeover from prometheus-adapter (upstream)",
        upstream::check(&cluster, &mut adapter, https.port(), &serving_cert).await,
    ));

    // e. Prometheus paused past max_staleness: ScalingActive False, then True.
    let pid = prom.pid().expect("prometheus runs").to_string();
    report.push((
        "e. staleness → ScalingActive False → True",
        check_staleness(&cluster, &pid).await,
    ));

    // g. the real HPA controller against the backtest's Hpa, on a replayed trace.
    report.push((
        "g. backtester fidelity",
        fidelity::check(&cluster, &exporter, &prom.url()).await,
    ));

    // d. (end) no forbidden call in prescale's log over the whole run.
    let log = std::fs::read_to_string(&prescale.log).unwrap_or_default();
    let forbidden: Vec<&str> = log.lines().filter(|l| mentions_forbidden(l)).collect();
    report.push((
        "d. no forbidden call by prescale",
        if forbidden.is_empty() {
            Ok(format!("{} log lines, none forbidden", log.lines().count()))
        } else {
            Err(forbidden.join("\n"))
        },
    ));
    prescale.assert_running();
    for p in &mut cluster.procs {
        p.assert_running();
    }
    stop.store(true, Ordering::Relaxed);
    let _ = marker.await;

    eprintln!("e2e: finished after {:?}", started.elapsed());
    let mut failed = Vec::new();
    for (name, outcome) in &report {
        match outcome {
            Ok(figures) => eprintln!("PASS {name}: {figures}"),
            Err(why) => {
                eprintln!("FAIL {name}: {why}");
                failed.push(*name);
            }
        }
    }
    if !failed.is_empty() {
        eprintln!("--- prescale log (tail) ---\n{}", prescale.log_tail(60));
        eprintln!(
            "--- kube-controller-manager log (tail) ---\n{}",
            cluster.procs[2].log_tail(40)
        );
        eprintln!(
            "--- kube-apiserver log (tail) ---\n{}",
            cluster.procs[1].log_tail(40)
        );
        if std::env::var_os("PRESCALE_E2E_KEEP").is_some() {
            let kept = cluster.dir.path().to_path_buf();
            std::mem::forget(std::mem::replace(
                &mut cluster.dir,
                tempfile::tempdir().unwrap(),
            ));
            eprintln!("kept {}", kept.display());
        }
        panic!("e2e checks failed: {failed:?}");
    }
}

async fn check_available(c: &Cluster) -> Check {
    let mut seen = Vec::new();
    for name in APISERVICES {
        let path = format!("/apis/apiregistration.k8s.io/v1/apiservices/{name}");
        let got = wait_for(Duration::from_secs(90), async || {
            let (code, body) = c.admin_get(&path).await;
            match condition(&body, "Available") {
                Some(cond) if cond["status"] == "True" => Ok(()),
                Some(cond) => Err(format!(
                    "{name}: Available={} ({}: {})",
                    cond["status"], cond["reason"], cond["message"]
                )),
                None => Err(format!("{name}: {code}, no Available condition")),
            }
        })
        .await;
        got?;
        seen.push(format!("{name} Available=True"));
    }
    Ok(seen.join(", "))
}

async fn check_discovery(c: &Cluster) -> Check {
    const ACCEPT: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
    let want = [
        ("external.metrics.k8s.io", "v1beta1"),
        ("custom.metrics.k8s.io", "v1beta1"),
        ("custom.metrics.k8s.io", "v1beta2"),
    ];
    wait_for(Duration::from_secs(60), async || {
        let (code, body) = c.get(&c.admin, "/apis", Some(ACCEPT)).await;
        if code != 200 || body["kind"] != "APIGroupDiscoveryList" {
            return Err(format!("GET /apis: {code} kind {}", body["kind"]));
        }
        let mut seen = Vec::new();
        for (group, version) in want {
            let g = body["items"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|g| g["metadata"]["name"] == group)
                .ok_or(format!("{group} not in aggregated discovery"))?;
            let v = g["versions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|v| v["version"] == version)
                .ok_or(format!(
                    "{group}/{version} not in aggregated discovery: {g}"
                ))?;
            let freshness = v["freshness"].as_str().unwrap_or("(absent)");
            if freshness != "Current" {
                return Err(format!("{group}/{version} freshness {freshness}"));
            }
            let resources = v["resources"].as_array().map_or(0, Vec::len);
            seen.push(format!("{group}/{version} Current ({resources} resources)"));
        }
        Ok(seen.join(", "))
    })
    .await
}

async fn check_auth(c: &Cluster, https: SocketAddr, cert_dir: &Path) -> Check {
    let serving = std::fs::read(cert_dir.join("apiserver.crt")).map_err(|e| e.to_string())?;
    let base = || {
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&serving).unwrap())
            .timeout(Duration::from_secs(10))
    };
    let path = format!("/apis/external.metrics.k8s.io/v1beta1/namespaces/{NS}/{EXTERNAL}");
    let direct = format!("https://{https}{path}");
    // No credentials at prescale: 401.
    let anonymous = base().build().unwrap();
    let code = anonymous
        .get(&direct)
        .send()
        .await
        .map_err(|e| e.to_string())?
        .status()
        .as_u16();
    if code != 401 {
        return Err(format!("no credentials at prescale: {code}, want 401"));
    }
    // The front proxy's certificate, a user without RBAC rights: prescale's
    // SubjectAccessReview denies, 403.
    let client = c.front_proxy_ca.client("front-proxy-client");
    let identity = format!("{}{}", client.cert_pem, client.key_pem);
    let front_proxy = base()
        .identity(reqwest::Identity::from_pem(identity.as_bytes()).unwrap())
        .build()
        .unwrap();
    let code = front_proxy
        .get(&direct)
        .header("X-Remote-User", "e2e-nobody")
        .header("X-Remote-Group", "e2e-nobodies")
        .send()
        .await
        .map_err(|e| e.to_string())?
        .status()
        .as_u16();
    if code != 403 {
        return Err(format!(
            "front-proxy user without rights at prescale: {code}, want 403"
        ));
    }
    // The same front proxy vouching for the HPA controller's ServiceAccount (bound
    // to prescale-metrics-reader by deploy/base): 200.
    let hpa_user = front_proxy
        .get(&direct)
        .header(
            "X-Remote-User",
            "system:serviceaccount:kube-system:horizontal-pod-autoscaler",
        )
        .header("X-Remote-Group", "system:serviceaccounts")
        .send()
        .await
        .map_err(|e| e.to_string())?
        .status()
        .as_u16();
    if hpa_user != 200 {
        return Err(format!(
            "front-proxy HPA controller at prescale: {hpa_user}, want 200"
        ));
    }
    // A token user without rights, through the apiserver: 403.
    let (code, body) = c.get(&c.nobody, &path, None).await;
    if code != 403 {
        return Err(format!(
            "token user without rights via the apiserver: {code} {body}, want 403"
        ));
    }
    // The admin through the aggregator: 200.
    let (admin, body) = c.admin_get(&path).await;
    if admin != 200 {
        return Err(format!("admin via the apiserver: {admin} {body}, want 200"));
    }
    Ok("anonymous→prescale 401, front-proxy nobody→prescale 403, front-proxy HPA SA→prescale 200, \
        token nobody→apiserver 403, admin→apiserver 200"
        .to_string())
}

fn check_kustomizations(c: &Cluster) -> Check {
    let out = c.kubectl(&[
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/certificates.cert-manager.io",
        "crd/issuers.cert-manager.io",
        "crd/capacitybuffers.autoscaling.x-k8s.io",
    ]);
    if !out.status.success() {
        return Err(format!(
            "CRDs not Established: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let mut seen = Vec::new();
    for k in [
        "deploy/base",
        "deploy/overlays/dev",
        "deploy/overlays/cert-manager",
        "deploy/examples",
    ] {
        let out = c.kubectl(&["apply", "--dry-run=server", "-k", k]);
        if !out.status.success() {
            return Err(format!(
                "{k}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let objects = String::from_utf8_lossy(&out.stdout).lines().count();
        seen.push(format!("{k} ({objects} objects)"));
    }
    Ok(seen.join(", "))
}

async fn check_hpa(c: &Cluster, name: &str, metric_path: &str, target: &str) -> Check {
    let target = quantity(&Value::String(target.to_string()));
    let hpa_path = format!("/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers/{name}");
    let mut last = String::new();
    let got = wait_for(Duration::from_secs(120), async || {
        let (code, body) = c.admin_get(metric_path).await;
        let served = sum_values(&body).ok_or(format!("GET {metric_path}: {code} {body}"))?;
        let want = (served / target).ceil().clamp(1.0, 10.0) as i64;
        let (_, hpa) = c.admin_get(&hpa_path).await;
        let current = hpa["status"]["currentReplicas"].as_i64().unwrap_or(-1);
        let desired = hpa["status"]["desiredReplicas"].as_i64().unwrap_or(-1);
        last = format!(
            "served {served}, target {target}, want {want}; HPA current {current} desired {desired}, conditions {}",
            hpa["status"]["conditions"]
        );
        if current == want && desired == want {
            Ok(format!("served {served} / target {target} → {want} replicas; HPA current {current}, desired {desired}"))
        } else {
            Err(last.clone())
        }
    })
    .await;
    got.map_err(|e| format!("{e} (last: {last})"))
}

async fn check_lease(c: &Cluster) -> Check {
    wait_for(Duration::from_secs(30), async || {
        let (code, lease) = c
            .admin_get(
                "/apis/coordination.k8s.io/v1/namespaces/prescale/leases/prescale-capacity-buffers",
            )
            .await;
        let holder = lease["spec"]["holderIdentity"].as_str().unwrap_or_default();
        if code == 200 && holder == "prescale-e2e-0" {
            Ok(format!(
                "holder {holder}, renewTime {}, duration {}s",
                lease["spec"]["renewTime"], lease["spec"]["leaseDurationSeconds"]
            ))
        } else {
            Err(format!("{code} {lease}"))
        }
    })
    .await
}

async fn check_nodepool(c: &Cluster) -> Check {
    let metric = |m: &str| {
        format!("/apis/external.metrics.k8s.io/v1beta1/namespaces/{NS}/{m}?labelSelector=nodepool%3De2e")
    };
    wait_for(Duration::from_secs(60), async || {
        let (code, nodes) = c.admin_get(&metric("prescale_nodepool_nodes")).await;
        let n = sum_values(&nodes).ok_or(format!("prescale_nodepool_nodes: {code} {nodes}"))?;
        let (code, balloons) = c.admin_get(&metric("prescale_nodepool_balloons")).await;
        let b = sum_values(&balloons)
            .ok_or(format!("prescale_nodepool_balloons: {code} {balloons}"))?;
        let (code, buffer) = c
            .admin_get(&format!(
                "/apis/autoscaling.x-k8s.io/v1beta1/namespaces/{NS}/capacitybuffers/prescale-e2e"
            ))
            .await;
        if code != 200 {
            return Err(format!(
                "nodes {n}, balloons {b}; CapacityBuffer: {code} {buffer}"
            ));
        }
        let replicas = buffer["spec"]["replicas"].as_f64().unwrap_or(-1.0);
        // Served values are shaped so that the balloon HPA's AverageValue target
        // (balloon_target "1") yields the count: ceil(served / 1).
        let (nodes, want) = (n.ceil(), b.ceil());
        // The plan: workload `ext` at ceil(forecast / 50) replicas of 1500m / 1Gi,
        // two to a Node of 4 cpu / 8Gi (read from the API), min 1, max 10 nodes; the
        // balloons are the nodes needed less the nodes its current pods take.
        let (code, ext) = c.admin_get(&format!(
            "/apis/external.metrics.k8s.io/v1beta1/namespaces/{NS}/{EXTERNAL}?labelSelector=queue%3Djobs"
        )).await;
        let forecast = sum_values(&ext).ok_or(format!("{EXTERNAL}: {code} {ext}"))?;
        let (_, pods) = c.admin_get(&format!("/api/v1/namespaces/{NS}/pods?labelSelector=app%3Dext")).await;
        let current = pods["items"].as_array().map_or(0, |p| {
            p.iter().filter(|p| p["metadata"]["deletionTimestamp"].is_null()).count()
        }) as f64;
        let plan_nodes = ((forecast / 50.0).ceil() / 2.0).ceil().clamp(1.0, 10.0);
        let plan_balloons = (plan_nodes - (current / 2.0).ceil()).max(0.0);
        if nodes != plan_nodes || want != plan_balloons {
            return Err(format!(
                "nodes {n}, balloons {b}; want {plan_nodes} and {plan_balloons} for forecast {forecast} and {current} current pods"
            ));
        }
        if replicas != want {
            return Err(format!(
                "CapacityBuffer spec.replicas {replicas}, balloons served {b} (ceil {want})"
            ));
        }
        Ok(format!(
            "workload forecast {forecast} (→ {} replicas, {current} running), \
             prescale_nodepool_nodes {n} (→ {nodes} nodes), prescale_nodepool_balloons {b} (→ {want}) \
             for 2 Nodes of 4 cpu / 8Gi read from the API; CapacityBuffer prescale-e2e spec.replicas {replicas}, \
             podTemplateRef {}",
            (forecast / 50.0).ceil(),
            buffer["spec"]["podTemplateRef"]
        ))
    })
    .await
}

async fn scaling_active(c: &Cluster) -> Vec<String> {
    let mut out = Vec::new();
    for name in ["ext", "web", "db"] {
        let (_, hpa) = c
            .admin_get(&format!(
                "/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers/{name}"
            ))
            .await;
        let cond = condition(&hpa, "ScalingActive")
            .cloned()
            .unwrap_or(Value::Null);
        out.push(format!(
            "{name}:{}:{}:{}",
            cond["status"].as_str().unwrap_or("?"),
            cond["reason"].as_str().unwrap_or("?"),
            hpa["status"]["currentReplicas"]
        ));
    }
    out
}

async fn check_staleness(c: &Cluster, pid: &str) -> Check {
    let signal = |sig: &str| {
        Command::new("kill")
            .args([sig, pid])
            .status()
            .is_ok_and(|s| s.success())
    };
    let before = scaling_active(c).await;
    if !signal("-STOP") {
        return Err("cannot SIGSTOP prometheus".into());
    }
    let paused = Instant::now();
    let inactive = wait_for(Duration::from_secs(MAX_STALENESS_S + 60), async || {
        let s = scaling_active(c).await;
        if s.iter().all(|x| x.split(':').nth(1) == Some("False")) {
            Ok(s)
        } else {
            Err(s.join(" "))
        }
    })
    .await;
    let inactive_after = paused.elapsed();
    signal("-CONT");
    let inactive = inactive?;
    // Not before max_staleness less one refresh step (the last good refresh may
    // predate the pause by up to a step), and the replicas held.
    let earliest = Duration::from_millis(MAX_STALENESS_S * 1000 - STEP_MS as u64);
    if inactive_after < earliest {
        return Err(format!(
            "ScalingActive False after {inactive_after:?}, before max_staleness ({MAX_STALENESS_S}s) less a step"
        ));
    }
    let replicas = |s: &[String]| {
        s.iter()
            .map(|x| x.rsplit(':').next().unwrap_or_default().to_string())
            .collect::<Vec<_>>()
    };
    if replicas(&before) != replicas(&inactive) {
        return Err(format!(
            "replicas not held while metrics were stale: before {before:?}, stale {inactive:?}"
        ));
    }
    let resumed = Instant::now();
    let active = wait_for(Duration::from_secs(60), async || {
        let s = scaling_active(c).await;
        if s.iter().all(|x| x.split(':').nth(1) == Some("True")) {
            Ok(s)
        } else {
            Err(s.join(" "))
        }
    })
    .await?;
    Ok(format!(
        "before {before:?}; paused → all False after {inactive_after:.1?} {inactive:?}; resumed → all True after {:.1?} {active:?}",
        resumed.elapsed()
    ))
}

/// A log line reports a refused call when it says "forbidden" or carries the status
/// 403 as a number of its own. The leading timestamp is skipped and a 403 inside a
/// longer number (`13:21:33.340305Z`) is not a status.
fn mentions_forbidden(line: &str) -> bool {
    let rest = line.split_once(' ').map_or(line, |(_, r)| r);
    if rest.to_lowercase().contains("forbidden") {
        return true;
    }
    rest.split(|c: char| !c.is_ascii_digit())
        .any(|n| n == "403")
}

#[test]
fn a_timestamp_is_not_a_403() {
    assert!(!mentions_forbidden(
        "2026-12-05T13:21:33.340305Z  INFO prescale::kube::buffers: leadership changed"
    ));
    assert!(!mentions_forbidden(
        "2026-12-05T13:21:33Z INFO replicas=14030"
    ));
    assert!(mentions_forbidden(
        "2026-12-05T13:21:33Z WARN status 403 from the API"
    ));
    assert!(mentions_forbidden(
        "2026-12-05T13:21:33Z WARN leases is Forbidden"
    ));
}
