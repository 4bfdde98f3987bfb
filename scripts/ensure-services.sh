#!/usr/bin/env bash
# Makes sure the servers the tests and `make demo` use are up: PostgreSQL on 127.0.0.1:5432,
# RabbitMQ on 127.0.0.1:5672 (guest/guest) and Redis on 127.0.0.1:6379 (the Redis result backend's
# tests). Installs them from Debian packages when missing, starts
# them when stopped, then waits (bounded) until both accept connections. Never stops anything.
# Also installs what documents need: a font with Hangul glyphs (fonts-nanum: invoices and
# reports are set in it) and poppler-utils (pdftotext, pdftoppm: the tests read the PDFs back),
# and promtool (tools/config-checks runs it on infrastructure/prometheus/), and Chromium (the
# Flower test takes screenshots with it, headless), and kubectl, node and npm (`make k8s-check`).
# Idempotent; takes well under a second when both are already up. Prints one line per service.
set -euo pipefail

pg_host=127.0.0.1
pg_port=5432
amqp_host=127.0.0.1
amqp_port=5672
redis_host=127.0.0.1
redis_port=6379
wait_seconds="${SHOPFDS_SERVICES_TIMEOUT:-60}"

log() { echo "ensure-services: $*" >&2; }
die() { log "error: $*"; exit 1; }

# Succeeds when something accepts TCP connections on host:port (no client tools needed).
port_open() {
    timeout 1 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null
}

wait_port() {
    local name=$1 host=$2 port=$3 deadline=$((SECONDS + wait_seconds))
    until port_open "$host" "$port"; do
        if ((SECONDS >= deadline)); then
            die "$name is not accepting connections on $host:$port after ${wait_seconds}s"
        fi
        sleep 0.5
    done
}

