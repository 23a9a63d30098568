//! The tools tests/e2e/peers.sh builds into the peers cache, for tests outside the
//! end-to-end tier (and benches) that need them.

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

/// A binary of the peers cache, or why it is not there (it or its stamp missing).
pub fn pinned(name: &str, version: &str) -> Result<PathBuf, String> {
    let bin = cache_dir().join(format!("{name}-{version}"));
    let stamp = cache_dir().join(format!("{name}-{version}.stamp"));
    if bin.is_file() && stamp.is_file() {
        Ok(bin)
    } else {
        Err(format!(
            "{} (with its .stamp) is missing: run `bash tests/e2e/peers.sh`",
            bin.display()
        ))
    }
}

/// A binary of the peers cache, if it and its stamp are there.
pub fn cached(name: &str, version: &str) -> Option<PathBuf> {
    pinned(name, version).ok()
}

/// The helm version tests/e2e/peers.sh pins (its `HELM_VERSION=` line).
pub fn helm_version() -> String {
    let script =
        std::fs::read_to_string(repo().join("tests/e2e/peers.sh")).expect("tests/e2e/peers.sh");
    script
        .lines()
        .find_map(|l| l.strip_prefix("HELM_VERSION="))
        .expect("a HELM_VERSION= line in tests/e2e/peers.sh")
        .trim()
        .to_string()
}

/// kubectl: the pinned one of the peers cache, else one on PATH. Missing: `None`
/// with the reason printed outside CI, a failure with `CI=true` (tests/ci.sh builds
/// it first).
pub fn kubectl() -> Option<PathBuf> {
    let version = kubernetes_version();
    let found = cached("kubectl", &version).or_else(|| {
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

/// The prometheus-adapter version tests/e2e/adapter/go.mod pins (its
/// `sigs.k8s.io/prometheus-adapter vX.Y.Z` requirement).
pub fn adapter_version() -> String {
    let gomod = std::fs::read_to_string(repo().join("tests/e2e/adapter/go.mod"))
        .expect("tests/e2e/adapter/go.mod");
    gomod
        .lines()
        .find_map(|l| {
            let rest = l
                .trim_start()
                .strip_prefix("require ")
                .unwrap_or(l.trim_start());
            rest.strip_prefix("sigs.k8s.io/prometheus-adapter ")
        })
        .and_then(|v| v.split_whitespace().next())
        .expect("a `sigs.k8s.io/prometheus-adapter vX.Y.Z` requirement")
        .to_string()
}

/// prometheus-adapter, the pinned binary of the peers cache (tests/e2e/peers.sh
/// builds it). Missing: `None` with the reason printed outside CI, a failure with
/// `CI=true`.
pub fn prometheus_adapter() -> Option<PathBuf> {
    match pinned("prometheus-adapter", &adapter_version()) {
        Ok(bin) => Some(bin),
        Err(why) => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true: prometheus-adapter: {why}"
            );
            println!("SKIPPED: prometheus-adapter: {why}");
            None
        }
    }
}
