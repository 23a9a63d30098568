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

cargo fmt --check
cargo clippy --all-targets -- -D warnings
cargo bench --no-run
cargo test
