#!/usr/bin/env bash
# `make k8s-check` (and tools/config-checks/tests/k8s.rs, so `make test` runs it): installs the
# check's tools where missing (scripts/k8s-tools.sh; kubectl and promtool come from
# scripts/ensure-services.sh), then runs k8s/check/check.py (the manifests and the compose file)
# and infrastructure/check-config.py (compose, RabbitMQ, Prometheus, Grafana), both with the
# tools' virtualenv. Exit status 0 only when both pass.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$("$repo/scripts/k8s-tools.sh")"
python="$tools/venv/bin/python"

status=0
"$python" "$repo/k8s/check/check.py" --node-modules "$tools/node/node_modules" || status=1
"$python" "$repo/infrastructure/check-config.py" || status=1
exit "$status"
