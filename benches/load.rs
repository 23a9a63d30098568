//! Load test of the serving path: a real `prescale serve` process over TLS, at a
//! fixed request rate, for a configurable time.
//!
//! The server runs with the bundled traces (no config: file source, self-signed
//! certificate, no authentication, loopback only). Requests are sent open-loop:
//! request `k` is due at `start + k / rate` whether or not earlier ones have
//! answered, and its latency counts from that due time, so a stalled server shows
//! up as latency instead of silently lowering the rate (no coordinated omission).
//!
//! Every report interval it prints requests sent, errors (transport errors and
//! non-200 answers), p50/p99 latency and the server's resident memory (VmRSS from
//! /proc/<pid>/status); at the end the totals and whether memory stayed flat
//! (the last interval's RSS within 10 % + 8 MiB of the RSS after the first minute,
//! or after the first third of a shorter run).
//!
//! Parameters (environment):
//! - `PRESCALE_LOAD_RATE`: requests per second (default 1000);
//! - `PRESCALE_LOAD_SECONDS`: how long (default 30);
//! - `PRESCALE_LOAD_REPORT_SECONDS`: report interval (default 10).
//!
//! `PRESCALE_LOAD_SECONDS=120 cargo bench --bench load`. It exits non-zero when
//! memory grew or more than 0.1 % of requests failed.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Kills the server when the bench ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
    l.local_addr().expect("its address")
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// The server's resident memory in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The bundled metric names: the trace files the server embeds.
fn metric_names() -> Vec<String> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("tests/data")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".csv"))
                .map(str::to_string)
        })
        .collect();
    names.sort();
    names
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

#[derive(Default)]
struct Window {
    /// From when each request was due (includes the generator's timer lateness, ~1 ms).
    latencies: Vec<Duration>,
    /// From when each request was actually sent: the server and the TLS client alone.
    service: Vec<Duration>,
    errors: u64,
}

#[tokio::main]
async fn main() {
    let rate = env_u64("PRESCALE_LOAD_RATE", 1000).max(1);
    let seconds = env_u64("PRESCALE_LOAD_SECONDS", 30).max(1);
    let report_s = env_u64("PRESCALE_LOAD_REPORT_SECONDS", 10).max(1);

    let (https, plain) = (free_addr(), free_addr());
    let elsewhere = std::env::temp_dir();
    let mut child = Killed(
        Command::new(env!("CARGO_BIN_EXE_prescale"))
            .args(["serve", "--https-address", &https.to_string()])
            .args(["--http-address", &plain.to_string()])
            .current_dir(&elsewhere)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prescale serve"),
    );
    let pid = child.0.id();
    let stdout = child.0.stdout.take().expect("server stdout");
    // The server prints one curl line once it listens.
    let line = BufReader::new(stdout)
        .lines()
        .next()
        .expect("a line from the server")
        .expect("readable");
    assert!(line.starts_with("curl "), "unexpected first line {line:?}");

    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(5))
        .build()
        .expect("an HTTPS client");
    let urls: Vec<String> = metric_names()
        .iter()
        .map(|m| {
            format!("https://{https}/apis/external.metrics.k8s.io/v1beta1/namespaces/default/{m}")
        })
        .collect();
    // Wait until every metric is served (the first fits take a few seconds).
    let ready_by = Instant::now() + Duration::from_secs(180);
    for url in &urls {
        loop {
            let ok = matches!(client.get(url).send().await, Ok(r) if r.status().is_success());
            if ok {
                break;
            }
            assert!(Instant::now() < ready_by, "{url} not served within 180 s");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    println!(
        "load: {rate} req/s for {seconds} s against pid {pid} (https://{https}), {} metrics, RSS at start {} KiB",
        urls.len(),
        rss_kib(pid)
    );

    let window = Arc::new(Mutex::new(Window::default()));
    let total = rate * seconds;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let start = tokio::time::Instant::now();
    let mut next_report = 1;
    let mut all = Vec::with_capacity(total as usize);
    let mut errors_total = 0;
    let mut rss_series = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut all_service = Vec::with_capacity(total as usize);
    let mut report = |window: &Mutex<Window>, at_s: u64, all: &mut Vec<Duration>| {
        let w = std::mem::take(&mut *window.lock().expect("window lock"));
        all_service.extend(w.service);
        let mut lat = w.latencies;
        lat.sort();
        let rss = rss_kib(pid);
        rss_series.push((at_s, rss));
        errors_total += w.errors;
        println!(
            "t={at_s:>5}s answered={:>6} errors={:>4} p50={:>7.3}ms p99={:>7.3}ms rss={:>7}KiB",
            lat.len() as u64 + w.errors,
            w.errors,
            percentile(&lat, 0.5).as_secs_f64() * 1e3,
            percentile(&lat, 0.99).as_secs_f64() * 1e3,
            rss,
        );
        all.extend(lat);
    };
    for k in 0..total {
        let due = start + interval.mul_f64(k as f64);
        tokio::time::sleep_until(due).await;
        let elapsed_s = start.elapsed().as_secs();
        if elapsed_s >= next_report * report_s {
            report(&window, next_report * report_s, &mut all);
            next_report += 1;
        }
        let client = client.clone();
        let url = urls[(k as usize) % urls.len()].clone();
        let window = Arc::clone(&window);
        tasks.spawn(async move {
            let sent = tokio::time::Instant::now();
            let ok = match client.get(&url).send().await {
                Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                Err(_) => false,
            };
            let latency = due.elapsed();
            let service = sent.elapsed();
            let mut w = window.lock().expect("window lock");
            if ok {
                w.latencies.push(latency);
                w.service.push(service);
            } else {
                w.errors += 1;
            }
        });
        // Reap finished tasks so the set does not grow with the run.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    report(&window, seconds, &mut all);

    all.sort();
    all_service.sort();
    let answered = all.len() as u64 + errors_total;
    let achieved = answered as f64 / start.elapsed().as_secs_f64();
    let baseline_at = seconds.min(60).max(seconds / 3);
    let baseline = rss_series
        .iter()
        .find(|(t, _)| *t >= baseline_at)
        .or(rss_series.first())
        .map_or(0, |(_, r)| *r);
    let last = rss_series.last().map_or(0, |(_, r)| *r);
    let max = rss_series.iter().map(|(_, r)| *r).max().unwrap_or(0);
    let flat = last as f64 <= baseline as f64 * 1.1 + 8.0 * 1024.0;
    println!(
        "total: sent={total} answered={answered} ({achieved:.0}/s) errors={errors_total} p50={:.3}ms p99={:.3}ms p99.9={:.3}ms max={:.3}ms",
        percentile(&all, 0.5).as_secs_f64() * 1e3,
        percentile(&all, 0.99).as_secs_f64() * 1e3,
        percentile(&all, 0.999).as_secs_f64() * 1e3,
        all.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
    println!(
        "service time (from send, without the generator's timer lateness): p50={:.3}ms p99={:.3}ms p99.9={:.3}ms",
        percentile(&all_service, 0.5).as_secs_f64() * 1e3,
        percentile(&all_service, 0.99).as_secs_f64() * 1e3,
        percentile(&all_service, 0.999).as_secs_f64() * 1e3,
    );
    println!(
        "memory: rss at {baseline_at}s {baseline} KiB, last {last} KiB, max {max} KiB: {}",
        if flat { "flat" } else { "GREW" }
    );
    let error_rate = errors_total as f64 / total.max(1) as f64;
    drop(child);
    if !flat || error_rate > 0.001 {
        std::process::exit(1);
    }
}
