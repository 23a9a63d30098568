//! The real `prescale serve --config` binary through its lifecycle: SIGHUP reloads
//! (invalid configs rejected with the reason logged and counted, the old config
//! serving on; a valid one swapping signals while unchanged ones keep their state)
//! and SIGTERM (no new connections, the request in flight finished, exit within
//! `server.shutdown_grace`).

use crate::support::pki;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::prometheus::{bundled_trace, free_addr, http_status, usable, Prometheus};
use prescale::clock::{Clock, SystemClock};
use prescale::series::{LabeledSeries, Series};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const METRIC: &str = "prescale_lifecycle_requests";

/// `prescale serve` as a child process, killed on drop.
struct Serve {
    child: Child,
    log: PathBuf,
}

impl Serve {
    fn start(config: &Path, dir: &Path, check_interval: &str) -> Self {
        Self::start_with(config, dir, check_interval, &[])
    }

    /// [`Serve::start`] with more flags for `serve`.
    fn start_with(config: &Path, dir: &Path, check_interval: &str, extra: &[&str]) -> Self {
        let log = dir.join("serve.log");
        let child = Command::new(env!("CARGO_BIN_EXE_prescale"))
            .args(["serve", "--config-check-interval", check_interval])
            .args(extra)
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Self { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name}");
    }

