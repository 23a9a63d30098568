//! `prescale explain`: how each served value came about, in words — from a running
//! server's `/debug/signals`, or offline by running a configured signal over a
//! recorded file exactly as the server would.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args as ClapArgs;
use serde_json::Value;

use prescale::api::plain::{signals_doc, SignalsQuery};
use prescale::config::Config;
use prescale::engine::{Core, Metrics, SignalSettings};
use prescale::series::{self, LabeledSeries, ResampleOptions};
use prescale::source::file::FileSource;
use prescale::source::Source;

/// Arguments of `prescale explain`.
#[derive(Debug, ClapArgs)]
#[command(group(clap::ArgGroup::new("from").required(true).args(["server", "config"])))]
pub struct Args {
    /// A running server's plain-HTTP address (its probes and `/metrics` port), e.g.
    /// `http://127.0.0.1:8080` (`kubectl port-forward` to reach one in a cluster).
    #[arg(long)]
    pub server: Option<String>,
    /// Offline: the serve configuration whose signal to run over `--input`.
    #[arg(long, requires = "input")]
    pub config: Option<PathBuf>,
    /// Offline: recorded series of the signal (`prescale record` output, CSV,
    /// Prometheus JSON or OpenMetrics); may be repeated. "Now" is the end of the
    /// recording.
    #[arg(long)]
    pub input: Vec<PathBuf>,
    /// Only this signal (required offline when the configuration has several).
    #[arg(long)]
    pub signal: Option<String>,
    /// Only the series this label selector matches, e.g. `queue=jobs,vhost=/`.
    #[arg(long)]
    pub series: Option<String>,
    /// Print the `/debug/signals` JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs `prescale explain`.
///
/// # Errors
/// When the server cannot be reached or answers an error, or the configuration or
/// recording cannot be read.
pub fn run(args: Args) -> anyhow::Result<()> {
    let query = SignalsQuery {
        signal: args.signal.clone(),
        series: args.series.clone(),
    };
    let doc = match (&args.server, &args.config) {
        (Some(server), _) => from_server(server, &query)?,
        (None, Some(config)) => offline(config, &args.input, &query)?,
        (None, None) => anyhow::bail!("give --server URL, or --config FILE with --input FILE"),
    };
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        outln!("{}", render(&doc));
    }
    Ok(())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// `GET {server}/debug/signals` with the query.
fn from_server(server: &str, query: &SignalsQuery) -> anyhow::Result<Value> {
    let base = reqwest::Url::parse(server).with_context(|| format!("--server {server:?}"))?;
    let mut url = base
        .join("/debug/signals")
        .with_context(|| format!("--server {server:?}"))?;
    {
        let mut pairs = url.query_pairs_mut();
        if let Some(s) = &query.signal {
            pairs.append_pair("signal", s);
        }
        if let Some(s) = &query.series {
            pairs.append_pair("series", s);
        }
    }
    runtime()?.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .context("HTTP client")?;
        let resp = client
            .get(url.clone())
            .send()
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        let status = resp.status();
        let body = resp
            .text()
            .await
            .with_context(|| format!("reading the answer of {url}"))?;
        let value: Value = serde_json::from_str(&body)
            .with_context(|| format!("{url} answered {status} with no JSON: {body:.200}"))?;
        if !status.is_success() {
            let message = value["message"].as_str().unwrap_or(&body);
            anyhow::bail!("{url} answered {status}: {message}");
        }
        Ok(value)
    })
}

/// Runs the configured signal over the recording as the server's engine would,
/// with "now" at the recording's end (the engine starts some steps earlier, so the
/// band's calibration has outcomes as on a running server), and returns the same
/// document.
fn offline(
    config_path: &std::path::Path,
    inputs: &[PathBuf],
    query: &SignalsQuery,
) -> anyhow::Result<Value> {
    let config = Config::from_file(config_path)?;
    let chosen = match &query.signal {
        Some(name) => super::signal_named(&config, config_path, name)?,
        None if config.signals.len() == 1 => &config.signals[0],
        None => anyhow::bail!(
            "{} configures {} signals: name one with --signal",
            config_path.display(),
            config.signals.len()
        ),
    };
    let settings = SignalSettings::from_config(chosen)?;
    let options = ResampleOptions::default().with_step_ms(settings.tracker.step_ms);
    let mut recorded: Vec<LabeledSeries> = Vec::new();
    for path in inputs {
        let loaded = series::load_file(path, &options)
            .with_context(|| format!("--input {}", path.display()))?;
        for (mut s, _) in loaded {
            // A CSV has no labels: its series is named after its file.
            if s.labels.is_empty() && inputs.len() > 1 {
                let stem = path
                    .file_stem()
                    .map_or_else(String::new, |f| f.to_string_lossy().into_owned());
                s.labels.insert("file".to_string(), stem);
            }
            recorded.push(s);
        }
    }
    let now_ms = recorded
        .iter()
        .filter(|s| !s.series.is_empty())
        .map(|s| s.series.start_ms + (s.series.len() as i64 - 1) * s.series.step_ms)
        .max()
        .ok_or_else(|| anyhow::anyhow!("--input: no samples in the recording"))?;
    // A server that has run for a while has scored its recent peak forecasts (the
    // band's calibration): start `warm` steps before the end, then step to it.
    let step = settings.tracker.step_ms;
    let lead = settings.tracker.policy.lead_steps.max(1);
    let warm = (prescale::plan::peak::WINDOW + lead).min(settings.tracker.history_steps / 2);
    let source = Arc::new(FileSource::new(now_ms).with_recording(settings.query.clone(), recorded));
    let mut core = Core::new(vec![settings], Metrics::unregistered());
    let rt = runtime()?;
    for k in (0..=warm).rev() {
        let at = now_ms - k as i64 * step;
        let mut results = Vec::new();
        for p in core.plan(at, None) {
            let fetched = rt
                .block_on(source.fetch(&p.query, p.range))
                .map_err(Into::into);
            results.push((p, fetched, std::time::Duration::ZERO));
        }
        core.apply(at, results);
    }
    let snapshot = core.snapshot(now_ms);
    let query = SignalsQuery {
        signal: Some(chosen.name.to_string()),
        series: query.series.clone(),
    };
    signals_doc(&snapshot, true, now_ms, &query).map_err(|e| anyhow::anyhow!("{e}"))
}

