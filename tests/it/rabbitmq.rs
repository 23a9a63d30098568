//! A real RabbitMQ (Debian's `rabbitmq-server` with the `rabbitmq_prometheus`
//! plugin), scraped by a real Prometheus with the scrape job shipped in
//! `deploy/examples/prometheus-scrape.yaml`, forecast and served by `prescale serve`
//! with the signal shipped in `deploy/examples/prescale.yaml`. A publisher drives one
//! queue's depth (a sinusoid plus two bursts, consumed back down); a second queue
//! stays empty. The value served for the busy queue is compared, sample by sample,
//! with the queue's real depth at the same moment (`rabbitmqctl list_queues`).
//!
//! Everything runs on 127.0.0.1 on free ports in a temporary directory, with its own
//! node name, Erlang cookie and epmd, so it neither needs nor disturbs a system
//! RabbitMQ. In CI (`CI=true`) missing `rabbitmq-server` or `prometheus` is a
//! failure; elsewhere the test skips with the reason.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::prometheus::{available as prometheus_available, free_addr, Prometheus};
use crate::support::Killed;
use serde_yaml::Value;

/// The signal of `deploy/examples/prescale.yaml` this test serves.
const SIGNAL: &str = "rabbitmq_queue_messages";
/// The scrape job of `deploy/examples/prometheus-scrape.yaml` this test uses.
const JOB: &str = "rabbitmq-per-object";
/// The queue the publisher drives, and one that stays empty.
const BUSY: &str = "llm-agent-tasks";
const QUIET: &str = "llm-agent-retries";
/// Any namespace: the example signal has no namespace allow-list.
const NAMESPACE: &str = "llm";
/// Samples to take of served value and real depth (the issue asks for at least 60).
const SAMPLES: usize = 70;
const MIN_SAMPLES: usize = 60;
/// Time between the starts of two samples, and the longest time spent sampling.
const SAMPLE_EVERY: Duration = Duration::from_millis(1_500);
const SAMPLING_FOR: Duration = Duration::from_secs(150);

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where the RabbitMQ scripts are that take their settings from the environment.
/// Debian's `/usr/sbin/rabbitmq-server` and `rabbitmqctl` are wrappers that, run as
/// root, switch to the `rabbitmq` user with its own HOME (cookie) and working
/// directory; the scripts they wrap are in `/usr/lib/rabbitmq/bin`. Elsewhere (a
/// generic-unix tarball) the scripts on PATH are the real ones.
fn rabbitmq_bin() -> Option<PathBuf> {
    let debian = Path::new("/usr/lib/rabbitmq/bin");
    let usable = |d: &Path| d.join("rabbitmq-server").is_file() && d.join("rabbitmqctl").is_file();
    if usable(debian) {
        return Some(debian.to_path_buf());
    }
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .find(|d| usable(d))
}

