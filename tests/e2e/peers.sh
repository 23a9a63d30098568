#!/usr/bin/env bash
# Builds the real Kubernetes peers of the end-to-end tier (tests/it/e2e.rs) from the
# upstream Go module pinned in tests/e2e/peers/go.mod, into a cache outside the
# repository keyed by version:
#
#   ${PRESCALE_PEERS_DIR:-~/.cache/prescale-peers}/<name>-<version>   (+ <name>-<version>.stamp)
#
# and `helm` (HELM_VERSION below) for the Helm chart's tests (tests/it/deploy/helm.rs and check
# "f" of tests/it/e2e.rs), installed with `go install helm.sh/helm/v4/cmd/helm@VERSION`:
# that uses Helm's own go.mod and go.sum (verified by the checksum database), not
# tests/e2e/peers/go.mod.
#
# and `keda-client` (tests/e2e/keda: a small client of prescale's KEDA external
# scaler built on KEDA's own generated `externalscaler` package, the
# github.com/kedacore/keda/v2 version pinned in tests/e2e/keda/go.mod, with its
# committed go.sum), keyed by that version; its stamp also records a hash of the
# client's sources, so an edited client is rebuilt. Cold: ~1 min (60 s measured
# with empty Go module and build caches, downloads included).
#
# A warm run only checks that each binary and its stamp exist (no Go invocation).
# A cold run needs Go >= 1.26 and the Go module proxy: ~8 min on an idle 2-core
# machine, ~20 min on a busy one, for the Kubernetes peers; helm then adds ~3 min
# (180 s measured on a quiet 2-core machine, module downloads included: it shares
# the k8s.io modules at the same version, so most of them are compiled already).
#
# and `prometheus-adapter` for the side-by-side bench (benches/adapter.rs): its
# `cmd/adapter` built from the sigs.k8s.io/prometheus-adapter version that
# tests/e2e/adapter/go.mod pins (with its committed go.sum, which selects exactly the
# adapter's own go.mod versions; why not `go install ...@VERSION` as for helm: see
# below), keyed by that version, the stamp recording a hash of go.mod and go.sum.
# Cold: ~4 min (234 s measured on a 2-core machine busy with other builds, load 4;
# its modules, ~10 s to download, were already in the Go module cache).
# Nothing is written inside the repository except go.sum being completed when the
# pinned module graph needs it.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
mod="$here/peers"

K8S_VERSION="$(sed -n 's/^require k8s.io\/kubernetes \(v[0-9.]*\)$/\1/p' "$mod/go.mod")"
if [ -z "$K8S_VERSION" ]; then
    echo "peers.sh: no 'require k8s.io/kubernetes vX.Y.Z' line in $mod/go.mod" >&2
    exit 1
fi
CACHE="${PRESCALE_PEERS_DIR:-$HOME/.cache/prescale-peers}"
PEERS=(kube-apiserver kube-controller-manager kubectl)
HELM_VERSION=v4.3.2
helm_bin="$CACHE/helm-$HELM_VERSION"
need_helm=0
if [ ! -x "$helm_bin" ] || [ ! -f "$helm_bin.stamp" ]; then
    need_helm=1
fi
adapter_mod="$here/adapter"
ADAPTER_VERSION="$(sed -n 's/^[[:space:]]*sigs.k8s.io\/prometheus-adapter \(v[0-9.]*\).*$/\1/p' "$adapter_mod/go.mod")"
if [ -z "$ADAPTER_VERSION" ]; then
    echo "peers.sh: no 'sigs.k8s.io/prometheus-adapter vX.Y.Z' requirement in $adapter_mod/go.mod" >&2
    exit 1
fi
adapter_bin="$CACHE/prometheus-adapter-$ADAPTER_VERSION"
adapter_sources="$(cat "$adapter_mod/go.mod" "$adapter_mod/go.sum" | sha256sum | cut -c1-16)"
need_adapter=0
if [ ! -x "$adapter_bin" ] || [ ! -f "$adapter_bin.stamp" ] || ! grep -qx "sources $adapter_sources" "$adapter_bin.stamp"; then
    need_adapter=1
fi
keda_mod="$here/keda"
KEDA_VERSION="$(sed -n 's/^[[:space:]]*github.com\/kedacore\/keda\/v2 \(v[0-9.]*\)$/\1/p' "$keda_mod/go.mod")"
if [ -z "$KEDA_VERSION" ]; then
    echo "peers.sh: no 'github.com/kedacore/keda/v2 vX.Y.Z' requirement in $keda_mod/go.mod" >&2
    exit 1
fi
keda_bin="$CACHE/keda-client-$KEDA_VERSION"
keda_sources="$(cat "$keda_mod/go.mod" "$keda_mod/go.sum" "$keda_mod/main.go" | sha256sum | cut -c1-16)"
need_keda=0
if [ ! -x "$keda_bin" ] || [ ! -f "$keda_bin.stamp" ] || ! grep -qx "sources $keda_sources" "$keda_bin.stamp"; then
    need_keda=1
fi

missing=()
for name in "${PEERS[@]}"; do
    bin="$CACHE/$name-$K8S_VERSION"
    if [ ! -x "$bin" ] || [ ! -f "$bin.stamp" ]; then
        missing+=("$name")
    fi
done
if [ "${#missing[@]}" -eq 0 ] && [ "$need_helm" -eq 0 ] && [ "$need_keda" -eq 0 ] && [ "$need_adapter" -eq 0 ]; then
    echo "peers: cached in $CACHE (kubernetes $K8S_VERSION, helm $HELM_VERSION, keda-client $KEDA_VERSION, prometheus-adapter $ADAPTER_VERSION)"
    exit 0