    async fn wait_ready(&self, plain: SocketAddr) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while http_status(plain, "/readyz") != Some(200) {
            assert!(
                Instant::now() < deadline,
                "serve not ready:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A config on loopback without authentication (the plain port gives
/// `/debug/signals` and `/metrics`), with `signals` as YAML list items.
fn config(
    prometheus: &str,
    https: SocketAddr,
    plain: SocketAddr,
    certs: &Path,
    extra_server: &str,
    signals: &str,
) -> String {
    format!(
        "prometheus:\n  url: {prometheus}\n  timeout: 1s\nsignals:\n{signals}\
         server:\n  https_address: {https}\n  http_address: {plain}\n  tls:\n    cert_dir: {certs}\n\
         \x20 auth:\n    mode: none\n{extra_server}",
        certs = certs.display(),
    )
}

fn signal(name: &str, query: &str, model: &str) -> String {
    format!(
        "  - name: {name}\n    query: '{query}'\n    step: 1s\n    history: 2m\n    lead_time: 3s\n\
         \x20   model: {model}\n    max_staleness: 5s\n    refit_interval: 1h\n    min_history: 30s\n"
    )
}

/// `/debug/signals`: (name, error, [(status, last fit)]) per signal.
async fn signals(plain: SocketAddr) -> Vec<(String, Option<String>, Vec<(String, String)>)> {
    let doc: serde_json::Value = reqwest::get(format!("http://{plain}/debug/signals"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    doc["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let series = m["series"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| {
                    (
                        s["status"].as_str().unwrap().to_string(),
                        s["last_fit"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect();
            (
                m["name"].as_str().unwrap().to_string(),
                m["error"].as_str().map(str::to_string),
                series,
            )
        })
        .collect()
}

/// The value of `prescale_config_reloads_total{result}` on `/metrics`.
async fn reloads(plain: SocketAddr, result: &str) -> u64 {
    let text = reqwest::get(format!("http://{plain}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let key = format!("prescale_config_reloads_total{{result=\"{result}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&key))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /metrics:\n{text}"))
}

async fn wait_until<F, Fut>(what: &str, serve: &Serve, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    while !f().await {
        assert!(
            Instant::now() < deadline,
            "{what}: not within 15 s\n{}",
            serve.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A 1-second trace around now (2 minutes back, 10 ahead).
fn fixture() -> Series {
    let trace = bundled_trace("azure_llm_conv_requests_per_sec.csv");
    let now = SystemClock.now_ms();
    let values: Vec<f64> = (0..720)
        .map(|i| {
            let v = trace.values[i % trace.values.len()];
            if v.is_finite() {
                v
            } else {
                0.0
            }
        })
        .collect();
    Series {
        start_ms: now - now.rem_euclid(1_000) - 120_000,
        step_ms: 1_000,
        values,
    }
}

#[tokio::test]
async fn sighup_rejects_invalid_configs_and_swaps_signals_keeping_unchanged_state() {
    if !usable() {
        return;
    }
    let prom = Prometheus::start(&[LabeledSeries {
        labels: [("__name__".to_string(), METRIC.to_string())].into(),
        series: fixture(),
    }]);
    let dir = tempfile::tempdir().unwrap();
    let (https, plain) = (free_addr(), free_addr());
    let certs = dir.path().join("certs");
    let write = |signals: &str| {
        std::fs::write(
            dir.path().join("prescale.yaml"),
            config(&prom.url(), https, plain, &certs, "", signals),
        )
        .unwrap()
    };
    let alpha = signal("alpha", METRIC, "seasonal-naive");
    write(&format!(
        "{alpha}{}",
        signal("beta", &format!("{METRIC} * 2"), "seasonal-naive")
    ));
    // Reload on SIGHUP only: no check of the file may race the signals.
    let serve = Serve::start(&dir.path().join("prescale.yaml"), dir.path(), "off");
    serve.wait_ready(plain).await;
    let all_ok = |want: &'static [&'static str]| async move {
        let s = signals(plain).await;
        s.iter().map(|m| m.0.as_str()).collect::<Vec<_>>() == want
            && s.iter()
                .all(|m| !m.2.is_empty() && m.2.iter().all(|x| x.0 == "ok"))
    };
    wait_until("alpha and beta ok", &serve, || all_ok(&["alpha", "beta"])).await;
    let fit_of_alpha = signals(plain).await[0].2[0].1.clone();
    assert!(!fit_of_alpha.is_empty());
    assert_eq!(reloads(plain, "success").await, 0);

    // Invalid files: a bad field, then broken YAML. Rejected, logged with the
    // reason, counted; alpha and beta serve on.
    write(&format!("{alpha}{}", signal("gamma", METRIC, "prophet")));
    serve.signal("HUP");
    wait_until("first rejection counted", &serve, || async {
        reloads(plain, "failure").await == 1
    })
    .await;
    std::fs::write(dir.path().join("prescale.yaml"), "signals: [\n").unwrap();
    serve.signal("HUP");
    wait_until("second rejection counted", &serve, || async {
        reloads(plain, "failure").await == 2
    })
    .await;
    let log = serve.log();
    assert!(log.contains("config reload rejected"), "{log}");
    assert!(log.contains("signals[1].model: unknown model"), "{log}");
    assert_eq!(reloads(plain, "success").await, 0);
    assert!(
        all_ok(&["alpha", "beta"]).await,
        "{:?}",
        signals(plain).await
    );

    // A valid file: alpha unchanged (keeps its fitted state), beta removed, gamma new.
    // Fit times have seconds precision: make sure a refit would show.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    write(&format!(
        "{alpha}{}",
        signal("gamma", &format!("{METRIC} + 1"), "seasonal-naive")
    ));
    serve.signal("HUP");
    wait_until("reload applied", &serve, || async {
        reloads(plain, "success").await == 1
    })
    .await;
    wait_until("alpha and gamma ok", &serve, || all_ok(&["alpha", "gamma"])).await;
    let now = signals(plain).await;
    assert_eq!(
        now[0].2[0].1, fit_of_alpha,
        "alpha was refitted: its state was not kept"
    );
    // Over HTTPS: beta is gone, gamma is served.
    let ca = std::fs::read(certs.join("apiserver.crt")).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .build()
        .unwrap();
    let url = |m: &str| {
        format!("https://{https}/apis/external.metrics.k8s.io/v1beta1/namespaces/default/{m}")
    };
    assert_eq!(client.get(url("beta")).send().await.unwrap().status(), 404);
    assert_eq!(client.get(url("gamma")).send().await.unwrap().status(), 200);
    assert_eq!(client.get(url("alpha")).send().await.unwrap().status(), 200);
    assert!(!serve.log().contains("panicked"));
}

/// A TLS connection to `addr` trusting `ca_pem`.
async fn tls(
    addr: SocketAddr,
    ca_pem: &str,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(pki::client_config(ca_pem, None)));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    connector
        .connect("127.0.0.1".try_into().unwrap(), tcp)
        .await
        .unwrap()
}

#[tokio::test]
async fn sigterm_stops_accepting_finishes_in_flight_and_exits_within_the_grace() {
    // No Prometheus: the signal is failing, which changes nothing about shutting down.
    let dir = tempfile::tempdir().unwrap();
    let (https, plain) = (free_addr(), free_addr());
    let certs = dir.path().join("certs");
    // A slow client could hold a connection for 60 s; the grace is 2 s.
    let server = "  shutdown_grace: 2s\n  limits:\n    header_read_timeout: 60s\n";
    let path = dir.path().join("prescale.yaml");
    let dead = format!("http://{}", free_addr());
    std::fs::write(
        &path,
        config(
            &dead,
            https,
            plain,
            &certs,
            server,
            &signal("alpha", METRIC, "seasonal-naive"),
        ),
    )
    .unwrap();
    let mut serve = Serve::start(&path, dir.path(), "off");
    serve.wait_ready(plain).await;
    let ca = std::fs::read_to_string(certs.join("apiserver.crt")).unwrap();
    // Prometheus was never there: the metric is 503 "source failing", not 404.
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap())
        .build()
        .unwrap();
    let resp = client
        .get(format!(
            "https://{https}/apis/external.metrics.k8s.io/v1beta1/namespaces/default/alpha"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("source failing"),
        "{body}"
    );
    drop(client);

    // In flight at SIGTERM: a request whose head is half sent (it is completed
    // after the signal), and a slow client that never completes its head.
    let mut in_flight = tls(https, &ca).await;
    in_flight
        .write_all(b"GET /apis/external.metrics.k8s.io/v1beta1 HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut slowloris = tls(https, &ca).await;
    slowloris
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();

    let sent = Instant::now();
    serve.signal("TERM");
    // New connections are refused soon after.
    let deadline = Instant::now() + Duration::from_secs(2);
    while tokio::net::TcpStream::connect(https).await.is_ok() {
        assert!(Instant::now() < deadline, "still accepting after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The request in flight gets its whole answer, and the connection is closed after it.
    in_flight.write_all(b"Accept: */*\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), in_flight.read_to_end(&mut answer))
        .await
        .expect("the in-flight connection is closed after its answer")
        .ok();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("APIResourceList"), "{answer}");
    // The slow client does not hold the exit beyond the grace.
    let status = loop {
        if let Some(status) = serve.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(5),
            "not stopped 5 s after SIGTERM with a 2 s grace:\n{}",
            serve.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let took = sent.elapsed();
    assert!(status.success(), "exit {status}:\n{}", serve.log());
    assert!(serve.log().contains("shutting down"), "{}", serve.log());
    // stderr is a file here, as under `kubectl logs`: no colour codes.
    assert!(
        !serve.log().contains('\u{1b}'),
        "ANSI codes in a file: {}",
        serve.log()
    );
    eprintln!("stopped {took:?} after SIGTERM");
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(1), slowloris.read_to_end(&mut rest)).await;
}

#[tokio::test]
async fn a_changed_config_file_is_reloaded_without_a_signal() {
    // No Prometheus: the signals are failing, which is all this needs to list them.
    let dir = tempfile::tempdir().unwrap();
    let (https, plain) = (free_addr(), free_addr());
    let certs = dir.path().join("certs");
    let path = dir.path().join("prescale.yaml");
    let dead = format!("http://{}", free_addr());
    let write = |signals: &str| {
        // Written beside and renamed over, as the kubelet swaps a ConfigMap's files.
        let tmp = dir.path().join("prescale.yaml.tmp");
        std::fs::write(&tmp, config(&dead, https, plain, &certs, "", signals)).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    };
    write(&signal("alpha", METRIC, "seasonal-naive"));
    let serve = Serve::start(&path, dir.path(), "200ms");
    serve.wait_ready(plain).await;
    // The signals that have been refreshed (and failed) at least once: a signal
    // added by a reload is listed from the next snapshot on, before its first
    // refresh has had a chance to fail.
    let names = || async {
        signals(plain)
            .await
            .into_iter()
            .filter(|m| m.1.is_some())
            .map(|m| m.0)
            .collect::<Vec<_>>()
    };
    wait_until("the first file applied", &serve, || async {
        names().await == vec!["alpha"]
    })
    .await;
    write(&format!(
        "{}{}",
        signal("alpha", METRIC, "seasonal-naive"),
        signal("beta", METRIC, "seasonal-naive")
    ));
    wait_until("the new file applied", &serve, || async {
        names().await == vec!["alpha", "beta"]
    })
    .await;
    assert_eq!(reloads(plain, "success").await, 1);
    // A broken file is rejected once, not at every check, and nothing changes.
    write(&signal("gamma", METRIC, "no-such-model"));
    wait_until("the broken file rejected", &serve, || async {
        reloads(plain, "failure").await == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(reloads(plain, "failure").await, 1);
    assert_eq!(names().await, vec!["alpha", "beta"]);
    assert!(
        serve.log().contains("signals[0].model: unknown model"),
        "{}",
        serve.log()
    );
}

#[tokio::test]
async fn a_second_sigterm_exits_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (https, plain) = (free_addr(), free_addr());
    let certs = dir.path().join("certs");
    let server = "  shutdown_grace: 30s\n  limits:\n    header_read_timeout: 60s\n";
    let path = dir.path().join("prescale.yaml");
    let dead = format!("http://{}", free_addr());
    std::fs::write(
        &path,
        config(
            &dead,
            https,
            plain,
            &certs,
            server,
            &signal("alpha", METRIC, "seasonal-naive"),
        ),
    )
    .unwrap();
    let mut serve = Serve::start(&path, dir.path(), "off");
    serve.wait_ready(plain).await;
    let ca = std::fs::read_to_string(certs.join("apiserver.crt")).unwrap();
    // A slow client that would hold the first shutdown for the whole 30 s grace.
    let mut slowloris = tls(https, &ca).await;
    slowloris
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // Let the server finish its side of the handshake and read the partial head: a
    // connection that has not yet delivered request bytes to the server counts as
    // idle and is closed at SIGTERM, which raced this test on a busy machine.
    tokio::time::sleep(Duration::from_millis(300)).await;
    serve.signal("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        serve.child.try_wait().unwrap().is_none(),
        "the grace was not given"
    );
    let sent = Instant::now();
    serve.signal("TERM");
    let status = loop {
        if let Some(status) = serve.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(3),
            "a second SIGTERM did not end it:\n{}",
            serve.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!status.success(), "cut short is not a clean exit");
    assert!(
        serve.log().contains("second shutdown signal"),
        "{}",
        serve.log()
    );
}

/// `--log-format json`: every line a log collector reads is one JSON object with
/// the level, the target and the message; the fields ride along.
#[tokio::test]
async fn json_logs_are_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let (https, plain) = (free_addr(), free_addr());
    let path = dir.path().join("prescale.yaml");
    let dead = format!("http://{}", free_addr());
    std::fs::write(
        &path,
        config(
            &dead,
            https,
            plain,
            &dir.path().join("certs"),
            "",
            &signal("alpha", METRIC, "seasonal-naive"),
        ),
    )
    .unwrap();
    let serve = Serve::start_with(&path, dir.path(), "off", &["--log-format", "json"]);
    wait_until("the serving line", &serve, || async {
        serve.log().contains("\"serving\"")
    })
    .await;
    let text = serve.log();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not one JSON object ({e}): {line}"));
        assert!(v["level"].is_string() && v["target"].is_string(), "{line}");
        assert!(v["fields"]["message"].is_string(), "{line}");
    }
}
