//! g. Backtester fidelity: the real HPA controller against `prescale::backtest::Hpa`.
//!
//! A bundled trace (`azure_llm_conv_requests_per_sec.csv`, requests per second, as
//! per-minute means: 58 minutes) is replayed at 15× speed: each trace minute is a
//! 4 s plateau, served by a small exporter inside the test that Prometheus scrapes
//! every second. prescale serves the latest observation of that series (`mode:
//! shadow`, 1 s step) as the External metric `e2e_replay`, and an AverageValue HPA
//! whose behavior has the trace-time windows and periods divided by 15 scales a
//! Deployment under the real kube-controller-manager (1 s sync).
//!
//! The controller does not sync on a fixed 1 s grid: it re-queues the HPA 1 s after
//! the previous sync *ended*, so its phase drifts by the sync's own duration every
//! time. It logs every sync (`--vmodule=horizontal=4`): the instant, the metric's
//! timestamp (the grid second whose value prescale served) and the outcome. The test
//! samples what prescale serves every 250 ms (timestamp → value) and the HPA's
//! status, then replays the controller's syncs through `Hpa::reconcile` at the
//! logged instants with the value served for the logged timestamp, in closed loop
//! (the model's own replica count, never the controller's). Replicas must be equal
//! after ≥ 95 % of the syncs of the replay; every mismatch is printed with its cause.
//!
//! One kind of mismatch is timing, not algorithm: a stabilization window or policy
//! period that ends within a few ms of a sync, where the controller's own clock
//! (it stamps recommendations and scale events a little after the logged instant)
//! puts the edge on the other side. With a 1 s sync and 1 s scale-down period such
//! edges are close at many syncs. When the model run a few ms off the logged instant
//! gives the controller's outcome, the mismatch counts and is printed as a window
//! edge, and the model continues from that run of its own. Without that, one edge
//! left the two counts one apart for half a minute (the tolerance band keeps both
//! where they are), 34 mismatches for one edge; that figure is printed too.
//!
//! For information it also prints: the model on a fixed 1 s grid at the best phase
//! (the replay without the logged instants), and the trace-level reactive backtest
//! (`simulate`) of the same trace, target and behavior at the same speed-up (and
//! at trace time, which it must equal), which has no scrape or refresh delay.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Datelike as _;
use prescale::backtest::hpa::{metric_replicas, to_milli};
use prescale::backtest::sim::Tick;
use prescale::backtest::{
    simulate, Behavior, CapacitySpec, ForecastPlan, Hpa, HpaSpec, Scenario, Strategy,
};
use prescale::clock::{Clock, SystemClock};
use prescale::forecast::ModelSpec;
use prescale::series::Series;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::{condition, deployment, quantity, Check, Cluster, NS};

/// The External metric (prescale's signal) and the series the exporter exposes.
pub const METRIC: &str = "e2e_replay";
const SERIES: &str = "e2e_replay_demand";
const TRACE_FILE: &str = "azure_llm_conv_requests_per_sec.csv";
const TRACE_LABEL: &str = "azure-conv";
const NAME: &str = "replay";
/// Trace time runs this many times faster than wall time.
const SPEEDUP: u32 = 15;
/// One trace minute of wall time.
const PLATEAU_MS: i64 = 60_000 / SPEEDUP as i64;
const TARGET: &str = "600m";
const TARGET_VALUE: f64 = 0.6;
const MIN_REPLICAS: u32 = 2;
const MAX_REPLICAS: u32 = 20;
const TOLERANCE: f64 = 0.1;
const SAMPLE_MS: u64 = 250;
/// Syncs after the last plateau's edge that still count (the last value propagates).
const TAIL_MS: i64 = 3_000;
const REQUIRED: f64 = 0.95;

/// The trace as per-minute means (whole minutes only), in milli-units.
fn trace_minutes() -> Vec<f64> {
    let s = crate::support::prometheus::bundled_trace(TRACE_FILE);
    assert_eq!(s.step_ms, 1_000, "{TRACE_FILE} is a per-second trace");
    s.values
        .chunks_exact(60)
        .map(|c| {
            let seen: Vec<f64> = c.iter().copied().filter(|v| v.is_finite()).collect();
            let mean = seen.iter().sum::<f64>() / seen.len().max(1) as f64;
            (mean * 1000.0).round() / 1000.0
        })
        .collect()
}

/// The HPA's behavior at trace time, its seconds divided by `divide`: scale-up
/// window 30 s, at most the larger of 2 pods and 25 % per 60 s; scale-down window
/// 300 s, at most 1 pod per 15 s.
fn behavior(divide: u32) -> Value {
    let s = |secs: u32| secs / divide;
    json!({
        "scaleUp": {
            "stabilizationWindowSeconds": s(30), "selectPolicy": "Max",
            "policies": [{"type": "Pods", "value": 2, "periodSeconds": s(60)},
                         {"type": "Percent", "value": 25, "periodSeconds": s(60)}]
        },
        "scaleDown": {
            "stabilizationWindowSeconds": s(300), "selectPolicy": "Max",
            "policies": [{"type": "Pods", "value": 1, "periodSeconds": s(15)}]
        }
    })
}

fn model_behavior(divide: u32) -> Result<Behavior, String> {
    Behavior::from_yaml(&behavior(divide).to_string()).map_err(|e| e.to_string())
}

