#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need, then
# runs format and lint checks, compiles the benches and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

# The integration tests start a real Prometheus and backfill it with promtool; the
# end-to-end tier (tests/it/e2e.rs) also runs etcd; tests/it/rabbitmq.rs runs a RabbitMQ
# node of its own (rabbitmq-server, with the rabbitmq_prometheus and
# rabbitmq_management plugins it ships); the plots need a font.
missing=()
if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
    missing+=(prometheus)
fi
if ! command -v etcd >/dev/null 2>&1; then
    missing+=(etcd-server)
fi
# Debian's /usr/sbin/rabbitmq-server is a wrapper; the test runs the scripts it wraps.
if [ ! -x /usr/lib/rabbitmq/bin/rabbitmq-server ] && ! command -v rabbitmq-server >/dev/null 2>&1; then
    missing+=(rabbitmq-server)
fi
# tests/it/image.rs assembles and runs the container image without a Docker daemon.
if ! command -v umoci >/dev/null 2>&1; then
    missing+=(umoci)
fi
if [ ! -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]; then
    missing+=(fonts-dejavu-core)
fi
if [ "${#missing[@]}" -gt 0 ]; then
    # rabbitmq-server pulls in erlang-base, whose epmd.socket listens on :4369.
    had_epmd=0
    if command -v epmd >/dev/null 2>&1; then had_epmd=1; fi
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
    # On a systemd host the packages start and enable their own services (Prometheus
    # on :9090, etcd on :2379, RabbitMQ on :5672); the tests start their own on free
    # ports, so the ones installed here (only those) are stopped and disabled, not
    # left running.
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        for pkg in "${missing[@]}"; do
            case "$pkg" in
                prometheus) unit=prometheus ;;
                etcd-server) unit=etcd ;;
                rabbitmq-server) unit=rabbitmq-server ;;
                *) continue ;;
            esac
            $SUDO systemctl disable --now "$unit" >/dev/null 2>&1 || true
        done
        if [ "$had_epmd" -eq 0 ] && command -v epmd >/dev/null 2>&1; then
            $SUDO systemctl disable --now epmd.socket epmd.service >/dev/null 2>&1 || true
        fi
    fi
fi

# The end-to-end tier's peers (kube-apiserver, kube-controller-manager, kubectl, helm,
# and the KEDA test client keda-client), built from their pinned Go modules into
# ~/.cache/prescale-peers (cold: ~8 min idle on 2 cores, helm ~3 min more, keda-client
# ~1 min; warm: a file check). In CI (CI=true) tests/it/e2e.rs fails
# rather than skips when they are missing.
bash tests/e2e/peers.sh

# Layering: the pure core imports no async runtime, server, Kubernetes or Prometheus client.
# Comment lines are skipped: docs may name the edge modules (`kube::pods`) that do the I/O.
if grep -rnE '(^|[^a-z_])(tokio|kube|tonic|axum|hyper|hyper_util|prometheus_http_query|reqwest|k8s_openapi)::' \
    src/forecast src/plan src/backtest src/series src/custom.rs src/names.rs src/quantity.rs | grep -vE '^[^:]+:[0-9]+:[[:space:]]*//'; then
    echo "error: src/forecast, src/plan, src/backtest, src/series, src/custom.rs, src/names.rs and src/quantity.rs must stay pure (README.md, section Layout: the pure core does no I/O)" >&2
    exit 1
fi

# No import cycles between the modules of src/ (ARCHITECTURE.md, "Rules").
python3 tests/module_cycles.py

cargo fmt --check
cargo clippy --all-targets -- -D warnings
# The benches compile and link (dev profile, sharing the test build's artifacts):
# `cargo bench --no-run` would be a second full release build (~13 min on a busy
# 2-core machine) that clippy --all-targets has already type-checked, and the
# cold run with the e2e peers must stay within 60 minutes.
cargo build --benches
cargo test

# Fuzz smoke: every parser target for a few seconds on stable Rust (`--sanitizer none`:
# AddressSanitizer needs nightly, and the crate forbids unsafe code anyway). The fuzz
# crate is outside the main build (tests/fuzz/Cargo.toml); README "Fuzzing" has the longer run.
# The instrumented build is the cost (~10 CPU-minutes cold); FUZZ_SECONDS=0 skips it.
FUZZ_SECONDS="${FUZZ_SECONDS:-5}"
if [ "$FUZZ_SECONDS" -gt 0 ]; then
    if ! command -v cargo-fuzz >/dev/null 2>&1; then
        cargo install cargo-fuzz --locked
    fi
    for target in $(cargo fuzz list --fuzz-dir tests/fuzz); do
        mkdir -p "tests/fuzz/corpus/$target" "tests/fuzz/seeds/$target"
        cargo fuzz run "$target" --fuzz-dir tests/fuzz --sanitizer none \
            "tests/fuzz/corpus/$target" "tests/fuzz/seeds/$target" \
            -- -max_total_time="$FUZZ_SECONDS" -max_len=4096 -print_final_stats=1
    done
fi
