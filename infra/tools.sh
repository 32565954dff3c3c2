#!/usr/bin/env bash
# Idempotent install of the renderer tests/test_infra.py needs: `kubectl kustomize` (kustomize >= v4 inside), else
# a standalone `kustomize`. Does nothing when one already works (the common case on a developer machine).
#   1. kubectl on PATH and `kubectl kustomize` renders the dev overlay -> done
#   2. kustomize on PATH or in $VENV_BIN -> done
#   3. apt: `kubectl` if the configured lists carry it (Google/Kubernetes apt repositories, newer Debian), run as
#      root or through sudo
#   4. Go toolchain present: `go install sigs.k8s.io/kustomize/kustomize/v5` into $VENV_BIN (Go module proxy)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV_BIN=${VENV_BIN:-.venv/bin}
KUSTOMIZE_VERSION=${KUSTOMIZE_VERSION:-v5.5.0}
probe=infra/k8s/overlays/dev

works() { "$@" >/dev/null 2>&1; }

if command -v kubectl >/dev/null && works kubectl kustomize "$probe"; then exit 0; fi
if command -v kustomize >/dev/null && works kustomize build "$probe"; then exit 0; fi
if [ -x "$VENV_BIN/kustomize" ] && works "$VENV_BIN/kustomize" build "$probe"; then exit 0; fi

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }
if command -v apt-get >/dev/null; then
    as_root apt-get update -qq || true
    if apt-cache policy kubectl 2>/dev/null | grep -q 'Candidate: [0-9]'; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kubectl || true
    fi
    if command -v kubectl >/dev/null && works kubectl kustomize "$probe"; then exit 0; fi
fi
if command -v go >/dev/null; then
    GOBIN="$(cd "$VENV_BIN" && pwd)" go install "sigs.k8s.io/kustomize/kustomize/v5@${KUSTOMIZE_VERSION}"
    if works "$VENV_BIN/kustomize" build "$probe"; then exit 0; fi
fi
echo "infra/tools.sh: no kustomize renderer: install kubectl >= 1.21 or kustomize >= v4 (see docs/operations.md)" >&2
exit 1
