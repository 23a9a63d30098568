//! Identical replicas: two `prescale serve` processes on the same config, reading the
//! same real Prometheus, serve the same values for the same snapshot time, so the
//! APIService can balance across them.
//!
//! The processes start at different moments, so the comparison is made per grid
//! time: a series is compared only where both report the same `observed_at` (the
//! newest grid point its value is based on). The config refits every step, so a
//! value is a function of the history window alone; with a longer refit interval
//! two replicas agree once both have refitted at the same grid time, which this
//! test does not wait for. `auto` is used because it is where order could leak in:
//! several candidates, scores, a combination, fitted in parallel over series.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::prometheus::{bundled_trace, free_addr, http_status, usable, Prometheus};
use crate::support::{labels, Killed};
use prescale::clock::{Clock, SystemClock};
use prescale::series::{LabeledSeries, Series};

const METRIC: &str = "prescale_replica_cpu";
const STEP_MS: i64 = 300_000;

/// Three series from a bundled 5-minute CPU trace, ending an hour after now (so the
/// newest grid point always has a sample), each shifted and scaled differently.
fn fixture() -> Vec<LabeledSeries> {
    let trace = bundled_trace("nab_ec2_cpu_utilization_5f5533.csv");
    assert_eq!(trace.step_ms, STEP_MS);
    let values = prescale::series::forward_fill(&trace.values);
    let now = SystemClock.now_ms();
    let end = now - now.rem_euclid(STEP_MS) + 3_600_000;
    let n = values.len();
    (0..3)
        .map(|k| LabeledSeries {
            labels: labels(&[("__name__", METRIC), ("instance", &format!("i{k}"))]),
            series: Series {
                start_ms: end - (n as i64 - 1) * STEP_MS,
                step_ms: STEP_MS,
                values: (0..n)
                    .map(|i| values[(i + 97 * k) % n] * (1.0 + 0.5 * k as f64))
                    .collect(),
            },
        })
        .collect()
}

/// Starts one replica on `config` (with its own addresses and certificate directory).
fn replica(dir: &std::path::Path, name: &str, prom_url: &str) -> (Killed, std::net::SocketAddr) {
    let plain = free_addr();
    let config = format!(
        "prometheus:\n  url: {prom_url}\n  timeout: 5s\n\
         signals:\n  - name: cpu\n    query: {METRIC}\n    step: 5m\n    history: 3d\n    lead_time: 15m\n\
         \x20   quantile: 0.9\n    model: auto\n    max_staleness: 15m\n    refit_interval: 5m\n    min_history: 1h\n\
         server:\n  https_address: {https}\n  http_address: {plain}\n  tls:\n    cert_dir: {certs}\n\
         \x20 auth:\n    mode: none\n",
        https = free_addr(),
        certs = dir.join(format!("certs-{name}")).display(),
    );
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, config).unwrap();
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_prescale"))
        .args(["serve", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    (Killed(child), plain)
}

/// The served state per series from `/debug/signals`: (observed_at, what must agree).
async fn served(
    client: &reqwest::Client,
    plain: std::net::SocketAddr,
) -> BTreeMap<String, (String, serde_json::Value)> {
    let doc: serde_json::Value = client
        .get(format!("http://{plain}/debug/signals"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut out = BTreeMap::new();
    for metric in doc["metrics"].as_array().into_iter().flatten() {
        for s in metric["series"].as_array().into_iter().flatten() {
            let key = format!("{}{}", metric["name"], s["labels"]);
            let at = s["observed_at"].as_str().expect("observed_at").to_string();
            // Everything that is a function of the data; not the wall-clock fit
            // time nor the rolling one-step score (it depends on uptime).
            let value = serde_json::json!({
                "status": s["status"],
                "model": s["model"],
                "latest": s["latest"],
                "forecast_mean": s["forecast_mean"],
                "forecast_quantile": s["forecast_quantile"],
                "served_value": s["served_value"],
                "served_quantity": s["served_quantity"],
            });
            out.insert(key, (at, value));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_serve_the_same_values_for_the_same_grid_time() {
    if !usable() {
        return;
    }
    let prom = Prometheus::start(&fixture());
    let dir = tempfile::tempdir().unwrap();
    let (_a, plain_a) = replica(dir.path(), "a", &prom.url());
    // A different start moment: the replicas must not depend on when they started.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let (_b, plain_b) = replica(dir.path(), "b", &prom.url());
    let log = |name: &str| {
        std::fs::read_to_string(dir.path().join(format!("{name}.log"))).unwrap_or_default()
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    for (name, plain) in [("a", plain_a), ("b", plain_b)] {
        while http_status(plain, "/readyz") != Some(200) {
            assert!(
                Instant::now() < deadline,
                "{name} not ready:\n{}",
                log(name)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    // Compare once both serve every series with a forecast for the same grid time; a
    // grid boundary between the two reads is retried (the next step is 5 minutes away
    // at most, and usually both are already at the same one).
    let deadline = Instant::now() + Duration::from_secs(420);
    loop {
        let a = served(&client, plain_a).await;
        let b = served(&client, plain_b).await;
        let forecasting = |m: &BTreeMap<String, (String, serde_json::Value)>| {
            m.len() == 3 && m.values().all(|(_, v)| v["status"] == "ok")
        };
        let same_time = a.keys().eq(b.keys())
            && a.iter()
                .zip(&b)
                .all(|((_, (ta, _)), (_, (tb, _)))| ta == tb);
        if forecasting(&a) && forecasting(&b) && same_time {
            for (key, (at, va)) in &a {
                let vb = &b[key].1;
                assert_eq!(va, vb, "{key} at {at}: replicas differ");
                assert!(
                    va["forecast_mean"]
                        .as_array()
                        .is_some_and(|f| !f.is_empty()),
                    "{key}: no forecast to compare: {va}"
                );
            }
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replicas never served all series at the same grid time:\n{a:?}\n{b:?}\n{}\n{}",
            log("a"),
            log("b")
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    drop(prom);
}