fn epmd_available() -> bool {
    Command::new("epmd")
        .arg("-help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// A RabbitMQ node of its own: its epmd, its node name, ports, cookie (in HOME),
/// data and logs, all in a temporary directory; every process is killed on drop.
struct RabbitMq {
    /// The `rabbitmq-server` script (it runs the Erlang VM as a child and waits for it).
    server: Child,
    epmd: Child,
    env: Vec<(String, String)>,
    bin: PathBuf,
    node: String,
    management: SocketAddr,
    prometheus: SocketAddr,
    dir: tempfile::TempDir,
}

impl RabbitMq {
    fn start(bin: PathBuf) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let d = dir.path();
        let [amqp, dist, epmd, ctl, management, prometheus] = [(); 6].map(|()| free_addr());
        let node = format!("prescale-test-{}@localhost", std::process::id());
        std::fs::write(
            d.join("rabbitmq.conf"),
            format!(
                "listeners.tcp.default = {amqp}\n\
                 management.tcp.ip = 127.0.0.1\n\
                 management.tcp.port = {}\n\
                 prometheus.tcp.ip = 127.0.0.1\n\
                 prometheus.tcp.port = {}\n\
                 # Queue metrics (what the plugin exports) are refreshed every\n\
                 # collect_statistics_interval (default 5 s, a third of the example's\n\
                 # 15 s scrape interval); the test scrapes every second.\n\
                 collect_statistics_interval = 1000\n",
                management.port(),
                prometheus.port()
            ),
        )
        .expect("write rabbitmq.conf");
        std::fs::write(
            d.join("enabled_plugins"),
            "[rabbitmq_management,rabbitmq_prometheus].\n",
        )
        .expect("write enabled_plugins");
        let path = |name: &str| d.join(name).display().to_string();
        // Both distribution listeners (the node's and rabbitmqctl's) on loopback only.
        let loopback = "-kernel inet_dist_use_interface {127,0,0,1}".to_string();
        let env: Vec<(String, String)> = [
            ("HOME", path("")),
            ("RABBITMQ_NODENAME", node.clone()),
            ("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1".into()),
            ("RABBITMQ_NODE_PORT", amqp.port().to_string()),
            ("RABBITMQ_DIST_PORT", dist.port().to_string()),
            ("ERL_EPMD_PORT", epmd.port().to_string()),
            ("ERL_EPMD_ADDRESS", "127.0.0.1".into()),
            ("RABBITMQ_CTL_DIST_PORT_MIN", ctl.port().to_string()),
            ("RABBITMQ_CTL_DIST_PORT_MAX", ctl.port().to_string()),
            ("RABBITMQ_MNESIA_BASE", path("mnesia")),
            ("RABBITMQ_LOG_BASE", path("log")),
            ("RABBITMQ_PID_FILE", path("rabbitmq.pid")),
            ("RABBITMQ_CONFIG_FILE", path("rabbitmq.conf")),
            // Neither /etc/rabbitmq/rabbitmq-env.conf nor advanced.config: these
            // paths do not exist.
            ("RABBITMQ_CONF_ENV_FILE", path("rabbitmq-env.conf")),
            ("RABBITMQ_ADVANCED_CONFIG_FILE", path("advanced.config")),
            ("RABBITMQ_ENABLED_PLUGINS_FILE", path("enabled_plugins")),
            ("RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS", loopback.clone()),
            ("RABBITMQ_CTL_ERL_ARGS", loopback),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();

        // Our own epmd in the foreground (the node would otherwise start a daemon
        // that outlives the test); the node finds it through ERL_EPMD_PORT.
        let epmd_child = Command::new("epmd")
            .arg("-port")
            .arg(epmd.port().to_string())
            .arg("-address")
            .arg("127.0.0.1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("epmd.log")).expect("epmd log"))
            .spawn()
            .expect("epmd runs (erlang-base)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(epmd).is_err() {
            assert!(Instant::now() < deadline, "epmd did not listen on {epmd}");
            std::thread::sleep(Duration::from_millis(50));
        }

        let log = std::fs::File::create(d.join("server.out")).expect("server log");
        let mut cmd = Command::new(bin.join("rabbitmq-server"));
        clear_rabbitmq_env(&mut cmd);
        let server = cmd
            .envs(env.iter().map(|(k, v)| (k, v)))
            .current_dir(d)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("rabbitmq-server runs");
        Self {
            server,
            epmd: epmd_child,
            env,
            bin,
            node,
            management,
            prometheus,
            dir,
        }
    }

    /// Waits until the management API and the Prometheus endpoint answer.
    async fn wait_ready(&mut self, http: &reqwest::Client) {
        let deadline = Instant::now() + Duration::from_secs(120);
        let overview = format!("{}/overview", self.api());
        let metrics = format!("http://{}/metrics", self.prometheus);
        loop {
            let ok = |r: Result<reqwest::Response, reqwest::Error>| {
                r.is_ok_and(|r| r.status().is_success())
            };
            if ok(http
                .get(&overview)
                .basic_auth("guest", Some("guest"))
                .send()
                .await)
                && ok(http.get(&metrics).send().await)
            {
                return;
            }
            if let Ok(Some(status)) = self.server.try_wait() {
                panic!(
                    "rabbitmq-server exited with {status} before getting ready:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "RabbitMQ not ready after 120 s:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    fn api(&self) -> String {
        format!("http://{}/api", self.management)
    }

    /// The queues' real depth (messages ready), asked of the queue processes
    /// themselves by `rabbitmqctl list_queues`, not of the statistics the plugin
    /// exports.
    async fn list_queues(&self) -> Result<Vec<(String, f64)>, String> {
        let mut cmd = tokio::process::Command::new(self.bin.join("rabbitmqctl"));
        clear_rabbitmq_env(cmd.as_std_mut());
        let out = cmd
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(self.dir.path())
            .args(["-n", &self.node, "-q", "list_queues", "--formatter", "json"])
            .args(["name", "messages_ready"])
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| format!("rabbitmqctl: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "rabbitmqctl list_queues: {}: {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).map_err(|e| {
            format!(
                "rabbitmqctl list_queues: not JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                Some((
                    r["name"].as_str()?.to_string(),
                    r["messages_ready"].as_f64()?,
                ))
            })
            .collect())
    }

    fn log(&self) -> String {
        let read = |p: PathBuf| std::fs::read_to_string(p).unwrap_or_default();
        let node_log = read(
            self.dir
                .path()
                .join("log")
                .join(format!("{}.log", self.node)),
        );
        let tail = |s: &str| {
            let lines: Vec<&str> = s.lines().collect();
            lines[lines.len().saturating_sub(40)..].join("\n")
        };
        format!(
            "--- rabbitmq-server output:\n{}\n--- node log (tail):\n{}",
            tail(&read(self.dir.path().join("server.out"))),
            tail(&node_log)
        )
    }
}

impl Drop for RabbitMq {
    fn drop(&mut self) {
        // The Erlang VM is the script's child: killing the script leaves it running.
        // Its OS pid is in the pid file the node writes once started, and (before
        // that) among the script's children; its port programs exit with it.
        let sh = self.server.id();
        let mut pids: Vec<String> = std::fs::read_to_string(self.dir.path().join("rabbitmq.pid"))
            .unwrap_or_default()
            .split_whitespace()
            .map(String::from)
            .collect();
        pids.extend(
            std::fs::read_to_string(format!("/proc/{sh}/task/{sh}/children"))
                .unwrap_or_default()
                .split_whitespace()
                .map(String::from),
        );
        pids.retain(|p| p.parse::<u32>().is_ok_and(|p| p > 1));
        if !pids.is_empty() {
            let _ = Command::new("sh")
                .arg("-c")
                .arg(format!("kill -s KILL {}", pids.join(" ")))
                .stderr(Stdio::null())
                .status();
            // The script reaps the VM and exits on its own.
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(self.server.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = self.server.kill();
        let _ = self.server.wait();
        let _ = self.epmd.kill();
        let _ = self.epmd.wait();
    }
}

/// RabbitMQ and Erlang settings the test's own environment may carry (a developer's
/// shell, a CI image) are not passed on: the node gets exactly the test's.
fn clear_rabbitmq_env(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("RABBITMQ_") || k.starts_with("ERL_") {
            cmd.env_remove(k.as_ref());
        }
    }
}

/// The depth the publisher aims for `t` seconds after it starts: a sinusoid between
/// 100 and 300 with a one-minute period, plus two bursts of 300 messages that are
/// consumed back down over 20 seconds. The queue fills up over the first 20 seconds
/// rather than jumping from 0 to 200 in its first second (a new queue's first
/// scrape would otherwise record a jump of 200 that no real queue with a history
/// has, and its calibration would carry it for the whole test).
fn target_depth(t: f64) -> f64 {
    let ramp = (t / 20.0).clamp(0.0, 1.0);
    let wave = ramp * (200.0 + 100.0 * (2.0 * std::f64::consts::PI * t / 60.0).sin());
    let burst = |start: f64| {
        let dt = t - start;
        if (0.0..3.0).contains(&dt) {
            300.0
        } else if (3.0..23.0).contains(&dt) {
            300.0 * (1.0 - (dt - 3.0) / 20.0)
        } else {
            0.0
        }
    };
    (wave + burst(75.0) + burst(135.0)).round()
}

/// Drives the busy queue towards [`target_depth`] through the management API until
/// `stop`: publishes what is missing, gets (and acknowledges) what is too much. It is
/// the queue's only producer and consumer, so its own count is the depth.
async fn publish(http: reqwest::Client, api: String, stop: Arc<AtomicBool>) -> Result<(), String> {
    let start = Instant::now();
    let publish_url = format!("{api}/exchanges/%2F/amq.default/publish");
    let get_url = format!("{api}/queues/%2F/{BUSY}/get");
    let message = serde_json::json!({
        "properties": {}, "routing_key": BUSY, "payload": "task", "payload_encoding": "string"
    });
    let mut depth = 0.0_f64;
    while !stop.load(Ordering::Relaxed) {
        let target = target_depth(start.elapsed().as_secs_f64());
        if target > depth {
            // At most 50 at a time, so a burst builds up over a second or so.
            let n = (target - depth).min(50.0) as usize;
            let mut set = tokio::task::JoinSet::new();
            for _ in 0..n {
                let req = http
                    .post(&publish_url)
                    .basic_auth("guest", Some("guest"))
                    .json(&message);
                set.spawn(async move { req.send().await.and_then(|r| r.error_for_status()) });
            }
            while let Some(r) = set.join_next().await {
                r.map_err(|e| format!("publish task: {e}"))?
                    .map_err(|e| format!("publish: {e}"))?;
                depth += 1.0;
            }
        } else if target < depth {
            let got: Vec<serde_json::Value> = http
                .post(&get_url)
                .basic_auth("guest", Some("guest"))
                .json(&serde_json::json!({
                    "count": (depth - target) as u64, "ackmode": "ack_requeue_false", "encoding": "auto"
                }))
                .send()
                .await
                .and_then(|r| r.error_for_status())
                .map_err(|e| format!("get: {e}"))?
                .json()
                .await
                .map_err(|e| format!("get: {e}"))?;
            depth -= got.len() as f64;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// The `rabbitmq-per-object` job of the shipped scrape config, as written except for
/// where the target is and how often it is scraped: the Kubernetes service discovery
/// becomes one static target at the test's RabbitMQ, carrying the meta label that
/// Prometheus' `role: endpointslice` discovery gives an endpoint port numbered 15692
/// (`__meta_kubernetes_endpointslice_port`), so that the job's own relabelling runs
/// as written (it once kept on a label discovery never sets, and dropped every
/// target); and `scrape_interval` is 1s instead of 15s (the test's time is
/// compressed: the signal's step is 2s below).
fn scrape_config(target: SocketAddr) -> String {
    let text = std::fs::read_to_string(repo().join("deploy/examples/prometheus-scrape.yaml"))
        .expect("read deploy/examples/prometheus-scrape.yaml");
    let doc: Value = serde_yaml::from_str(&text).expect("prometheus-scrape.yaml is YAML");
    let mut job = doc["scrape_configs"]
        .as_sequence()
        .and_then(|jobs| jobs.iter().find(|j| j["job_name"].as_str() == Some(JOB)))
        .unwrap_or_else(|| panic!("prometheus-scrape.yaml has no job {JOB:?}"))
        .clone();
    let map = job.as_mapping_mut().expect("a job is a mapping");
    assert!(
        map.remove("kubernetes_sd_configs").is_some(),
        "the shipped job discovers its targets in Kubernetes"
    );
    map.insert("scrape_interval".into(), "1s".into());
    let static_configs: Value = serde_yaml::from_str(&format!(
        "- targets: ['{target}']\n  labels:\n    __meta_kubernetes_endpointslice_port: '15692'\n"
    ))
    .expect("static_configs");
    map.insert("static_configs".into(), static_configs);
    let config = serde_yaml::to_string(&serde_yaml::Mapping::from_iter([(
        Value::from("scrape_configs"),
        Value::Sequence(vec![job]),
    )]))
    .expect("encode prometheus.yml");
    format!("global:\n  scrape_interval: 1s\n{config}")
}

/// `prescale serve`'s config: the shipped example's `prometheus` section and its
/// `rabbitmq_queue_messages` signal, as written except for:
/// - `prometheus.url`: the test's Prometheus;
/// - the signal's time scale, compressed for a test of a few minutes (the example's
///   in brackets): `step` 2s (30s), `lead_time` 8s (2m: 4 steps in both), `history`
///   10m (3d), `min_history` 40s (default 1h) and `refit_interval` 30s (default 1h),
///   so that the series is forecast after 20 points and refitted during the test;
///   `quantile` 0.95, `max_staleness` 3m, the model (`auto`), the reactive floor and
///   the HPA tolerance (0.1) stay as shipped;
/// - `server`: loopback addresses on free ports, a temporary certificate directory,
///   and `auth.mode: none` (no cluster).
///
/// Node pools, workloads and the other signals are left out (they need a cluster or
/// other exporters).
fn prescale_config(
    prometheus_url: &str,
    https: SocketAddr,
    plain: SocketAddr,
    certs: &Path,
) -> String {
    let text = std::fs::read_to_string(repo().join("deploy/examples/prescale.yaml"))
        .expect("read deploy/examples/prescale.yaml");
    let doc: Value = serde_yaml::from_str(&text).expect("prescale.yaml is YAML");
    let mut prometheus = doc["prometheus"].clone();
    prometheus["url"] = prometheus_url.into();
    let mut signal = doc["signals"]
        .as_sequence()
        .and_then(|s| s.iter().find(|s| s["name"].as_str() == Some(SIGNAL)))
        .unwrap_or_else(|| panic!("prescale.yaml has no signal {SIGNAL:?}"))
        .clone();
    for (field, value) in [
        ("step", "2s"),
        ("lead_time", "8s"),
        ("history", "10m"),
        ("min_history", "40s"),
        ("refit_interval", "30s"),
    ] {
        signal[field] = value.into();
    }
    let server: Value = serde_yaml::from_str(&format!(
        "https_address: '{https}'\nhttp_address: '{plain}'\ntls:\n  cert_dir: '{}'\nauth:\n  mode: none\n",
        certs.display()
    ))
    .expect("server section");
    let config = serde_yaml::Mapping::from_iter([
        (Value::from("prometheus"), prometheus),
        (Value::from("signals"), Value::Sequence(vec![signal])),
        (Value::from("server"), server),
    ]);
    serde_yaml::to_string(&config).expect("encode prescale config")
}

/// One moment: the queue's real depth and what prescale served for it.
#[derive(Debug)]
struct Sample {
    at_s: f64,
    depth: f64,
    served: f64,
    latest: Option<f64>,
    /// The mean forecast one step ahead (the model's own, before the quantile).
    mean1: Option<f64>,
    status: String,
    why: String,
}

/// The value served for `queue` on the external metrics API.
async fn served(client: &reqwest::Client, https: SocketAddr, queue: &str) -> Result<f64, String> {
    let url = format!(
        "https://{https}/apis/external.metrics.k8s.io/v1beta1/namespaces/{NAMESPACE}/{SIGNAL}?labelSelector=queue%3D{queue}"
    );
    let resp = client.get(&url).send().await.map_err(|e| e.to_string())?;
    let code = resp.status();
    let body: serde_json::Value = resp.json().await.map_err(|e| e.to_string())?;
    if !code.is_success() {
        return Err(format!("{code}: {body}"));
    }
    let items = body["items"]
        .as_array()
        .ok_or(format!("no items: {body}"))?;
    if items.len() != 1 {
        return Err(format!("{} items for queue={queue}: {body}", items.len()));
    }
    let labels = &items[0]["metricLabels"];
    if labels["queue"] != queue || labels["vhost"] != "/" {
        return Err(format!("labels {labels} for queue={queue}"));
    }
    let value = items[0]["value"]
        .as_str()
        .ok_or(format!("no value: {body}"))?;
    prescale::quantity::parse_f64(value).map_err(|e| e.to_string())
}

/// Prometheus' view of its scrape targets, for failure messages: a target dropped by
/// the job's relabelling, or scraped with an error.
async fn targets(http: &reqwest::Client, prometheus_url: &str) -> String {
    let doc: serde_json::Value = match http
        .get(format!("{prometheus_url}/api/v1/targets?state=any"))
        .send()
        .await
    {
        Ok(r) => r.json().await.unwrap_or_default(),
        Err(e) => return format!("targets: {e}"),
    };
    let active: Vec<String> = doc["data"]["activeTargets"]
        .as_array()
        .map(|ts| {
            ts.iter()
                .map(|t| format!("{} {} {}", t["scrapeUrl"], t["health"], t["lastError"]))
                .collect()
        })
        .unwrap_or_default();
    let dropped = doc["data"]["droppedTargets"].as_array().map_or(0, Vec::len);
    format!("Prometheus targets: active {active:?}, dropped by relabelling {dropped}")
}

/// The busy queue's entry in `/debug/signals`.
async fn debug_entry(client: &reqwest::Client, plain: SocketAddr) -> Option<serde_json::Value> {
    let doc: serde_json::Value = client
        .get(format!("http://{plain}/debug/signals"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    doc["metrics"]
        .as_array()?
        .iter()
        .find(|m| m["name"] == SIGNAL)?["series"]
        .as_array()?
        .iter()
        .find(|s| s["labels"]["queue"] == BUSY)
        .cloned()
}

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_value_tracks_a_real_rabbitmq_queue() {
    let _heavy = crate::support::heavy();
    let wall = Instant::now();
    let bin = rabbitmq_bin();
    let missing: Vec<&str> = [
        ("rabbitmq-server", bin.is_some() && epmd_available()),
        ("prometheus", prometheus_available()),
    ]
    .into_iter()
    .filter_map(|(what, ok)| (!ok).then_some(what))
    .collect();
    if !missing.is_empty() {
        let why = format!(
            "{} not installed (tests/ci.sh installs the Debian packages)",
            missing.join(" and ")
        );
        assert!(!in_ci(), "CI=true: {why}");
        eprintln!("skipped: {why}");
        return;
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("HTTP client");

    let mut rabbit = RabbitMq::start(bin.expect("checked above"));
    rabbit.wait_ready(&http).await;
    let overview: serde_json::Value = http
        .get(format!("{}/overview", rabbit.api()))
        .basic_auth("guest", Some("guest"))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .expect("overview")
        .json()
        .await
        .expect("overview JSON");
    let version = overview["rabbitmq_version"]
        .as_str()
        .unwrap_or("?")
        .to_string();
    eprintln!(
        "RabbitMQ {version} (Erlang {}) ready after {:.1} s",
        overview["erlang_version"].as_str().unwrap_or("?"),
        wall.elapsed().as_secs_f64()
    );
    for queue in [BUSY, QUIET] {
        http.put(format!("{}/queues/%2F/{queue}", rabbit.api()))
            .basic_auth("guest", Some("guest"))
            .json(&serde_json::json!({"durable": false, "auto_delete": false}))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .unwrap_or_else(|e| panic!("declare queue {queue}: {e}"));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = tokio::spawn(publish(http.clone(), rabbit.api(), stop.clone()));

    let prom = Prometheus::start_scraping(&[], &scrape_config(rabbit.prometheus));
    let dir = tempfile::tempdir().expect("temporary directory");
    let (https, plain) = (free_addr(), free_addr());
    let config_path = dir.path().join("prescale.yaml");
    std::fs::write(
        &config_path,
        prescale_config(&prom.url(), https, plain, &dir.path().join("certs")),
    )
    .expect("write prescale config");
    let serve_log = dir.path().join("serve.log");
    let _serve = Killed(
        Command::new(env!("CARGO_BIN_EXE_prescale"))
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("KUBERNETES_SERVICE_PORT")
            .env("KUBECONFIG", dir.path().join("no-kubeconfig"))
            .env("HOME", dir.path())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&serve_log).expect("serve log"))
            .spawn()
            .expect("prescale serve starts"),
    );
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(5))
        .build()
        .expect("HTTPS client");
    let context = |what: &str| {
        format!(
            "{what}\n--- prescale log:\n{}\n--- prometheus log:\n{}\n{}",
            std::fs::read_to_string(&serve_log).unwrap_or_default(),
            prom.log(),
            rabbit.log()
        )
    };

    // Both queues are served as series of their own (the per-object endpoint), and
    // the busy one is forecast (past `warming`) before sampling starts.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let quiet = served(&client, https, QUIET).await;
        let busy = debug_entry(&client, plain).await;
        let status = busy
            .as_ref()
            .and_then(|b| b["status"].as_str().map(String::from));
        if quiet.is_ok() && status.as_deref() == Some("ok") {
            assert_eq!(quiet, Ok(0.0), "the quiet queue stays empty");
            break;
        }
        if Instant::now() > deadline {
            let targets = targets(&http, &prom.url()).await;
            panic!(
                "{}",
                context(&format!(
                    "no forecast for queue {BUSY} within 120 s (quiet queue: {quiet:?}; busy status: {status:?}); {targets}"
                ))
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!(
        "queue {BUSY} forecast after {:.1} s; sampling",
        wall.elapsed().as_secs_f64()
    );

    let sampling = Instant::now();
    let mut samples = Vec::new();
    let mut zero_depth = 0;
    // Until SAMPLES, or for at most SAMPLING_FOR on a machine where rabbitmqctl is
    // slow (at least MIN_SAMPLES are asserted below).
    while samples.len() < SAMPLES && sampling.elapsed() < SAMPLING_FOR {
        let next = Instant::now() + SAMPLE_EVERY;
        let at_s = wall.elapsed().as_secs_f64();
        // The same moment: the real depth and the served value are asked at once.
        // rabbitmqctl answers about half a second after it starts (an Erlang VM
        // boots first); the served value changes once per step (2 s) and the depth
        // by at most ~10 messages a second outside the bursts.
        let (depth, value, entry) = tokio::join!(
            rabbit.list_queues(),
            served(&client, https, BUSY),
            debug_entry(&client, plain)
        );
        let depth = depth.unwrap_or_else(|e| panic!("{}", context(&e)));
        let depth = depth
            .iter()
            .find(|(name, _)| name == BUSY)
            .map(|&(_, d)| d)
            .unwrap_or_else(|| panic!("rabbitmqctl does not list queue {BUSY}: {depth:?}"));
        let value = value.unwrap_or_else(|e| panic!("{}", context(&format!("served value: {e}"))));
        let entry = entry.unwrap_or_default();
        let sample = Sample {
            at_s,
            depth,
            served: value,
            latest: entry["latest"].as_f64(),
            mean1: entry["forecast_mean"][0].as_f64(),
            status: entry["status"].as_str().unwrap_or("?").to_string(),
            why: entry["why"]["text"].as_str().unwrap_or("-").to_string(),
        };
        if depth == 0.0 {
            // No ratio to a depth of 0; the publisher keeps the queue above 100, so
            // this would say the publisher fell behind. Counted and reported.
            zero_depth += 1;
        } else {
            samples.push(sample);
        }
        tokio::time::sleep_until(next.into()).await;
    }
    let last = debug_entry(&client, plain).await.unwrap_or_default();
    stop.store(true, Ordering::Relaxed);
    publisher
        .await
        .expect("publisher task")
        .unwrap_or_else(|e| panic!("{}", context(&format!("publisher: {e}"))));

    eprintln!("    t(s)  depth  served  ratio  latest   mean1  status  why");
    for s in &samples {
        eprintln!(
            "{:8.1} {:6} {:7.1} {:6.2} {:7} {:7.1} {:7} {}",
            s.at_s,
            s.depth,
            s.served,
            s.served / s.depth,
            s.latest.map_or("-".into(), |l| format!("{l}")),
            s.mean1.unwrap_or(f64::NAN),
            s.status,
            s.why
        );
    }
    eprintln!(
        "at the end, /debug/signals for queue {BUSY}: model {}, backtestMase {}, lastFit {}, latest {}, forecastMean {}, forecastQuantile {}, forecastLower {}, forecastUpper {}, why {}",
        last["model"], last["backtest_mase"], last["last_fit"], last["latest"], last["forecast_mean"],
        last["forecast_quantile"], last["forecast_lower"], last["forecast_upper"], last["why"]
    );
    assert!(
        samples.len() >= MIN_SAMPLES,
        "{}",
        context(&format!(
            "only {} samples in {SAMPLING_FOR:?} (rabbitmqctl too slow?)",
            samples.len()
        ))
    );
    let mut ratios: Vec<f64> = samples.iter().map(|s| s.served / s.depth).collect();
    ratios.sort_by(f64::total_cmp);
    let med = median(&ratios);
    let (min, max) = (ratios[0], ratios[ratios.len() - 1]);
    eprintln!(
        "RabbitMQ {version}: served / real depth over {} samples ({zero_depth} with depth 0 left out): median {med:.3}, min {min:.3}, max {max:.3}; wall time {:.1} s",
        samples.len(),
        wall.elapsed().as_secs_f64()
    );
    // What is expected: the served value is 1.1 × the q0.9 forecast over the lead
    // time, on a sinusoid with bursts, so it sits above the depth (medians of
    // 1.36-1.41 on a quiet machine; 1.46 once the floor became the quantile of the
    // last 15 s of points, one run at load 7). What this guards against is the young-series
    // band shifted away from the data (issue "Prove the value honestly": a median of
    // 3.09). 1.75 keeps that apart from the expected while leaving room for a busy
    // machine, where sampling late on the sinusoid moves the median (a run at load
    // 8 went past the former bound of 1.5).
    assert!(
        (0.8..=1.75).contains(&med),
        "{}",
        context(&format!(
            "median served / real depth {med:.3} outside 0.8-1.75 (min {min:.3}, max {max:.3})"
        ))
    );
}