as_root() {
    if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

apt_updated=0
apt_install() {
    if ! command -v apt-get >/dev/null 2>&1; then
        die "$* not installed and apt-get is unavailable; install it by hand"
    fi
    if ((apt_updated == 0)); then
        log "apt-get update"
        as_root apt-get update -qq >&2
        apt_updated=1
    fi
    log "installing $*"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
}

ensure_postgres() {
    if port_open "$pg_host" "$pg_port"; then
        echo "postgresql: up on $pg_host:$pg_port"
        return
    fi

    local fresh=0
    if ! command -v pg_ctlcluster >/dev/null 2>&1 || [[ -z "$(ls -A /etc/postgresql 2>/dev/null)" ]]; then
        apt_install postgresql
        fresh=1
    fi

    local version
    version="$(find /etc/postgresql -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | sort -V | tail -n 1)"
    [[ -n "$version" ]] || die "no PostgreSQL version under /etc/postgresql"
    if [[ ! -d "/etc/postgresql/$version/main" ]]; then
        log "creating PostgreSQL $version cluster main"
        as_root pg_createcluster "$version" main >&2
        fresh=1
    fi

    if ((fresh == 1)); then
        # Only on an install made here: let user postgres connect over loopback without a password,
        # as the tests and the demo expect. An existing server's authentication is left alone.
        local hba="/etc/postgresql/$version/main/pg_hba.conf"
        if ! grep -q '^# shopfds: loopback trust' "$hba"; then
            log "enabling trust auth for postgres on loopback in $hba"
            local tmp
            tmp="$(mktemp)"
            {
                echo '# shopfds: loopback trust for user postgres (added by scripts/ensure-services.sh)'
                echo 'host    all    postgres    127.0.0.1/32    trust'
                echo 'host    all    postgres    ::1/128         trust'
                cat "$hba"
            } >"$tmp"
            as_root cp "$tmp" "$hba"
            rm -f "$tmp"
        fi
    fi

    # A fresh install may already have started the cluster (postinst); then only reload the new
    # pg_hba.conf.
    if pg_lsclusters -h 2>/dev/null | awk -v v="$version" '$1 == v && $2 == "main" && $4 == "online"' | grep -q .; then
        as_root pg_ctlcluster --skip-systemctl-redirect "$version" main reload >&2
    else
        log "starting PostgreSQL $version/main"
        as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start >&2 \
            || die "pg_ctlcluster $version main start failed (see /var/log/postgresql/)"
    fi

    wait_port postgresql "$pg_host" "$pg_port"
    echo "postgresql: started on $pg_host:$pg_port"
}

ensure_rabbitmq() {
    if port_open "$amqp_host" "$amqp_port"; then
        echo "rabbitmq: up on $amqp_host:$amqp_port"
        return
    fi

    if ! command -v rabbitmq-server >/dev/null 2>&1; then
        apt_install rabbitmq-server
    fi

    # The Debian postinst may have started the node already.
    if ! port_open "$amqp_host" "$amqp_port"; then
        if ! as_root rabbitmqctl -q status >/dev/null 2>&1; then
            log "starting rabbitmq-server"
            as_root rabbitmq-server -detached >&2 || die "rabbitmq-server -detached failed (see /var/log/rabbitmq/)"
        fi
        as_root timeout "$wait_seconds" rabbitmqctl -q await_startup >&2 \
            || die "RabbitMQ did not finish starting within ${wait_seconds}s (see /var/log/rabbitmq/)"
    fi

    wait_port rabbitmq "$amqp_host" "$amqp_port"
    echo "rabbitmq: started on $amqp_host:$amqp_port"
}

ensure_redis() {
    if port_open "$redis_host" "$redis_port"; then
        echo "redis: up on $redis_host:$redis_port"
        return
    fi
    if ! command -v redis-server >/dev/null 2>&1; then
        apt_install redis-server
    fi
    # The Debian postinst may have started it already.
    if ! port_open "$redis_host" "$redis_port"; then
        log "starting redis-server"
        as_root redis-server --daemonize yes --bind "$redis_host" --port "$redis_port" \
            --save "" --appendonly no >&2 || die "redis-server failed to start"
    fi
    wait_port redis "$redis_host" "$redis_port"
    echo "redis: started on $redis_host:$redis_port"
}

ensure_documents() {
    local missing=()
    [[ -f /usr/share/fonts/truetype/nanum/NanumGothic.ttf ]] || missing+=(fonts-nanum)
    command -v pdftotext >/dev/null 2>&1 || missing+=(poppler-utils)
    if ((${#missing[@]} > 0)); then
        apt_install "${missing[@]}"
    fi
    echo "documents: fonts-nanum and poppler-utils installed"
}

# Only the promtool binary of Debian's prometheus package: the package is downloaded and promtool
# alone taken out of it, so no Prometheus server is installed or started.
ensure_promtool() {
    if command -v promtool >/dev/null 2>&1; then
        echo "promtool: installed"
        return
    fi
    command -v apt-get >/dev/null 2>&1 || die "promtool not installed and apt-get is unavailable; install it by hand"
    local dir
    dir=$(mktemp -d)
    chmod 755 "$dir" # apt downloads as its own user
    log "taking promtool out of Debian's prometheus package"
    if ! (cd "$dir" && apt-get download -qq prometheus >&2); then
        as_root apt-get update -qq >&2
        (cd "$dir" && apt-get download -qq prometheus >&2) || die "cannot download the prometheus package"
    fi
    dpkg-deb -x "$dir"/prometheus_*.deb "$dir/root" || die "cannot unpack the prometheus package"
    as_root install -m 0755 "$dir/root/usr/bin/promtool" /usr/local/bin/promtool
    rm -rf "$dir"
    echo "promtool: installed from Debian's prometheus package"
}

# kubectl renders the Kubernetes overlays for `make k8s-check` (kubectl kustomize). Debian's
# package is kubernetes-client; its kustomize must understand the overlays (kustomize v4 or later:
# `labels`, regex patch targets), which the check itself reports if it does not.
ensure_kubectl() {
    command -v kubectl >/dev/null 2>&1 || apt_install kubernetes-client
    echo "kubectl: installed ($(kubectl version --client 2>/dev/null | grep -i kustomize || echo 'kustomize version unknown'))"
}

# node and npm run KEDA's CRD schemas in `make k8s-check` (scripts/k8s-tools.sh installs them).
ensure_node() {
    local missing=()
    command -v node >/dev/null 2>&1 || missing+=(nodejs)
    command -v npm >/dev/null 2>&1 || missing+=(npm)
    if ((${#missing[@]} > 0)); then
        apt_install "${missing[@]}"
    fi
    echo "node: installed"
}

# Debian's Chromium, headless: the Flower test screenshots Flower's pages with it.
ensure_chromium() {
    command -v chromium >/dev/null 2>&1 || apt_install chromium
    echo "chromium: installed"
}

ensure_postgres
ensure_rabbitmq
ensure_redis
ensure_documents
ensure_promtool
ensure_chromium
ensure_kubectl
ensure_node
