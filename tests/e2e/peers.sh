#!/usr/bin/env bash
# Builds the real Kubernetes peers of the end-to-end tier (tests/e2e.rs) from the
# upstream Go module pinned in tests/e2e/peers/go.mod, into a cache outside the
# repository keyed by version:
#
#   ${PRESCALE_PEERS_DIR:-~/.cache/prescale-peers}/<name>-<version>   (+ <name>-<version>.stamp)
#
# A warm run only checks that each binary and its stamp exist (no Go invocation).
# A cold run needs Go >= 1.26 and the Go module proxy: ~8 min on an idle 2-core
# machine, ~20 min on a busy one. Nothing is written inside the repository except
# go.sum being completed when the pinned module graph needs it.
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

missing=()
for name in "${PEERS[@]}"; do
    bin="$CACHE/$name-$K8S_VERSION"
    if [ ! -x "$bin" ] || [ ! -f "$bin.stamp" ]; then
        missing+=("$name")
    fi
done
if [ "${#missing[@]}" -eq 0 ]; then
    echo "peers: cached in $CACHE (kubernetes $K8S_VERSION)"
    exit 0
fi

if ! command -v go >/dev/null 2>&1; then
    echo "peers.sh: go is not installed (needed to build ${missing[*]} $K8S_VERSION)" >&2
    exit 1
fi

echo "peers: building ${missing[*]} $K8S_VERSION with $(go version) into $CACHE"
start=$(date +%s)
mkdir -p "$CACHE"
work="$(mktemp -d "$CACHE/.build.XXXXXX")"
trap 'rm -rf "$work"' EXIT

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