fi

if ! command -v go >/dev/null 2>&1; then
    want="${missing[*]} $K8S_VERSION"
    [ "$need_helm" -eq 1 ] && want="$want helm $HELM_VERSION"
    [ "$need_keda" -eq 1 ] && want="$want keda-client $KEDA_VERSION"
    [ "$need_adapter" -eq 1 ] && want="$want prometheus-adapter $ADAPTER_VERSION"
    echo "peers.sh: go is not installed (needed to build $want)" >&2
    exit 1
fi

mkdir -p "$CACHE"
work="$(mktemp -d "$CACHE/.build.XXXXXX")"
trap 'rm -rf "$work"' EXIT

if [ "${#missing[@]}" -gt 0 ]; then
    echo "peers: building ${missing[*]} $K8S_VERSION with $(go version) into $CACHE"
    start=$(date +%s)

    minor="${K8S_VERSION#v1.}"
    minor="${minor%%.*}"
    ldflags="-s -w"
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
        ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
    done

    pkgs=()
    for name in "${missing[@]}"; do
        pkgs+=("k8s.io/kubernetes/cmd/$name")
    done

    # One `go build` for all of them shares the compiled dependency graph.
    # -mod=mod lets go fill go.sum from the proxy (checked by the checksum database).
    (
        cd "$mod"
        GOTOOLCHAIN=local GOFLAGS="-mod=mod -buildvcs=false" CGO_ENABLED=0 \
            go build -trimpath -ldflags "$ldflags" -o "$work/" "${pkgs[@]}"
    )

    for name in "${missing[@]}"; do
        bin="$CACHE/$name-$K8S_VERSION"
        mv -f "$work/$name" "$bin"
        printf 'kubernetes %s\n%s\nbuilt %s\n' "$K8S_VERSION" "$(go version)" "$(date -u +%FT%TZ)" > "$bin.stamp"
    done
    echo "peers: built ${missing[*]} in $(( $(date +%s) - start ))s"
fi

if [ "$need_helm" -eq 1 ]; then
    echo "peers: building helm $HELM_VERSION with $(go version) into $CACHE"
    start=$(date +%s)
    v=helm.sh/helm/v4/internal/version
    # `go install pkg@version` ignores any go.mod around it (run from the empty
    # build directory anyway) and builds Helm's own pinned module graph. The
    # version variables are the ones Helm's Makefile sets for a release build.
    (
        cd "$work"
        GOTOOLCHAIN=local GOFLAGS="-buildvcs=false" CGO_ENABLED=0 GOBIN="$work" \
            go install -trimpath \
            -ldflags "-s -w -X $v.version=$HELM_VERSION -X $v.gitTreeState=clean" \
            "helm.sh/helm/v4/cmd/helm@$HELM_VERSION"
    )
    mv -f "$work/helm" "$helm_bin"
    printf 'helm %s\n%s\nbuilt %s\n' "$HELM_VERSION" "$(go version)" "$(date -u +%FT%TZ)" > "$helm_bin.stamp"
    echo "peers: built helm $HELM_VERSION in $(( $(date +%s) - start ))s"
fi

if [ "$need_keda" -eq 1 ]; then
    echo "peers: building keda-client (github.com/kedacore/keda/v2 $KEDA_VERSION) with $(go version) into $CACHE"
    start=$(date +%s)
    # -mod=readonly: the committed go.sum must cover the build; nothing is written.
    (
        cd "$keda_mod"
        GOTOOLCHAIN=local GOFLAGS="-mod=readonly -buildvcs=false" CGO_ENABLED=0 \
            go build -trimpath -ldflags "-s -w" -o "$work/keda-client" .
    )
    mv -f "$work/keda-client" "$keda_bin"
    printf 'keda %s\nsources %s\n%s\nbuilt %s\n' "$KEDA_VERSION" "$keda_sources" "$(go version)" "$(date -u +%FT%TZ)" > "$keda_bin.stamp"
    echo "peers: built keda-client $KEDA_VERSION in $(( $(date +%s) - start ))s"
fi

if [ "$need_adapter" -eq 1 ]; then
    echo "peers: building prometheus-adapter $ADAPTER_VERSION with $(go version) into $CACHE"
    start=$(date +%s)
    # Not `go install sigs.k8s.io/prometheus-adapter/cmd/adapter@VERSION` as for
    # helm: that also asks the proxy for the module's version list (to look for a
    # deprecation notice on the latest version), and the proxy refuses that list for
    # this module ("403 Forbidden ... This module version is not available") while it
    # serves v0.12.0 itself. tests/e2e/adapter/go.mod requires the module (as a
    # `tool`), and its go.sum is committed; the build selects exactly the versions of
    # prometheus-adapter's own go.mod. -mod=readonly: nothing is written.
    (
        cd "$adapter_mod"
        GOTOOLCHAIN=local GOFLAGS="-mod=readonly -buildvcs=false" CGO_ENABLED=0 \
            go build -trimpath -ldflags "-s -w" -o "$work/prometheus-adapter" \
            sigs.k8s.io/prometheus-adapter/cmd/adapter
    )
    mv -f "$work/prometheus-adapter" "$adapter_bin"
    printf 'prometheus-adapter %s\nsources %s\n%s\nbuilt %s\n' "$ADAPTER_VERSION" "$adapter_sources" "$(go version)" "$(date -u +%FT%TZ)" > "$adapter_bin.stamp"
    echo "peers: built prometheus-adapter $ADAPTER_VERSION in $(( $(date +%s) - start ))s"
fi