fn value_at(values: &[f64], start_ms: i64, now_ms: i64) -> f64 {
    if start_ms == 0 || now_ms < start_ms {
        return values[0];
    }
    let i = usize::try_from((now_ms - start_ms) / PLATEAU_MS).unwrap_or(0);
    values[i.min(values.len() - 1)]
}

/// A Prometheus text-format endpoint on 127.0.0.1 exposing the trace's value of the
/// moment: the first minute until [`Exporter::begin`], then one minute per plateau,
/// the last one held.
pub struct Exporter {
    addr: SocketAddr,
    start_ms: Arc<AtomicI64>,
    values: Arc<Vec<f64>>,
    task: tokio::task::JoinHandle<()>,
}

impl Exporter {
    pub async fn start() -> Self {
        let values = Arc::new(trace_minutes());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the exporter");
        let addr = listener.local_addr().expect("the exporter's address");
        let start_ms = Arc::new(AtomicI64::new(0));
        let (start, vals) = (Arc::clone(&start_ms), Arc::clone(&values));
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    continue;
                };
                let (start, vals) = (Arc::clone(&start), Arc::clone(&vals));
                tokio::spawn(async move {
                    let mut buf = [0u8; 2048];
                    let mut got = Vec::new();
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") && got.len() < 16_384 {
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    }
                    let v = value_at(&vals, start.load(Ordering::SeqCst), SystemClock.now_ms());
                    let body =
                        format!("# TYPE {SERIES} gauge\n{SERIES}{{trace=\"{TRACE_LABEL}\"}} {v}\n");
                    let response = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = sock.write_all(response.as_bytes()).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        Self {
            addr,
            start_ms,
            values,
            task,
        }
    }

    /// A whole prometheus.yml scraping the exporter every second. The TSDB also
    /// holds backfilled blocks reaching 40 minutes ahead, which put every scraped
    /// sample (now) out of bounds of the head: an out-of-order window takes them.
    pub fn prometheus_yml(&self) -> String {
        format!(
            "global:\n  scrape_interval: 1h\nstorage:\n  tsdb:\n    out_of_order_time_window: 2h\nscrape_configs:\n  - job_name: replay\n    scrape_interval: 1s\n\
             \x20   scrape_timeout: 1s\n    static_configs:\n      - targets: ['{}']\n",
            self.addr
        )
    }

    fn begin(&self, at_ms: i64) {
        self.start_ms.store(at_ms, Ordering::SeqCst);
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// prescale's signal for the replay: the latest observation on a 1 s grid.
pub fn signal_config() -> String {
    format!(
        "  - name: {METRIC}\n    query: {SERIES}\n    step: 1s\n    history: 1m\n    min_history: 1m\n\
         \x20   lead_time: 5s\n    max_staleness: 15s\n    refit_interval: 1m\n    model: seasonal-naive\n\
         \x20   mode: shadow\n"
    )
}

fn hpa_manifest() -> Value {
    json!({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": NAME, "namespace": NS},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": NAME},
            "minReplicas": MIN_REPLICAS, "maxReplicas": MAX_REPLICAS,
            "metrics": [{"type": "External", "external": {
                "metric": {"name": METRIC, "selector": {"matchLabels": {"trace": TRACE_LABEL}}},
                "target": {"type": "AverageValue", "averageValue": TARGET}}}],
            "behavior": behavior(SPEEDUP),
        }
    })
}

/// One sample taken every [`SAMPLE_MS`].
struct Sample {
    at_ms: i64,
    /// What prescale served: the item's timestamp and value.
    served: Option<(i64, f64)>,
    /// The HPA's status: currentReplicas, desiredReplicas.
    status: Option<(u32, u32)>,
}

/// One sync of the replay HPA, from the controller's log.
#[derive(Debug, Clone, Default)]
struct Sync {
    t_ms: i64,
    /// The metric's timestamp; `None` when reading it failed.
    metric_ts_ms: Option<i64>,
    /// The metric's own proposal (before behavior and limits).
    proposal: Option<u32>,
    /// spec.replicas before and after the sync, when logged.
    before: Option<u32>,
    after: Option<u32>,
    /// The controller's scale update failed (`failed to rescale`).
    rescale_failed: bool,
}

fn rfc3339_ms(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// A klog header (`I1205 13:21:33.340305 ...`, UTC: the controller runs with TZ=UTC)
/// in unix milliseconds; the year is the one that puts it nearest to `now_ms`.
fn klog_ms(line: &str, now_ms: i64) -> Option<i64> {
    if !matches!(line.as_bytes().first(), Some(b'I' | b'W' | b'E' | b'F')) {
        return None;
    }
    let month: u32 = line.get(1..3)?.parse().ok()?;
    let day: u32 = line.get(3..5)?.parse().ok()?;
    let time = chrono::NaiveTime::parse_from_str(line.get(6..21)?, "%H:%M:%S%.6f").ok()?;
    let year = chrono::DateTime::from_timestamp_millis(now_ms)?.year();
    let at = |y: i32| {
        chrono::NaiveDate::from_ymd_opt(y, month, day)
            .map(|d| d.and_time(time).and_utc().timestamp_millis())
    };
    let t = at(year)?;
    if t > now_ms + 86_400_000 {
        at(year - 1)
    } else {
        Some(t)
    }
}

/// The value of `key=` in a klog structured line (quoted or bare).
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(&format!(" {key}="))? + key.len() + 2;
    let rest = &line[start..];
    if let Some(quoted) = rest.strip_prefix('"') {
        let end = quoted.find('"')?;
        Some(&quoted[..end])
    } else {
        Some(rest.split(' ').next().unwrap_or(rest))
    }
}

