//! Recorded traces as evaluation tasks: several forecast origins per trace.

use std::path::Path;

use anyhow::Context as _;
use prescale::eval::Task;
use prescale::forecast::candidate_periods;
use prescale::series::{self, ResampleOptions};

/// Forecast origins per trace, spread over its last third.
const ORIGINS: usize = 8;

/// Most history a fit sees: three weeks or 10 000 points, whichever is less (what
/// a serving loop would keep).
const MAX_HISTORY_MS: i64 = 21 * 86_400_000;
const MAX_HISTORY_POINTS: usize = 10_000;

/// Loads every trace in `dir` (`.csv`, `.json`, `.om`, `.prom`) into tasks named
/// `file#k`, one per origin.
///
/// # Errors
/// When the directory or a file cannot be read or parsed.
pub fn tasks(dir: &Path, horizon: usize) -> anyhow::Result<Vec<Task>> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading directory {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("csv" | "json" | "om" | "prom")
            )
        })
        .collect();
    paths.sort();
    let horizon = horizon.max(1);
    let mut out = Vec::new();
    let mut too_short = Vec::new();
    for path in paths {
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("trace")
            .to_string();
        for (labeled, _) in series::load_file(&path, &ResampleOptions::default())? {
            let s = labeled.series;
            let step_ms = s.step_ms;
            let m = candidate_periods(step_ms).first().copied().unwrap_or(1);
            let cap = ((MAX_HISTORY_MS / step_ms.max(1)) as usize).min(MAX_HISTORY_POINTS);
            let n = s.values.len();
            // Every origin leaves a full horizon after it and two seasons before it.
            let first = (n * 2 / 3).max(2 * m + 1);
            let last = n.saturating_sub(horizon);
            if last <= first {
                too_short.push(format!(
                    "{name}: {n} points; its origins need {} before them (two seasons of {m} and one point, or two thirds of the trace) and a horizon of {horizon} after",
                    first
                ));
                continue;
            }
            let stride = ((last - first) / ORIGINS).max(1);
            for (k, o) in (first..=last).step_by(stride).take(ORIGINS).enumerate() {
                out.push(Task {
                    id: format!("{name}#{k}"),
                    history: s.values[o.saturating_sub(cap)..o].to_vec(),
                    actual: s.values[o..o + horizon].to_vec(),
                    step_ms,
                    m,
                });
            }
        }
    }
    if out.is_empty() && !too_short.is_empty() {
        anyhow::bail!(
            "no trace is long enough to evaluate:\n  {}",
            too_short.join("\n  ")
        );
    }
    for t in &too_short {
        eprintln!("skipped {t}");
    }
    Ok(out)
}
