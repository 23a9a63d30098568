//! `prescale record`: save a range of a PromQL query as CSV, one file per series,
//! so that production traffic can be replayed later (`backtest`, the file source).

use std::path::{Path, PathBuf};

use anyhow::Context;

use prescale::clock::{Clock, SystemClock};
use prescale::config::{Duration, PrometheusConfig};
use prescale::series::{write_csv, LabeledSeries};
use prescale::source::prometheus::PrometheusSource;
use prescale::source::{align_down, Range, Source};

/// Arguments of `prescale record`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Base URL of the Prometheus HTTP API.
    #[arg(long)]
    pub prometheus: String,
    /// PromQL; every series it returns is saved to its own file.
    #[arg(long)]
    pub query: String,
    /// Start: RFC 3339 (`2026-11-20T00:00:00Z`), unix seconds, `now` or `now-7d`.
    #[arg(long)]
    pub start: String,
    /// End, in the same forms as `--start`.
    #[arg(long, default_value = "now")]
    pub end: String,
    /// Grid step (`30s`, `5m`); a whole number of seconds.
    #[arg(long, default_value = "1m")]
    pub step: String,
    /// Output CSV. With several series, `NAME-1.csv`, `NAME-2.csv`, ...; each file's
    /// labels go to a sidecar `NAME[-i].labels.json`.
    #[arg(long)]
    pub out: PathBuf,
    /// Timeout of each range query.
    #[arg(long, default_value = "30s")]
    pub timeout: String,
    /// File holding a bearer token for Prometheus.
    #[arg(long)]
    pub bearer_token_file: Option<PathBuf>,
}

/// Runs `prescale record`.
///
/// # Errors
/// On a bad argument, a failing query, or a file that cannot be written.
pub fn run(args: Args) -> anyhow::Result<()> {
    let now_ms = SystemClock.now_ms();
    let step = Duration::try_new(&args.step).map_err(|e| anyhow::anyhow!("--step: {e}"))?;
    let step_ms = step.as_ms();
    anyhow::ensure!(
        step_ms % 1_000 == 0,
        "--step: must be a whole number of seconds, got {step}"
    );
    let start_ms = parse_time(&args.start, now_ms).context("--start")?;
    let end_ms = parse_time(&args.end, now_ms).context("--end")?;
    anyhow::ensure!(
        start_ms <= end_ms,
        "--start ({}) is after --end ({})",
        args.start,
        args.end
    );
    // The first grid point at or after start, the last at or before end.
    let first = align_down(start_ms + step_ms - 1, step_ms);
    let range = Range::try_new(first, align_down(end_ms, step_ms), step_ms)
        .context("the range holds no grid point; widen it or shorten --step")?;
    let config = PrometheusConfig {
        url: args.prometheus.clone(),
        timeout: Duration::try_new(&args.timeout).map_err(|e| anyhow::anyhow!("--timeout: {e}"))?,
        bearer_token_file: args.bearer_token_file.clone(),
        ca_file: None,
        insecure_skip_verify: false,
        headers: Default::default(),
        freshness_query: String::new(),
        query_offset: None,
    };
    let source = PrometheusSource::new(&config).context("cannot set up the Prometheus client")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let series = runtime
        .block_on(source.fetch(&args.query, range))
        .with_context(|| format!("cannot read {:?} from {}", args.query, args.prometheus))?;
    anyhow::ensure!(
        !series.is_empty(),
        "the query returned no series in that range"
    );
    let paths = write_all(&series, &args.out)?;
    for (s, path) in series.iter().zip(&paths) {
        let points = s.series.values.iter().filter(|v| v.is_finite()).count();
        outln!(
            "{}: {} ({points} of {} points)",
            path.display(),
            s.labels.to_string(),
            range.len()
        );
    }
    Ok(())
}

/// Writes each series to its CSV and its labels to the sidecar; returns the CSV paths.
fn write_all(series: &[LabeledSeries], out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let stem = out.with_extension("");
    let mut paths = Vec::new();
    for (i, s) in series.iter().enumerate() {
        let base = if series.len() == 1 {
            stem.clone()
        } else {
            PathBuf::from(format!("{}-{}", stem.display(), i + 1))
        };
        let csv = base.with_extension("csv");
        let mut file = std::io::BufWriter::new(
            std::fs::File::create(&csv)
                .with_context(|| format!("cannot create {}", csv.display()))?,
        );
        write_csv(&s.series, &mut file)
            .with_context(|| format!("cannot write {}", csv.display()))?;
        let sidecar = base.with_extension("labels.json");
        let json = serde_json::to_string_pretty(&s.labels)?;
        std::fs::write(&sidecar, json + "\n")
            .with_context(|| format!("cannot write {}", sidecar.display()))?;
        paths.push(csv);
    }
    Ok(paths)
}

/// Unix milliseconds from RFC 3339, unix seconds, `now` or `now-<duration>`.
fn parse_time(text: &str, now_ms: i64) -> anyhow::Result<i64> {
    let t = text.trim();
    if t == "now" {
        return Ok(now_ms);
    }
    if let Some(ago) = t.strip_prefix("now-") {
        let d = Duration::try_new(ago).map_err(|e| anyhow::anyhow!("{e}"))?;
        return Ok(now_ms - d.as_ms());
    }
    if let Ok(secs) = t.parse::<f64>() {
        anyhow::ensure!(
            secs.is_finite() && secs >= 0.0,
            "must be a non-negative unix time, got {t:?}"
        );
        return Ok((secs * 1_000.0).round() as i64);
    }
    let dt = chrono::DateTime::parse_from_rfc3339(t).map_err(|_| {
        anyhow::anyhow!(
            "expected RFC 3339 (2026-11-20T00:00:00Z), unix seconds, now or now-7d, got {t:?}"
        )
    })?;
    Ok(dt.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_in_all_forms() {
        assert_eq!(parse_time("now", 5_000).unwrap(), 5_000);
        assert_eq!(parse_time("now-1m", 120_000).unwrap(), 60_000);
        assert_eq!(parse_time("1700000000", 0).unwrap(), 1_700_000_000_000);
        assert_eq!(
            parse_time("2023-11-14T22:13:20Z", 0).unwrap(),
            1_700_000_000_000
        );
        assert!(parse_time("yesterday", 0).is_err());
        assert!(parse_time("-5", 0).is_err());
    }
}
