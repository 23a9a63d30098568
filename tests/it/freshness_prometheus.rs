//! Data freshness against a real Prometheus that scrapes a live target.
//!
//! A PromQL range query answers every step with the newest sample within the
//! lookback (5 minutes), so grid points after the last scrape repeat an older
//! sample. Read as new points, those copies make an old value look fresh: after a
//! Prometheus stall the engine used to take the pre-stall value as the current one
//! until the next scrape. With `prometheus.freshness_query` (default
//! `max(timestamp(up))`) the engine reads grid points only up to the newest
//! ingested sample.
//!
//! Here the target is scraped every 4 s while the signal's grid is 1 s; the test
//! steps the engine on the real clock, pauses Prometheus (SIGSTOP) and resumes it,
//! and checks at every step that what is served is stamped no later than the newest
//! sample Prometheus holds, and carries that sample's value.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::prometheus::{usable, Prometheus};
use prescale::clock::SystemClock;
use prescale::config::PrometheusConfig;
use prescale::engine::{Engine, Metrics, SignalSettings};
use prescale::forecast::ModelSpec;
use prescale::plan::{ServePolicy, TrackerSettings};
use prescale::snapshot::Shared;
use prescale::source::prometheus::PrometheusSource;

const METRIC: &str = "prescale_freshness_depth";
const STEP: i64 = 1_000;
const SCRAPE_S: u64 = 4;

/// A target that serves `METRIC` with the current value (bits of an f64).
fn exporter(value: Arc<AtomicU64>) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the exporter");
    let addr = listener.local_addr().expect("exporter address");
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let v = f64::from_bits(value.load(Ordering::Relaxed));
            let body = format!("# TYPE {METRIC} gauge\n{METRIC} {v}\n");
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    addr
}

fn signal() -> SignalSettings {
    let history_steps = 600;
    SignalSettings {
        shadow: None,
        name: "depth".to_string(),
        query: METRIC.to_string(),
        history_ms: history_steps as i64 * STEP,
        max_staleness_ms: 60_000,
        namespaces: None,
        custom: None,
        tracker: TrackerSettings {
            spec: ModelSpec::by_name("seasonal-naive").expect("a bundled model"),
            step_ms: STEP,
            policy: ServePolicy {
                lead_steps: 1,
                lead_ms: 0,
                tolerance: 0.0,
                quantile: 0.5,
                reactive_floor: true,
            },
            history_steps,
            refit_every_steps: 60,
            // Always warming: on this 1 s grid the served value is the median (the
            // quantile) of the last 15 s of points, always one of the samples.
            min_history_steps: history_steps,
            fit_steps: 1,
            spread_refits: false,
        },
    }
}

/// The first value of an instant query's answer.
async fn instant(client: &reqwest::Client, prom: &str, query: &str) -> Option<f64> {
    let url = format!("{prom}/api/v1/query");
    let body: serde_json::Value = client
        .get(&url)
        .query(&[("query", query)])
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    body["data"]["result"].get(0)?["value"][1]
        .as_str()?
        .parse()
        .ok()
}

/// The newest sample of `METRIC` in Prometheus: (time ms, value).
async fn newest_sample(client: &reqwest::Client, prom: &str) -> Option<(i64, f64)> {
    let ts = instant(client, prom, &format!("timestamp({METRIC})")).await?;
    let value = instant(client, prom, METRIC).await?;
    Some(((ts * 1_000.0).round() as i64, value))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grid_points_after_the_newest_sample_are_not_served_as_fresh() {
    let _heavy = crate::support::heavy();
    if !usable() {
        return;
    }
    let value = Arc::new(AtomicU64::new(100f64.to_bits()));
    let target = exporter(Arc::clone(&value));
    let config = format!(
        "global:\n  scrape_interval: {SCRAPE_S}s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: freshness\n    static_configs:\n      - targets: [\"{target}\"]\n"
    );
    let prom = Prometheus::start_scraping(&[], &config);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("HTTP client");
    let source = PrometheusSource::new(&PrometheusConfig {
        url: prom.url(),
        timeout: prescale::config::Duration::try_new("2s").expect("a duration"),
        bearer_token_file: None,
        ca_file: None,
        insecure_skip_verify: false,
        headers: Default::default(),
        freshness_query: prescale::config::DEFAULT_FRESHNESS_QUERY.to_string(),
        query_offset: None,
    })
    .expect("a Prometheus source");
    let shared = Shared::new();
    let mut engine = Engine::new(
        vec![signal()],
        Arc::new(source),
        shared.clone(),
        Arc::new(SystemClock),
        Metrics::unregistered(),
    );

    // First scrape.
    let deadline = Instant::now() + Duration::from_secs(30);
    while newest_sample(&http, &prom.url()).await.is_none() {
        assert!(
            Instant::now() < deadline,
            "Prometheus never scraped the target"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Step the engine every ~100 ms for a while; the value changes between scrapes,
    // and Prometheus is paused for two scrape intervals in the middle.
    let mut checked = 0;
    let mut served_ahead = Vec::new();
    let started = Instant::now();
    let mut paused = false;
    let mut resumed = false;
    while started.elapsed() < Duration::from_secs(26) {
        let t = started.elapsed().as_secs_f64();
        value.store(
            (100.0 + 10.0 * (t / 3.0).floor()).to_bits(),
            Ordering::Relaxed,
        );
        if !paused && t > 10.0 {
            paused = true;
            let pid = prom.pid().expect("Prometheus runs");
            let _ = std::process::Command::new("kill")
                .args(["-STOP", &pid.to_string()])
                .status();
        }
        if paused && !resumed && t > 10.0 + 2.0 * SCRAPE_S as f64 {
            resumed = true;
            let pid = prom.pid().expect("Prometheus runs");
            let _ = std::process::Command::new("kill")
                .args(["-CONT", &pid.to_string()])
                .status();
        }
        if paused && !resumed {
            tokio::time::sleep(Duration::from_millis(250)).await;
            continue;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        engine.step().await.expect("an engine step");
        let Some((sample_ms, sample_value)) = newest_sample(&http, &prom.url()).await else {
            continue;
        };
        let snap = shared.load();
        let Some(entry) = snap
            .metrics
            .get("depth")
            .and_then(|m| m.series.first())
            .cloned()
        else {
            continue;
        };
        checked += 1;
        // A scrape may land between the step and the check (the sample is then
        // newer than what the step saw), never the other way round.
        if entry.timestamp_ms > sample_ms {
            served_ahead.push(format!(
                "at {t:.2}s served {} stamped {} ms after the newest sample ({} at {sample_ms})",
                entry.value,
                entry.timestamp_ms - sample_ms,
                sample_value
            ));
        }
    }
    eprintln!(
        "{checked} checks over {:.1}s, {} served ahead of the newest sample",
        started.elapsed().as_secs_f64(),
        served_ahead.len()
    );
    assert!(checked >= 40, "too few checks: {checked}");
    assert!(
        served_ahead.is_empty(),
        "grid points after the newest sample were served as fresh:\n{}",
        served_ahead.join("\n")
    );
    // What is served is a real sample's value: the exporter's values are 100, 110, ...
    let last = shared.load();
    let served = last.metrics["depth"].series[0].value;
    assert!(
        served >= 100.0 && (served - 100.0) % 10.0 == 0.0,
        "served {served}"
    );
}
