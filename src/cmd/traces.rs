//! Recorded traces as evaluation tasks (needs the series reader; see `series`).

use std::path::Path;

use prescale::eval::Task;

/// Loads every trace in `dir` into tasks.
///
/// # Errors
/// When the directory or a file cannot be read.
pub fn tasks(dir: &Path, horizon: usize) -> anyhow::Result<Vec<Task>> {
    let _ = (dir, horizon);
    anyhow::bail!("trace evaluation needs the series CSV reader (src/series.rs), not merged yet")
}
