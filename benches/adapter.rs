//! prescale beside prometheus-adapter: request latency of the same External and
//! Pods metric, over the same Prometheus data, at 1, 10 and 100 concurrent callers,
//! both servers measured in one run.
//!
//! The HPA controller fetches its metrics one HPA after another, so the latency of
//! one request bounds how many HPAs a sync loop serves.
//!
//! Starts, all on 127.0.0.1: etcd, kube-apiserver and kube-controller-manager
//! (tests/it/e2e/cluster.rs; both servers delegate authentication and authorization to
//! it, and the Pods metric needs pods: a Deployment `web` of [`PODS_N`] pods, marked
//! Running through the status subresource, no kubelet); a real Prometheus backfilled
//! with constant series (an external `bench_queue_depth` per queue, and a
//! `bench_packets` per pod labelled `namespace`, `deployment`, `pod`); prescale
//! (`prescale serve`, this build, as its own ServiceAccount with deploy/base's RBAC)
//! with two `mode: shadow` signals, which serve the latest observation as an adapter
//! does; and prometheus-adapter (the pinned binary of tests/e2e/peers.sh, through
//! tests/it/e2e/adapter.rs) with the equivalent rules: the External metric is the series
//! as it is, the Pods metric the per-pod series summed per pod, where prescale sums
//! per Deployment and serves the total split over its pods.
//!
//! Both are called directly over HTTPS as the aggregator calls them: the front-proxy
//! client certificate, `X-Remote-User` the HPA controller's ServiceAccount, the
//! paths the HPA reads (`external.metrics.k8s.io/v1beta1 .../bench_queue_depth
//! ?labelSelector=queue=jobs`, `custom.metrics.k8s.io/v1beta1 .../pods/*/bench_packets
//! ?labelSelector=app=web`), HTTP/1.1 keep-alive, one connection per caller. Before
//! measuring, both must answer 200 with equal values. Per metric and concurrency:
//! a warm-up, then `PRESCALE_ADAPTER_REQUESTS` (default 2000) requests per server
//! in [`ROUNDS`] alternating bursts (closed loop: each caller sends its next request
//! when the last is answered). Prints p50, p99, requests/s and errors per server,
//! and the ratios adapter/prescale.
//!
//! The adapter runs with `--client-qps=1000 --client-burst=1000`: its default
//! (5 queries/s to the kube-apiserver, burst 10) would cap the Pods metric, which
//! lists the selected pods on every request, at about 5 requests/s, and the
//! comparison would measure a client-side rate limiter.
//!
//! `cargo bench --bench adapter` (peers: `bash tests/e2e/peers.sh`, Debian's
//! `etcd-server` and `prometheus`). A missing peer is reported and the bench exits
//! non-zero, as it does when a server answers an error or the two disagree.

#[path = "../tests/it/e2e/adapter.rs"]
mod adapter;
#[allow(dead_code)]
#[path = "../tests/it/e2e/cluster.rs"]
mod cluster;
#[path = "../tests/it/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prescale::clock::{Clock, SystemClock};
use prescale::series::{LabeledSeries, Series};
use serde_json::{json, Value};

use adapter::Adapter;
use cluster::{find_peers, kubeconfig, write, Cluster, Proc};
use support::labels;
use support::prometheus::{free_addr, http_status, Prometheus};

const NS: &str = "bench";
const EXTERNAL: &str = "bench_queue_depth";
const PODS: &str = "bench_packets";
/// Pods of the Deployment `web` the Pods metric describes.
const PODS_N: usize = 10;
const EXTERNAL_VALUE: f64 = 370.0;
const PER_POD_VALUE: f64 = 250.0;
const STEP_MS: i64 = 5_000;
const CALLERS: [usize; 3] = [1, 10, 100];
/// Bursts per server and level, alternating which server goes first, so that a
/// drifting background load on a shared machine falls on both.
const ROUNDS: usize = 4;
/// Who the front proxy vouches for: the HPA controller (deploy/base's
/// prescale-metrics-reader grants it both metrics APIs).
const HPA_USER: &str = "system:serviceaccount:kube-system:horizontal-pod-autoscaler";
const HPA_GROUP: &str = "system:serviceaccounts";