/// The replay HPA's syncs in the controller's log.
fn parse_syncs(log: &str, now_ms: i64) -> Vec<Sync> {
    let target = format!("Deployment/{NS}/{NAME}");
    let key = format!("{NS}/{NAME}");
    let mut syncs: Vec<Sync> = Vec::new();
    for line in log.lines() {
        let Some(t_ms) = klog_ms(line, now_ms) else {
            continue;
        };
        let num = |k: &str| field(line, k).and_then(|v| v.parse::<u32>().ok());
        if line.contains("\"Proposing desired replicas\"")
            && field(line, "scaleTarget") == Some(target.as_str())
        {
            // `timestamp="2026-12-05 13:21:33 +0000 UTC"`.
            let ts = field(line, "timestamp").and_then(|s| {
                chrono::NaiveDateTime::parse_from_str(s.get(..19)?, "%Y-%m-%d %H:%M:%S")
                    .ok()
                    .map(|t| t.and_utc().timestamp_millis())
            });
            syncs.push(Sync {
                t_ms,
                metric_ts_ms: ts,
                proposal: num("desiredReplicas"),
                ..Sync::default()
            });
        } else if line.contains("\"Successfully rescaled\"")
            && field(line, "HPA") == Some(key.as_str())
        {
            if let Some(s) = syncs.last_mut() {
                s.before = num("currentReplicas");
                s.after = num("desiredReplicas");
            }
        } else if line.contains("\"Decided not to scale\"")
            && field(line, "scaleTarget") == Some(target.as_str())
        {
            if let Some(s) = syncs.last_mut() {
                s.before = num("desiredReplicas");
                s.after = s.before;
            }
        } else if line.contains("failed to compute desired number of replicas")
            && line.contains(&format!("{target}:"))
        {
            syncs.push(Sync {
                t_ms,
                ..Sync::default()
            });
        } else if line.contains(&format!("failed to rescale {target}:")) {
            if let Some(s) = syncs.last_mut() {
                s.rescale_failed = true;
            }
        }
    }
    syncs
}

/// What prescale fetched: the query on its 1 s grid over `[from, to]`.
async fn prometheus_grid(
    prom: &str,
    from_ms: i64,
    to_ms: i64,
) -> Result<BTreeMap<i64, f64>, String> {
    let url = format!(
        "{prom}/api/v1/query_range?query={SERIES}&start={}&end={}&step=1",
        from_ms.div_euclid(1000),
        to_ms.div_euclid(1000)
    );
    let body: Value = reqwest::get(&url)
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    let mut out = BTreeMap::new();
    for series in body["data"]["result"].as_array().into_iter().flatten() {
        for point in series["values"].as_array().into_iter().flatten() {
            let (Some(t), Some(v)) = (point[0].as_f64(), point[1].as_str()) else {
                continue;
            };
            if let Ok(v) = v.parse::<f64>() {
                out.insert((t * 1000.0).round() as i64, v);
            }
        }
    }
    if out.is_empty() {
        return Err(format!("no {SERIES} in Prometheus: {body}"));
    }
    Ok(out)
}