fn num(v: &Value) -> Option<f64> {
    v.as_f64()
}

fn fmt_num(x: f64) -> String {
    if x == x.trunc() && x.abs() < 1e15 {
        format!("{x:.0}")
    } else {
        let s = format!("{x:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

fn opt(v: &Value) -> String {
    num(v).map_or_else(|| "none".to_string(), fmt_num)
}

/// The document in words, a paragraph per series.
pub(crate) fn render(doc: &Value) -> String {
    let mut out = Vec::new();
    if doc["ready"] == Value::Bool(false) {
        out.push("not ready: no snapshot published yet".to_string());
    }
    let empty = Vec::new();
    for m in doc["metrics"].as_array().unwrap_or(&empty) {
        let name = m["name"].as_str().unwrap_or("?");
        if let Some(e) = m["error"].as_str() {
            out.push(format!("{name}: last refresh failed: {e}"));
        }
        let series = m["series"].as_array().unwrap_or(&empty);
        if series.is_empty() {
            out.push(format!("{name}: no series"));
        }
        for s in series {
            out.push(render_series(name, s));
        }
    }
    out.join("\n\n")
}

fn render_series(name: &str, s: &Value) -> String {
    let labels = s["labels"]
        .as_object()
        .map(|o| {
            let parts: Vec<String> = o
                .iter()
                .map(|(k, v)| format!("{k}={:?}", v.as_str().unwrap_or("")))
                .collect();
            format!("{{{}}}", parts.join(", "))
        })
        .unwrap_or_default();
    let mut lines = vec![format!(
        "{name}{labels}: {}, serving {} ({})",
        s["status"].as_str().unwrap_or("?"),
        opt(&s["served_value"]),
        s["served_quantity"].as_str().unwrap_or("-"),
    )];
    let mut seen = format!(
        "  observed {} at {} ({} s ago)",
        opt(&s["latest"]),
        s["observed_at"].as_str().unwrap_or("?"),
        opt(&s["age_seconds"]),
    );
    if let Some(e) = num(&s["expires_in_seconds"]) {
        if e >= 0.0 {
            seen.push_str(&format!(
                "; served for {} s more unless refreshed",
                fmt_num(e)
            ));
        } else {
            seen.push_str(&format!("; expired {} s ago (503)", fmt_num(-e)));
        }
    }
    lines.push(seen);
    if let Some(r) = s["reason"].as_str() {
        lines.push(format!("  reason: {r}"));
    }
    let mase = num(&s["backtest_mase"]).map_or_else(
        || "no rolling score yet".to_string(),
        |m| format!("rolling one-step MASE {}", fmt_num(m)),
    );
    lines.push(format!(
        "  model {}, last fitted {}, {mase}",
        s["model"].as_str().unwrap_or("?"),
        s["last_fit"].as_str().unwrap_or("never"),
    ));
    let why = &s["why"];
    if why.is_object() {
        lines.push(format!("  rule: {}", why["text"].as_str().unwrap_or("?")));
        let c = &why["calibration"];
        if c.is_object() {
            let outcomes = c["outcomes"].as_u64().unwrap_or(0);
            let from = if outcomes == 0 {
                "the model's own band (no peak outcome known yet)".to_string()
            } else {
                format!("{outcomes} past peak forecasts of this series")
            };
            lines.push(format!(
                "  band: stands on {} (model peak {}, recent level {}); q{} offset {} from {from}",
                opt(&c["base"]),
                opt(&c["model_peak"]),
                opt(&c["recent_level"]),
                opt(&why["quantile"]),
                num(&c["offset"]).map_or_else(|| "none".to_string(), |o| format!("{o:+.4}")),
            ));
        }
        if let Some(path) = s["forecast_quantile"].as_array() {
            let due = why["steps_due"].as_u64().unwrap_or(0) as usize;
            let steps: Vec<String> = path.iter().take(due.max(1)).map(opt).collect();
            lines.push(format!(
                "  q{} forecast over the lead time ({} step(s), every {} s): {}",
                opt(&why["quantile"]),
                due,
                opt(&s["window_seconds"]),
                steps.join(" ")
            ));
        }
    } else {
        lines.push(
            "  warming: serving the floor (the latest observation; on a step finer than the \
             HPA's 15 s sync period, the served quantile of its points) × the tolerance factor \
             until there is enough history"
                .into(),
        );
    }
    if let Some(w) = num(&s["shadow_would_serve"]) {
        lines.push(format!(
            "  shadow mode: the latest is served; the forecast would serve {}",
            fmt_num(w)
        ));
    }
    lines.join("\n")
}