/// Constant series from 30 minutes ago to 150 minutes ahead (Prometheus serves
/// future samples once their time has come): the queue the HPA selects and another
/// one, and one series per pod.
fn series(pods: &[String]) -> Vec<LabeledSeries> {
    let now = SystemClock.now_ms();
    let start_ms = now - now.rem_euclid(STEP_MS) - 30 * 60_000;
    let n = (180 * 60_000 / STEP_MS) as usize;
    let constant = |v: f64| Series {
        start_ms,
        step_ms: STEP_MS,
        values: vec![v; n],
    };
    let mut out = vec![
        LabeledSeries {
            labels: labels(&[("__name__", EXTERNAL), ("queue", "jobs")]),
            series: constant(EXTERNAL_VALUE),
        },
        LabeledSeries {
            labels: labels(&[("__name__", EXTERNAL), ("queue", "other")]),
            series: constant(5000.0),
        },
    ];
    for pod in pods {
        out.push(LabeledSeries {
            labels: labels(&[
                ("__name__", PODS),
                ("namespace", NS),
                ("deployment", "web"),
                ("pod", pod),
            ]),
            series: constant(PER_POD_VALUE),
        });
    }
    out
}

/// prescale's config: the two metrics as shadow signals (the latest observation
/// served, as prometheus-adapter serves it); the Pods one per Deployment.
fn prescale_config(prom: &str, https: SocketAddr, plain: SocketAddr, cert_dir: &str) -> String {
    let signal = |name: &str, query: &str| {
        format!(
            "  - name: {name}\n    query: '{query}'\n    step: 5s\n    history: 30m\n    lead_time: 30s\n\
             \x20   model: seasonal-naive\n    min_history: 5m\n    mode: shadow\n"
        )
    };
    format!(
        "prometheus:\n  url: {prom}\n  timeout: 5s\n  freshness_query: ''\nsignals:\n{ext}{pods}\
         \x20   custom:\n      type: Pods\n      resources:\n        overrides:\n\
         \x20         namespace: {{resource: namespace}}\n          deployment: {{group: apps, resource: deployment}}\n\
         server:\n  https_address: {https}\n  http_address: {plain}\n  tls:\n    cert_dir: {cert_dir}\n\
         \x20   dns_names: [prescale.prescale.svc]\n  auth:\n    mode: kubernetes\n",
        ext = signal(EXTERNAL, EXTERNAL),
        pods = signal(PODS, &format!("sum by (namespace, deployment) ({PODS})")),
    )
}

/// The Deployment whose pods the Pods metric describes.
fn deployment() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": NS},
        "spec": {
            "replicas": PODS_N,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "automountServiceAccountToken": false,
                    "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}]
                }
            }
        }
    })
}

/// Waits for the Deployment's pods and marks them Running and Ready (there is no
/// kubelet); their names.
async fn running_pods(c: &Cluster) -> Result<Vec<String>, String> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let names = loop {
        let (code, list) = c
            .admin_get(&format!(
                "/api/v1/namespaces/{NS}/pods?labelSelector=app%3Dweb"
            ))
            .await;
        let names: Vec<String> = list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
            .collect();
        if code == 200 && names.len() == PODS_N {
            break names;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{} of {PODS_N} pods of Deployment web within 120 s ({code})",
                names.len()
            ));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let now = chrono::DateTime::from_timestamp_millis(SystemClock.now_ms())
        .expect("a time")
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    for (i, name) in names.iter().enumerate() {
        let ip = format!("10.244.0.{}", i + 10);
        let cond = |t: &str| json!({"type": t, "status": "True", "lastTransitionTime": now});
        let patch = json!({"status": {
            "phase": "Running", "hostIP": "127.0.0.1", "podIP": ip, "podIPs": [{"ip": ip}],
            "startTime": now,
            "conditions": [cond("PodScheduled"), cond("Initialized"), cond("ContainersReady"), cond("Ready")],
        }});
        let r = c
            .admin
            .patch(format!(
                "{}/api/v1/namespaces/{NS}/pods/{name}/status",
                c.url
            ))
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/merge-patch+json",
            )
            .body(patch.to_string())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !r.status().is_success() {
            return Err(format!("marking {name} Running: {}", r.status()));
        }
    }
    Ok(names)
}

