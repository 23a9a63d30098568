#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need, then
# runs format and lint checks, compiles the benches and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

# The integration tests start a real Prometheus and backfill it with promtool.
if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends prometheus
fi

# Layering: the pure core imports no async runtime, server, Kubernetes or Prometheus client.
if grep -rnE '(^|[^a-z_])(tokio|kube|tonic|axum|hyper|hyper_util|prometheus_http_query|reqwest|k8s_openapi)::' \
    src/forecast src/plan src/backtest src/custom.rs; then
    echo "error: src/forecast, src/plan, src/backtest and src/custom.rs must stay pure (see DESIGN.md)" >&2
    exit 1
fi

cargo fmt --check
cargo clippy --all-targets -- -D warnings
cargo bench --no-run
cargo test