/// Runs the replay on the cluster and compares; the figures, or why it failed.
pub async fn check(c: &Cluster, exporter: &Exporter, prom: &str) -> Check {
    let phase = Instant::now();
    let values = Arc::clone(&exporter.values);
    let target_milli = to_milli(TARGET_VALUE);
    let r0 = ((to_milli(values[0]) as f64 / target_milli as f64).ceil() as u32)
        .clamp(MIN_REPLICAS, MAX_REPLICAS);
    let mut workload = deployment(NAME);
    workload["spec"]["replicas"] = json!(r0);
    c.apply(&json!({"apiVersion": "v1", "kind": "List", "items": [workload, hpa_manifest()]}));

    // Sample from the HPA's creation on; start the replay once the controller holds
    // the first minute's count, end a tail after the last plateau's edge.
    let metric_path = format!(
        "/apis/external.metrics.k8s.io/v1beta1/namespaces/{NS}/{METRIC}?labelSelector=trace%3D{TRACE_LABEL}"
    );
    let hpa_path = format!("/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers/{NAME}");
    let created_ms = SystemClock.now_ms();
    let mut start_ms: Option<i64> = None;
    let mut samples: Vec<Sample> = Vec::new();
    let mut next = tokio::time::Instant::now();
    loop {
        next += Duration::from_millis(SAMPLE_MS);
        let (_, m) = c.admin_get(&metric_path).await;
        let served = m["items"]
            .get(0)
            .and_then(|i| Some((rfc3339_ms(i["timestamp"].as_str()?)?, quantity(&i["value"]))));
        let (_, h) = c.admin_get(&hpa_path).await;
        let status = (|| {
            Some((
                u32::try_from(h["status"]["currentReplicas"].as_u64()?).ok()?,
                u32::try_from(h["status"]["desiredReplicas"].as_u64()?).ok()?,
            ))
        })();
        let now = SystemClock.now_ms();
        samples.push(Sample {
            at_ms: now,
            served,
            status,
        });
        match start_ms {
            None => {
                let active = condition(&h, "ScalingActive").is_some_and(|c| c["status"] == "True");
                if active && status == Some((r0, r0)) && now - created_ms >= 3_000 {
                    exporter.begin(now);
                    start_ms = Some(now);
                    eprintln!(
                        "g: replay started {} ms after the HPA was created",
                        now - created_ms
                    );
                } else if now - created_ms > 90_000 {
                    return Err(format!(
                        "the replay HPA did not settle at {r0} replicas within 90 s: status {}",
                        h["status"]
                    ));
                }
            }
            Some(s) => {
                if now >= s + values.len() as i64 * PLATEAU_MS + TAIL_MS {
                    break;
                }
            }
        }
        tokio::time::sleep_until(next).await;
    }
    let Some(start_ms) = start_ms else {
        return Err("the replay did not start".into());
    };
    let end_ms = start_ms + values.len() as i64 * PLATEAU_MS;

    let kcm = c
        .procs
        .iter()
        .find(|p| p.name == "kube-controller-manager")
        .ok_or("no kube-controller-manager process")?;
    let log = std::fs::read_to_string(&kcm.log).map_err(|e| e.to_string())?;
    let syncs = parse_syncs(&log, SystemClock.now_ms());
    if syncs.len() < 10 {
        return Err(format!(
            "{} syncs of HPA {NS}/{NAME} in the controller's log (is --vmodule=horizontal=4 set?)",
            syncs.len()
        ));
    }
    let grid = prometheus_grid(prom, syncs[0].t_ms - 60_000, end_ms + TAIL_MS + 2_000).await?;
    let wall = phase.elapsed();
    let outcome = compare(&values, start_ms, end_ms, r0, &syncs, &samples, &grid)?;
    for line in &outcome.lines {
        eprintln!("g: {line}");
    }
    let summary = format!("{} (phase {:.0?})", outcome.summary, wall);
    if outcome.passed {
        Ok(summary)
    } else {
        Err(summary)
    }
}

struct Outcome {
    passed: bool,
    summary: String,
    /// The figures behind the summary, one per line.
    lines: Vec<String>,
}

fn spec() -> Result<HpaSpec, String> {
    Ok(HpaSpec {
        min_replicas: MIN_REPLICAS,
        max_replicas: MAX_REPLICAS,
        target_milli: to_milli(TARGET_VALUE),
        behavior: model_behavior(SPEEDUP)?,
    })
}

/// The replica count after the last event at or before `t` (`first` before any).
fn count_at(events: &[(i64, u32)], t: i64, first: u32) -> u32 {
    let i = events.partition_point(|e| e.0 <= t);
    if i == 0 {
        first
    } else {
        events[i - 1].1
    }
}

fn pct(n: usize, d: usize) -> f64 {
    100.0 * n as f64 / d.max(1) as f64
}