/// A client as the aggregator is: the front-proxy certificate, the HPA controller
/// as the user, trusting `ca_pem`.
fn aggregator_client(ca_pem: &[u8], front_proxy: &support::pki::Pair) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("X-Remote-User", HPA_USER.parse().expect("a header value"));
    headers.insert("X-Remote-Group", HPA_GROUP.parse().expect("a header value"));
    let identity = format!("{}{}", front_proxy.cert_pem, front_proxy.key_pem);
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem).expect("a CA PEM"))
        .identity(reqwest::Identity::from_pem(identity.as_bytes()).expect("a client pair"))
        .default_headers(headers)
        .http1_only()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("a reqwest client")
}

fn quantity(v: &Value) -> Result<f64, String> {
    prescale::quantity::parse_f64(v.as_str().unwrap_or_default())
        .map_err(|e| format!("quantity {v}: {e:?}"))
}

/// What a MetricValueList says, by object (Pods: the pod's name) or by series
/// (External: its labels without `__name__`).
fn values(body: &Value) -> Result<BTreeMap<String, f64>, String> {
    let items = body["items"]
        .as_array()
        .ok_or_else(|| format!("not a MetricValueList: {body}"))?;
    let mut out = BTreeMap::new();
    for item in items {
        let key = match item["describedObject"]["name"].as_str() {
            Some(name) => name.to_string(),
            None => {
                let mut l = item["metricLabels"].clone();
                if let Some(m) = l.as_object_mut() {
                    m.remove("__name__");
                }
                l.to_string()
            }
        };
        out.insert(key, quantity(&item["value"])?);
    }
    Ok(out)
}

/// One server under test.
struct Server {
    name: &'static str,
    base: String,
    client: reqwest::Client,
}

impl Server {
    async fn get(&self, path: &str) -> Result<Value, String> {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .map_err(|e| format!("{}: {e}", self.name))?;
        let code = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        if code != 200 {
            return Err(format!("{}: {code} {text}", self.name));
        }
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}: {text}", self.name))
    }
}

/// Latencies and errors of one server at one level.
#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    errors: usize,
    busy: Duration,
}

/// `total` requests of `url` by `callers` concurrent callers, closed loop.
async fn burst(
    client: &reqwest::Client,
    url: &str,
    total: usize,
    callers: usize,
    into: &mut Tally,
) {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    let started = Instant::now();
    for _ in 0..callers {
        let (client, url, next) = (client.clone(), url.to_string(), Arc::clone(&next));
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0;
            while next.fetch_add(1, Ordering::Relaxed) < total {
                let sent = Instant::now();
                let ok = match client.get(&url).send().await {
                    Ok(r) => r.status().as_u16() == 200 && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                if ok {
                    latencies.push(sent.elapsed());
                } else {
                    errors += 1;
                }
            }
            (latencies, errors)
        });
    }
    while let Some(done) = tasks.join_next().await {
        let (latencies, errors) = done.expect("a caller task");
        into.latencies.extend(latencies);
        into.errors += errors;
    }
    into.busy += started.elapsed();
}

fn percentile(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e3
}

