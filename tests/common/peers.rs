//! The tools tests/e2e/peers.sh builds into the peers cache, for tests outside the
//! end-to-end tier that need them.

use std::path::{Path, PathBuf};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `${PRESCALE_PEERS_DIR:-~/.cache/prescale-peers}`.
pub fn cache_dir() -> PathBuf {
    match std::env::var_os("PRESCALE_PEERS_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
            .join(".cache/prescale-peers"),
    }
}

/// The Kubernetes release tests/e2e/peers/go.mod pins.
pub fn kubernetes_version() -> String {
    let gomod = std::fs::read_to_string(repo().join("tests/e2e/peers/go.mod"))
        .expect("tests/e2e/peers/go.mod");
    gomod
        .lines()
        .find_map(|l| l.strip_prefix("require k8s.io/kubernetes "))
        .expect("a `require k8s.io/kubernetes` line")
        .trim()
        .to_string()
}

/// kubectl: the pinned one of the peers cache, else one on PATH. Missing: `None`
/// with the reason printed outside CI, a failure with `CI=true` (tests/ci.sh builds
/// it first).
pub fn kubectl() -> Option<PathBuf> {
    let version = kubernetes_version();
    let pinned = cache_dir().join(format!("kubectl-{version}"));
    let stamp = cache_dir().join(format!("kubectl-{version}.stamp"));
    let found = (pinned.is_file() && stamp.is_file())
        .then_some(pinned)
        .or_else(|| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|d| d.join("kubectl"))
                    .find(|p| p.is_file())
            })
        });
    if found.is_none() {
        let why = format!(
            "kubectl {version} is not in {} nor on PATH (run `bash tests/e2e/peers.sh`)",
            cache_dir().display()
        );
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true: {why}"
        );
        println!("SKIPPED: {why}");
    }
    found
}
