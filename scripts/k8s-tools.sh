#!/usr/bin/env bash
# Installs what `make k8s-check` needs besides kubectl, docker compose and promtool (which
# scripts/ensure-services.sh installs): a Python virtualenv with checkov and kubernetes-validate
# (k8s/check/requirements.txt) and the npm package with KEDA's CRD schemas
# (k8s/check/package.json + package-lock.json), both in a cache directory outside the repository,
# ${SHOPFDS_K8S_TOOLS:-$HOME/.cache/shopfds/k8s-tools}. Reinstalls only when those files change
# (stamped by their hash), so a second run is instant. Prints the directory on stdout; progress on
# stderr. Concurrent callers are serialised with flock.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="${SHOPFDS_K8S_TOOLS:-$HOME/.cache/shopfds/k8s-tools}"
check="$repo/k8s/check"
python="${PYTHON:-python3}"

log() { echo "k8s-tools: $*" >&2; }
die() { log "error: $*"; exit 1; }

command -v "$python" >/dev/null 2>&1 || die "'$python' not found (apt-get install -y python3 python3-venv)"
command -v npm >/dev/null 2>&1 || die "npm not found (scripts/ensure-services.sh installs nodejs and npm)"

interpreter="$(readlink -f "$(command -v "$python")")"
py_wanted="$({ cat "$check/requirements.txt"; echo "$interpreter"; } | sha256sum | cut -d' ' -f1)"
node_wanted="$(cat "$check/package.json" "$check/package-lock.json" | sha256sum | cut -d' ' -f1)"
py_stamp="$tools/venv/.shopfds.sha256"
node_stamp="$tools/node/.shopfds.sha256"

current() { [[ -f "$1" && "$(cat "$1")" == "$2" ]]; }

if current "$py_stamp" "$py_wanted" && current "$node_stamp" "$node_wanted"; then
    echo "$tools"
    exit 0
fi

mkdir -p "$tools"
exec 9>"$tools/.lock"
flock 9

if ! current "$py_stamp" "$py_wanted"; then
    [[ -x "$tools/venv/bin/python" ]] || "$python" -m venv "$tools/venv" >&2 \
        || die "'$python -m venv' failed (apt-get install -y python3-venv)"
    log "installing checkov and kubernetes-validate into $tools/venv (a minute the first time)"
    "$tools/venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        --requirement "$check/requirements.txt" >&2
    printf '%s\n' "$py_wanted" >"$py_stamp"
fi

if ! current "$node_stamp" "$node_wanted"; then
    log "installing KEDA's CRD schemas (npm ci) into $tools/node"
    mkdir -p "$tools/node"
    cp "$check/package.json" "$check/package-lock.json" "$tools/node/"
    (cd "$tools/node" && npm ci --no-audit --no-fund --loglevel=error >&2)
    printf '%s\n' "$node_wanted" >"$node_stamp"
fi

echo "$tools"