/// p50 (ms), p99 (ms), requests/s.
fn figures(t: &mut Tally) -> (f64, f64, f64) {
    t.latencies.sort();
    let rate = t.latencies.len() as f64 / t.busy.as_secs_f64().max(1e-9);
    (
        percentile(&t.latencies, 0.5),
        percentile(&t.latencies, 0.99),
        rate,
    )
}

fn requests() -> usize {
    std::env::var("PRESCALE_ADAPTER_REQUESTS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(2000usize)
        .max(ROUNDS)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if let Err(why) = run().await {
        eprintln!("adapter bench: {why}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), String> {
    let peers = find_peers()?;
    // A bench is not a test: a missing peer is an error here, in CI or not.
    support::peers::pinned("prometheus-adapter", &support::peers::adapter_version())?;
    let started = Instant::now();
    let cluster = Cluster::start(&peers).await;

    // prescale's identity and the HPA controller's right to read both APIs
    // (deploy/base), the namespace, the Deployment and its pods.
    cluster.kubectl_ok(&[
        "apply",
        "-f",
        "deploy/base/namespace.yaml",
        "-f",
        "deploy/base/rbac.yaml",
    ]);
    cluster.apply(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}));
    let sa_path = format!("/api/v1/namespaces/{NS}/serviceaccounts/default");
    let deadline = Instant::now() + Duration::from_secs(60);
    while cluster.admin_get(&sa_path).await.0 != 200 {
        if Instant::now() > deadline {
            return Err(format!(
                "no default ServiceAccount in {NS} within 60 s (serviceaccount-controller)"
            ));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    cluster.apply(&deployment());
    let pods = running_pods(&cluster).await?;

    let prom = Prometheus::start(&series(&pods));

    // prescale, as its ServiceAccount.
    let token = cluster
        .kubectl_ok(&[
            "create",
            "token",
            "prescale",
            "-n",
            "prescale",
            "--duration=12h",
        ])
        .trim()
        .to_string();
    let sa_kubeconfig = cluster.path("prescale.kubeconfig");
    write(
        &sa_kubeconfig,
        &kubeconfig(&cluster.url, &cluster.ca_file, &token),
    );
    let (https, plain) = (free_addr(), free_addr());
    let cert_dir = cluster.path("prescale-certs");
    let config_path = cluster.path("prescale.yaml");
    write(
        &config_path,
        &prescale_config(&prom.url(), https, plain, &cert_dir.display().to_string()),
    );
    let mut prescale = Proc::spawn(
        "prescale",
        Command::new(env!("CARGO_BIN_EXE_prescale"))
            .args(["serve", "--config"])
            .arg(&config_path)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env("KUBECONFIG", &sa_kubeconfig)
            .env("RUST_LOG", "warn"),
        cluster.dir.path(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while http_status(plain, "/readyz") != Some(200) {
        prescale.assert_running();
        if Instant::now() > deadline {
            return Err(format!("prescale not ready:\n{}", prescale.log_tail(40)));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let mut adapter = Adapter::start(
        &cluster,
        &prom.url(),
        &adapter::rules(&[EXTERNAL], &[PODS]),
        &["--client-qps=1000", "--client-burst=1000"],
    )
    .await;

    let front_proxy = cluster.front_proxy_ca.client("front-proxy-client");
    let prescale_ca = std::fs::read(cert_dir.join("apiserver.crt"))
        .map_err(|e| format!("prescale's serving certificate: {e}"))?;
    let servers = [
        Server {
            name: "prescale",
            base: format!("https://{https}"),
            client: aggregator_client(&prescale_ca, &front_proxy),
        },
        Server {
            name: "adapter",
            base: adapter.url.clone(),
            client: aggregator_client(adapter.ca_pem.as_bytes(), &front_proxy),
        },
    ];
    let metrics = [
        (
            "External",
            format!(
                "/apis/external.metrics.k8s.io/v1beta1/namespaces/{NS}/{EXTERNAL}?labelSelector=queue%3Djobs"
            ),
        ),
        (
            "Pods",
            format!(
                "/apis/custom.metrics.k8s.io/v1beta1/namespaces/{NS}/pods/*/{PODS}?labelSelector=app%3Dweb"
            ),
        ),
    ];

    // Both answer 200 with the same values before anything is measured (the
    // adapter's first re-list and prescale's first refresh take a few seconds).
    for (metric, path) in &metrics {
        adapter
            .wait_for(path, HPA_USER, HPA_GROUP, Duration::from_secs(60))
            .await?;
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut answers = Vec::new();
        for s in &servers {
            let body = loop {
                match s.get(path).await {
                    Ok(body) => break body,
                    Err(e) if Instant::now() > deadline => return Err(e),
                    Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
                }
            };
            answers.push(values(&body)?);
        }
        let (ours, theirs) = (&answers[0], &answers[1]);
        let equal = ours.len() == theirs.len()
            && ours.iter().all(|(k, v)| {
                theirs
                    .get(k)
                    .is_some_and(|w| (v - w).abs() <= 1e-9 * v.abs().max(1.0))
            });
        if !equal || ours.is_empty() {
            return Err(format!(
                "{metric}: the servers disagree: prescale {ours:?}, adapter {theirs:?}"
            ));
        }
        println!(
            "{metric}: both 200 with equal values, {} item(s): {:?}",
            ours.len(),
            ours.values().collect::<Vec<_>>()
        );
    }

    let total = requests();
    let per_burst = total / ROUNDS;
    println!(
        "ready after {:.0?}; {} requests per server and level in {ROUNDS} alternating bursts, after a warm-up",
        started.elapsed(),
        per_burst * ROUNDS
    );
    println!(
        "\n{:<9} {:>7}  {:<17} {:>9} {:>9} {:>9} {:>7}",
        "metric", "callers", "server", "p50 ms", "p99 ms", "req/s", "errors"
    );
    let mut failed = false;
    for (metric, path) in &metrics {
        for callers in CALLERS {
            let mut tallies = [Tally::default(), Tally::default()];
            for s in &servers {
                // Opens the callers' connections and fills the caches.
                burst(
                    &s.client,
                    &format!("{}{path}", s.base),
                    (callers * 4).max(100),
                    callers,
                    &mut Tally::default(),
                )
                .await;
            }
            for round in 0..ROUNDS {
                let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
                for i in order {
                    let s = &servers[i];
                    burst(
                        &s.client,
                        &format!("{}{path}", s.base),
                        per_burst,
                        callers,
                        &mut tallies[i],
                    )
                    .await;
                }
            }
            let mut f = Vec::new();
            for (s, t) in servers.iter().zip(tallies.iter_mut()) {
                let (p50, p99, rate) = figures(t);
                failed |= t.errors > 0;
                println!(
                    "{metric:<9} {callers:>7}  {:<17} {p50:>9.3} {p99:>9.3} {rate:>9.0} {:>7}",
                    s.name, t.errors
                );
                f.push((p50, p99, rate));
            }
            println!(
                "{:<9} {:>7}  {:<17} {:>8.1}x {:>8.1}x {:>8.2}x",
                "",
                "",
                "adapter/prescale",
                f[1].0 / f[0].0,
                f[1].1 / f[0].1,
                f[1].2 / f[0].2
            );
        }
    }
    prescale.assert_running();
    if !adapter.is_running() {
        return Err(format!(
            "prometheus-adapter exited:\n{}",
            adapter.log_tail(40)
        ));
    }
    let forbidden: Vec<String> =
        std::fs::read_to_string(adapter.dir.join("prometheus-adapter.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("forbidden"))
            .map(str::to_string)
            .collect();
    if !forbidden.is_empty() {
        return Err(format!(
            "prometheus-adapter was refused calls:\n{}",
            forbidden.join("\n")
        ));
    }
    println!("\ndone after {:.0?}", started.elapsed());
    if failed {
        return Err("requests failed (errors column)".into());
    }
    Ok(())
}
