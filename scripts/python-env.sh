#!/usr/bin/env bash
# Creates or updates the Python virtualenv used by the interop tests (stock Celery worker and client,
# aiosmtpd as a real SMTP sink), from interop/python/requirements.txt.
#
# The venv lives at ${SHOPFDS_VENV:-<repo>/.venv}. pip runs only when the requirements (or the Python
# interpreter) changed since the last successful install, so a second run is instant. Concurrent
# callers (parallel test binaries) are serialised with flock. The venv path is the only thing printed
# on stdout; progress goes to stderr.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${SHOPFDS_VENV:-$repo/.venv}"
requirements="$repo/interop/python/requirements.txt"
python="${PYTHON:-python3}"

if ! command -v "$python" >/dev/null 2>&1; then
    echo "python-env: '$python' not found; install Python 3.11+ (apt-get install -y python3 python3-venv)" >&2
    exit 1
fi
if [[ ! -f "$requirements" ]]; then
    echo "python-env: $requirements is missing" >&2
    exit 1
fi

# The stamp covers the requirements and the interpreter (its resolved path, e.g. python3.11, which
# changes with a minor upgrade), so a new python3 rebuilds. Starting Python to ask its version
# would cost more than the whole warm path.
interpreter="$(readlink -f "$(command -v "$python")")"
wanted="$({ cat "$requirements"; echo "$interpreter"; } | sha256sum | cut -d' ' -f1)"
stamp="$venv/.shopfds-requirements.sha256"

if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$wanted" ]]; then
    echo "$venv"
    exit 0
fi

lock="${TMPDIR:-/tmp}/shopfds-python-env-$(printf '%s' "$venv" | sha256sum | cut -c1-16).lock"
exec 9>"$lock"
flock 9

# Another caller may have finished the install while we waited for the lock.
if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$wanted" ]]; then
    echo "$venv"
    exit 0
fi

if [[ ! -x "$venv/bin/python" ]]; then
    echo "python-env: creating virtualenv at $venv" >&2
    if ! "$python" -m venv "$venv" >&2; then
        echo "python-env: '$python -m venv' failed; install the venv module (apt-get install -y python3-venv)" >&2
        exit 1
    fi
fi

echo "python-env: installing $(grep -cv '^\s*\(#\|$\)' "$requirements") pinned packages into $venv" >&2
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --requirement "$requirements" >&2
printf '%s\n' "$wanted" >"$stamp"
echo "$venv"