/// The comparison proper (pure: everything it needs was recorded).
#[allow(clippy::too_many_arguments)]
fn compare(
    values: &[f64],
    start_ms: i64,
    end_ms: i64,
    r0: u32,
    syncs: &[Sync],
    samples: &[Sample],
    grid: &BTreeMap<i64, f64>,
) -> Result<Outcome, String> {
    let spec = spec()?;
    let target_milli = spec.target_milli;
    let mut lines: Vec<String> = Vec::new();
    // timestamp → value, as prescale served it.
    let mut served: BTreeMap<i64, f64> = BTreeMap::new();
    let mut served_conflicts = 0;
    for (ts, v) in samples.iter().filter_map(|s| s.served) {
        if let Some(old) = served.insert(ts, v) {
            if to_milli(old) != to_milli(v) {
                served_conflicts += 1;
            }
        }
    }
    let in_window = |t: i64| t >= start_ms && t < end_ms + TAIL_MS;

    // The controller's syncs replayed through the model, closed loop.
    let mut hpa = Hpa::new(spec.clone());
    let mut model = r0;
    let mut real = r0;
    // The same replay never continued from an explained edge, for information.
    let mut free_hpa = Hpa::new(spec.clone());
    let (mut free_model, mut free_equal, mut reanchored) = (r0, 0usize, 0usize);
    let (mut counted, mut equal, mut from_grid, mut unknown) = (0usize, 0usize, 0usize, 0usize);
    let mut mismatches: Vec<String> = Vec::new();
    let mut causes: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut real_events: Vec<(i64, u32)> = Vec::new();
    let mut model_events: Vec<(i64, u32)> = Vec::new();
    let (mut lo, mut hi, mut real_scales, mut shaped) = (u32::MAX, 0u32, 0usize, 0usize);
    for s in syncs {
        let value = s.metric_ts_ms.and_then(|ts| match served.get(&ts) {
            Some(v) => Some((*v, false)),
            None => grid.get(&ts).map(|v| (*v, true)),
        });
        let real_before = s.before.unwrap_or(real);
        let real_after = s.after.unwrap_or(real_before);
        let pre = hpa.clone();
        let model_before = model;
        model = hpa.reconcile(s.t_ms, model, value.map(|v| v.0));
        free_model = free_hpa.reconcile(s.t_ms, free_model, value.map(|v| v.0));
        real = real_after;
        real_events.push((s.t_ms, real));
        model_events.push((s.t_ms, model));
        if !in_window(s.t_ms) {
            continue;
        }
        counted += 1;
        if free_model == real_after {
            free_equal += 1;
        }
        // Did the behavior (stabilization, rate policies) change this sync's outcome?
        if let Some((v, _)) = value {
            let wanted = metric_replicas(
                to_milli(v),
                target_milli,
                model_before,
                TOLERANCE,
                TOLERANCE,
            )
            .clamp(MIN_REPLICAS, MAX_REPLICAS);
            if wanted != model {
                shaped += 1;
            }
        }
        lo = lo.min(real);
        hi = hi.max(real);
        if real_after != real_before {
            real_scales += 1;
        }
        if value.is_some_and(|v| v.1) {
            from_grid += 1;
        }
        if s.metric_ts_ms.is_some() && value.is_none() {
            unknown += 1;
        }
        if model == real_after {
            equal += 1;
            continue;
        }
        let model_after = model;
        let model_proposal = value.map(|(v, _)| {
            metric_replicas(
                to_milli(v),
                target_milli,
                model_before,
                TOLERANCE,
                TOLERANCE,
            )
        });
        let (cause, why) = if s.rescale_failed {
            (
                "rescale failed",
                "the controller's update of the scale subresource failed, so it kept the count"
                    .to_string(),
            )
        } else if model_before != real_before {
            (
                "carried over",
                format!("the model already had {model_before} before this sync, the controller {real_before} (closed loop)"),
            )
        } else if value.is_none() {
            (
                "value unknown",
                "the served value for this sync's metric timestamp was not recorded".to_string(),
            )
        } else if s.proposal.is_some() && s.proposal != model_proposal {
            (
                "status lag",
                format!(
                    "the controller's metric proposal was {:?}, the model's {:?}: for AverageValue the controller divides by the Deployment's status.replicas, which had not caught up with spec.replicas",
                    s.proposal, model_proposal
                ),
            )
        } else {
            // A stabilization window or policy period that ends within a few ms of
            // this sync: the controller stamps recommendations and scale events with
            // its own clock, a little after the logged instant.
            let edge = (1..=20).map(|k| k * 10).find_map(|d| {
                [d, -d].into_iter().find_map(|dd| {
                    let mut h = pre.clone();
                    (h.reconcile(s.t_ms + dd, model_before, value.map(|v| v.0)) == real_after)
                        .then_some((dd, h))
                })
            });
            match edge {
                Some((d, shifted)) => {
                    // The model, run at the instant that explains the controller's
                    // outcome, continues from there: its own state, not a copy of
                    // the controller's, so one timing edge counts once instead of
                    // for every sync the hysteresis of the tolerance keeps apart.
                    hpa = shifted;
                    model = real_after;
                    if let Some(last) = model_events.last_mut() {
                        last.1 = model;
                    }
                    reanchored += 1;
                    (
                        "window edge",
                        format!("a window or period edge within {d:+} ms of the sync: the controller stamps recommendations and scale events with its own clock; the model continues from its run at that instant"),
                    )
                }
                None => (
                    "unexplained",
                    "the model differs at this sync for no timing reason".to_string(),
                ),
            }
        };
        *causes.entry(cause).or_default() += 1;
        mismatches.push(format!(
            "  t+{:.3}s (trace minute {}): value {} (ts +{:.0}s{}), controller {real_before}→{real_after} (proposal {:?}), model {model_before}→{model_after}: {cause}: {why}",
            (s.t_ms - start_ms) as f64 / 1000.0,
            (s.t_ms - start_ms).div_euclid(PLATEAU_MS),
            value.map_or("?".to_string(), |v| v.0.to_string()),
            s.metric_ts_ms.map_or(f64::NAN, |t| (t - start_ms) as f64 / 1000.0),
            if value.is_some_and(|v| v.1) { ", from Prometheus" } else { "" },
            s.proposal,
        ));
    }
    let matched = equal as f64 / counted.max(1) as f64;
    let trace_minutes = (end_ms - start_ms) / PLATEAU_MS;
    lines.push(format!(
        "{counted} controller syncs over {trace_minutes} trace minutes ({:.0} s wall), \
         replicas {lo}..={hi}, {real_scales} scale events; model equal at {equal} ({:.1} %)",
        (end_ms - start_ms) as f64 / 1000.0,
        pct(equal, counted)
    ));
    lines.push(format!(
        "syncs whose outcome the behavior (stabilization windows, rate policies) changed: {shaped}"
    ));
    lines.push(format!(
        "the model continued from its run at an explaining instant after {reanchored} window edge(s); never doing so (one edge then carries over while the tolerance keeps the counts apart): equal at {free_equal} ({:.1} %)",
        pct(free_equal, counted)
    ));
    let per_minute = |events: &[(i64, u32)]| {
        (1..=trace_minutes)
            .map(|m| count_at(events, start_ms + m * PLATEAU_MS, r0).to_string())
            .collect::<Vec<_>>()
            .join(" ")
    };
    lines.push(format!(
        "replicas at the end of each trace minute, controller: {}",
        per_minute(&real_events)
    ));
    lines.push(format!(
        "replicas at the end of each trace minute, Hpa replay: {}",
        per_minute(&model_events)
    ));
    lines.push(format!(
        "values: {} syncs read a timestamp sampled from prescale, {from_grid} from Prometheus' grid, {unknown} unknown; {served_conflicts} sampled timestamps served two values",
        counted - from_grid - unknown
    ));
    for m in &mismatches {
        lines.push(format!("mismatch{m}"));
    }

    // Sync spacing: the controller re-queues 1 s after a sync ends.
    let gaps: Vec<i64> = syncs
        .windows(2)
        .filter(|w| in_window(w[1].t_ms))
        .map(|w| w[1].t_ms - w[0].t_ms)
        .collect();
    let mean_gap = gaps.iter().sum::<i64>() as f64 / gaps.len().max(1) as f64;
    let max_gap = gaps.iter().copied().max().unwrap_or(0);
    lines.push(format!(
        "sync interval mean {mean_gap:.0} ms, max {max_gap} ms"
    ));

    // The HPA status samples against the log's trajectory (a check of the parsing).
    let (mut agree, mut looked) = (0usize, 0usize);
    for s in samples.iter().filter(|s| in_window(s.at_ms)) {
        let Some((_, desired)) = s.status else {
            continue;
        };
        // Skip samples within 500 ms of a sync: the status write may not be in yet.
        let i = real_events.partition_point(|e| e.0 <= s.at_ms);
        if i == 0 || s.at_ms - real_events[i - 1].0 < 500 {
            continue;
        }
        looked += 1;
        if real_events[i - 1].1 == desired {
            agree += 1;
        }
    }
    lines.push(format!(
        "HPA status samples agreeing with the logged trajectory: {agree}/{looked}"
    ));

    // Pipeline delay: from a plateau edge to the value on prescale's grid, and to
    // the first sync that read it.
    let (mut grid_delay, mut sync_delay) = (Vec::new(), Vec::new());
    for i in 1..values.len() {
        if to_milli(values[i]) == to_milli(values[i - 1]) {
            continue;
        }
        let edge = start_ms + i as i64 * PLATEAU_MS;
        let Some((&ts, _)) = grid
            .range(edge - 1_000..)
            .find(|(_, v)| to_milli(**v) == to_milli(values[i]))
        else {
            continue;
        };
        grid_delay.push(ts - edge);
        if let Some(s) = syncs
            .iter()
            .find(|s| s.metric_ts_ms.is_some_and(|t| t >= ts))
        {
            sync_delay.push(s.t_ms - edge);
        }
    }
    let mean = |v: &[i64]| v.iter().sum::<i64>() as f64 / v.len().max(1) as f64;
    lines.push(format!(
        "delay from a plateau edge to prescale's grid second: mean {:.0} ms, max {} ms; to the first controller sync reading it: mean {:.0} ms, max {} ms",
        mean(&grid_delay),
        grid_delay.iter().max().unwrap_or(&0),
        mean(&sync_delay),
        sync_delay.iter().max().unwrap_or(&0)
    ));

    // The lead's first design, for comparison: the model on a fixed 1 s grid (best
    // phase), reading what prescale served at each instant.
    let served_at = |t: i64| {
        let i = samples.partition_point(|s| s.at_ms <= t);
        samples[..i]
            .iter()
            .rev()
            .find_map(|s| s.served.map(|x| x.1))
    };
    let real_points: Vec<(i64, u32)> = real_events
        .iter()
        .copied()
        .filter(|e| in_window(e.0))
        .collect();
    let first_t = syncs[0].t_ms;
    let mut best_phase = (0i64, 0usize);
    for phase in (0..1000).step_by(100) {
        let mut h = Hpa::new(spec.clone());
        let mut n = r0;
        let mut ev = Vec::new();
        let mut t = first_t - first_t.rem_euclid(1000) + phase;
        while t <= end_ms + TAIL_MS {
            n = h.reconcile(t, n, served_at(t));
            ev.push((t, n));
            t += 1000;
        }
        let ok = real_points
            .iter()
            .filter(|(t, r)| count_at(&ev, *t, r0) == *r)
            .count();
        if ok > best_phase.1 {
            best_phase = (phase, ok);
        }
    }
    lines.push(format!(
        "the model on a fixed 1 s grid (best phase {} ms) instead of the logged instants: equal at {:.1} % of the syncs",
        best_phase.0,
        pct(best_phase.1, real_points.len())
    ));

    // The trace-level reactive backtest, at the replay's speed and at trace time.
    let sim = |step_ms: i64, sync_ms: i64, divide: u32| -> Result<Vec<Tick>, String> {
        let plan = ForecastPlan::new(
            ModelSpec::by_name("seasonal-naive").map_err(|e| e.to_string())?,
            0.9,
        );
        let mut sc = Scenario::new(TARGET_VALUE, sync_ms, plan);
        sc.min_replicas = MIN_REPLICAS;
        sc.max_replicas = MAX_REPLICAS;
        sc.behavior = model_behavior(divide)?;
        sc.sync_period_ms = sync_ms;
        sc.capacity = CapacitySpec {
            pod_startup_ms: 0,
            pool: None,
        };
        sc.keep_ticks = true;
        let series = Series {
            start_ms,
            step_ms,
            values: values.to_vec(),
        };
        Ok(simulate(&series, &sc, Strategy::Reactive)
            .map_err(|e| e.to_string())?
            .ticks)
    };
    let fast = sim(PLATEAU_MS, 1_000, SPEEDUP)?;
    let slow = sim(60_000, 15_000, 1)?;
    let same_at_trace_time = fast.len() == slow.len()
        && fast
            .iter()
            .zip(&slow)
            .all(|(a, b)| a.replicas == b.replicas);
    let sim_events: Vec<(i64, u32)> = fast.iter().map(|t| (t.t_ms, t.replicas)).collect();
    let sim_match = |shift: i64| {
        real_points
            .iter()
            .filter(|(t, r)| count_at(&sim_events, t - shift, r0) == *r)
            .count()
    };
    let sim_now = sim_match(0);
    let (best_shift, best_sim) = (0..=4000)
        .step_by(250)
        .map(|d| (d, sim_match(d)))
        .max_by_key(|x| (x.1, -x.0))
        .unwrap_or((0, sim_now));
    let sim_scales = fast
        .windows(2)
        .filter(|w| w[0].replicas != w[1].replicas)
        .count();
    lines.push(format!(
        "trace-level reactive backtest (simulate, same trace, target, behavior, 1 s sync at 15x; {} at trace time with 15 s sync and the unscaled behavior): \
         {sim_scales} scale events; equal to the controller at {:.1} % of its syncs, {:.1} % when shifted by {best_shift} ms \
         (the backtest reads a minute's value from its first instant; the real pipeline reads it after the scrape, prescale's refresh and the next sync)",
        if same_at_trace_time { "identical" } else { "NOT identical" },
        pct(sim_now, real_points.len()),
        pct(best_sim, real_points.len()),
    ));
    let model_vs_sim = real_points
        .iter()
        .filter(|(t, _)| count_at(&model_events, *t, r0) == count_at(&sim_events, *t, r0))
        .count();
    lines.push(format!(
        "the Hpa replay vs the trace-level backtest at the same instants: {:.1} % equal",
        pct(model_vs_sim, real_points.len())
    ));
    lines.push(format!(
        "replicas at the end of each trace minute, trace-level backtest: {}",
        per_minute(&sim_events)
    ));

    let causes_text = if causes.is_empty() {
        "none".to_string()
    } else {
        causes
            .iter()
            .map(|(c, n)| format!("{n} {c}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let enough = counted >= 100 && trace_minutes >= 30;
    let summary = format!(
        "replicas equal at {equal}/{counted} controller syncs ({:.1} %, need {:.0} %) over a {trace_minutes}-minute trace replayed at {SPEEDUP}x, \
         replicas {lo}..={hi}, {real_scales} scale events, {shaped} syncs shaped by the behavior; mismatches: {causes_text}; \
         never continuing from an edge {:.1} %; fixed 1 s grid at best phase {:.1} %; trace-level backtest {:.1} % ({:.1} % shifted {best_shift} ms){}",
        100.0 * matched,
        100.0 * REQUIRED,
        pct(free_equal, counted),
        pct(best_phase.1, real_points.len()),
        pct(sim_now, real_points.len()),
        pct(best_sim, real_points.len()),
        if same_at_trace_time { "" } else { "; the backtest at trace time differs from the sped-up one" },
    );
    Ok(Outcome {
        passed: enough && matched >= REQUIRED && same_at_trace_time,
        summary,
        lines,
    })
}

#[test]
fn klog_lines_are_parsed() {
    let now = chrono::NaiveDate::from_ymd_opt(2026, 12, 5)
        .and_then(|d| d.and_hms_opt(14, 0, 0))
        .map(|t| t.and_utc().timestamp_millis())
        .unwrap_or_default();
    let log = "I1205 13:21:33.340305   12345 horizontal.go:958] \"Proposing desired replicas\" desiredReplicas=8 metric=\"external metric e2e_replay(&LabelSelector{MatchLabels:map[string]string{trace: azure-conv,},MatchExpressions:[]LabelSelectorRequirement{},})\" tolerances=\"[down:10.0%, up:10.0%]\" timestamp=\"2026-12-05 13:21:33 +0000 UTC\" scaleTarget=\"Deployment/e2e/replay\"\n\
I1205 13:21:33.350000   12345 horizontal.go:1032] \"Successfully rescaled\" HPA=\"e2e/replay\" currentReplicas=6 desiredReplicas=8 reason=\"external metric above target\"\n\
I1205 13:21:34.400000   12345 horizontal.go:958] \"Proposing desired replicas\" desiredReplicas=8 metric=\"x\" tolerances=\"y\" timestamp=\"2026-12-05 13:21:34 +0000 UTC\" scaleTarget=\"Deployment/e2e/replay\"\n\
I1205 13:21:34.410000   12345 horizontal.go:1059] \"Decided not to scale\" scaleTarget=\"Deployment/e2e/replay\" desiredReplicas=8 lastScaleTime=\"2026-12-05 13:21:33 +0000 UTC\"\n\
I1205 13:21:34.420000   12345 horizontal.go:958] \"Proposing desired replicas\" desiredReplicas=3 metric=\"x\" tolerances=\"y\" timestamp=\"2026-12-05 13:21:34 +0000 UTC\" scaleTarget=\"Deployment/e2e/ext\"\n\
E1205 13:21:35.500000   12345 controller.go:1] \"Unhandled Error\" err=\"failed to compute desired number of replicas based on listed metrics for Deployment/e2e/replay: boom\"\n";
    let s = parse_syncs(log, now);
    assert_eq!(s.len(), 3);
    // 14:00:00 less 13:21:33.340305, to the millisecond below.
    assert_eq!(s[0].t_ms, now - 2_306_660);
    assert_eq!(s[0].metric_ts_ms, Some(now - 2_307_000));
    assert_eq!(
        (s[0].proposal, s[0].before, s[0].after),
        (Some(8), Some(6), Some(8))
    );
    assert_eq!((s[1].before, s[1].after), (Some(8), Some(8)));
    assert_eq!((s[2].metric_ts_ms, s[2].after), (None, None));
}

/// The input of the two comparison tests below: a "controller" replayed on a drifting
/// ~1 s cadence reading a delayed pipeline (the value of 1.5 s ago on prescale's
/// 1 s grid). `act` is the controller's sync: its state, the instant, the current
/// count and the value; it returns the new count.
struct Synthetic {
    values: Vec<f64>,
    start: i64,
    end: i64,
    r0: u32,
    syncs: Vec<Sync>,
    samples: Vec<Sample>,
}

impl Synthetic {
    fn run(mut act: impl FnMut(&mut Hpa, i64, u32, f64) -> u32) -> Self {
        let values = trace_minutes();
        let start = 1_800_000_000_000;
        let end = start + values.len() as i64 * PLATEAU_MS;
        let r0 = ((to_milli(values[0]) as f64 / to_milli(TARGET_VALUE) as f64).ceil() as u32)
            .clamp(MIN_REPLICAS, MAX_REPLICAS);
        let mut controller = Hpa::new(spec().unwrap());
        let (mut syncs, mut samples) = (Vec::new(), Vec::new());
        let (mut t, mut n) = (start - 5_000 + 137, r0);
        while t < end + TAIL_MS {
            let ts = (t - 1_500).div_euclid(1_000) * 1_000;
            let v = value_at(&values, start, ts);
            samples.push(Sample {
                at_ms: t - 100,
                served: Some((ts, v)),
                status: None,
            });
            let before = n;
            n = act(&mut controller, t, n, v);
            syncs.push(Sync {
                t_ms: t,
                metric_ts_ms: Some(ts),
                proposal: Some(metric_replicas(
                    to_milli(v),
                    to_milli(TARGET_VALUE),
                    before,
                    TOLERANCE,
                    TOLERANCE,
                )),
                before: Some(before),
                after: Some(n),
                rescale_failed: false,
            });
            t += 1_000 + (t % 7) * 5;
        }
        Self {
            values,
            start,
            end,
            r0,
            syncs,
            samples,
        }
    }

    fn compare(&self) -> Outcome {
        let grid = BTreeMap::new();
        let (v, s) = (&self.values, &self.syncs);
        compare(v, self.start, self.end, self.r0, s, &self.samples, &grid).unwrap()
    }

    /// "equal at N/M " for the syncs in the replay, `missed` of them not equal.
    fn equal_but(&self, missed: usize) -> String {
        let counted = self.syncs.iter().filter(|s| s.t_ms >= self.start).count();
        format!("equal at {}/{counted} ", counted - missed)
    }
}

/// The comparison without a cluster: syncs of a "controller" that is `Hpa` itself
/// agree everywhere; a count the model cannot reach is one mismatch.
#[test]
fn the_comparison_finds_an_identical_controller_identical() {
    let mut run = Synthetic::run(|c, t, n, v| c.reconcile(t, n, Some(v)));
    let same = run.compare();
    assert!(same.passed, "{}", same.summary);
    assert!(same.summary.contains("(100.0 %"), "{}", same.summary);
    // One sync where the "controller" went to the maximum and straight back.
    let k = run.syncs.len() / 2;
    run.syncs[k].after = Some(MAX_REPLICAS);
    run.syncs[k + 1].before = Some(MAX_REPLICAS);
    let one_off = run.compare();
    assert!(
        one_off.summary.contains(&run.equal_but(1)),
        "{}",
        one_off.summary
    );
}

/// A "controller" that once acts as if its clock were a few ms behind the logged
/// instant (a window or period edge falls between the two) and then goes on from
/// its own state: that sync is one mismatch explained as a window edge, and the
/// replay continues from the explaining instant instead of carrying it over.
#[test]
fn one_timing_edge_is_one_mismatch() {
    let start = 1_800_000_000_000;
    let mut edge_at = None;
    let run = Synthetic::run(|c, t, n, v| {
        let on_time = c.clone().reconcile(t, n, Some(v));
        // The first sync in the replay at which acting up to 200 ms early changes
        // the outcome.
        let early = (edge_at.is_none() && t >= start)
            .then(|| {
                (1..=20)
                    .map(|k| t - 10 * k)
                    .find(|&at| c.clone().reconcile(at, n, Some(v)) != on_time)
            })
            .flatten();
        if early.is_some() {
            edge_at = Some(t);
        }
        c.reconcile(early.unwrap_or(t), n, Some(v))
    });
    assert_eq!(run.start, start);
    assert!(edge_at.is_some(), "no sync of the trace sits near an edge");
    let out = run.compare();
    assert!(out.summary.contains(&run.equal_but(1)), "{}", out.summary);
    assert!(
        out.summary.contains("mismatches: 1 window edge;"),
        "{}",
        out.summary
    );
    assert!(out.passed, "{}", out.summary);
}
