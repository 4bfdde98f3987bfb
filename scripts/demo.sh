#!/usr/bin/env bash
# The main job, start to finish: API keys made; an SMTP server, a shipping partner's API,
# fds-worker, email-worker, report-worker and order-api up; one order placed and scored; its
# canvas seen through (confirmation mail, invoice PDF and its mail, the shipment's tracking
# number); a sales report made with its progress followed and downloaded; the demo's key
# revoked; everything stopped with SIGTERM and checked to exit 0.
# Run through `make demo` (which builds and sets up PostgreSQL, RabbitMQ and the Python venv).
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
bin="${CARGO_TARGET_DIR:-$repo/target}/debug"
demo="$repo/.demo"
venv="$("$repo/scripts/python-env.sh")"
rm -rf "$demo" && mkdir -p "$demo/mail" "$demo/storage"

http_port="${DEMO_HTTP_PORT:-8080}"
api_ops_port="${DEMO_API_OPS_PORT:-9100}"
ops_port="${DEMO_WORKER_OPS_PORT:-9101}"
fds_ops_port="${DEMO_FDS_OPS_PORT:-9102}"
report_ops_port="${DEMO_REPORT_OPS_PORT:-9103}"
grpc_port="${DEMO_GRPC_PORT:-50051}"
smtp_port="${DEMO_SMTP_PORT:-1025}"
partner_port="${DEMO_PARTNER_PORT:-8090}"
for port in "$http_port" "$api_ops_port" "$ops_port" "$fds_ops_port" "$report_ops_port" "$grpc_port" "$smtp_port" "$partner_port"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "demo: port $port is already in use; set DEMO_HTTP_PORT / DEMO_API_OPS_PORT / DEMO_WORKER_OPS_PORT / DEMO_FDS_OPS_PORT / DEMO_REPORT_OPS_PORT / DEMO_GRPC_PORT / DEMO_SMTP_PORT / DEMO_PARTNER_PORT" >&2
        exit 1
    fi
done

export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/shopfds}"
export BROKER_URL="${BROKER_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
export SMTP_URL="smtp://127.0.0.1:$smtp_port"
# Invoices and reports: written by report-worker, attached by email-worker, served by order-api.
export STORAGE_DIR="$demo/storage"
export RUST_LOG="${RUST_LOG:-info}"

pids=()
stop_all() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
}
trap stop_all EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
json() { "$venv/bin/python" -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

wait_http() { # url, name
    for _ in $(seq 1 150); do
        if curl -fsS -o /dev/null "$1" 2>/dev/null; then return 0; fi
        sleep 0.2
    done
    echo "demo: $2 did not become ready ($1); its log:" >&2
    tail -n 40 "$demo/$2.log" >&2
    exit 1
}

step "API keys: order-api's key to fds-worker (API_KEYS), a storefront's key (the api_keys table)"
# Keys stay in shell variables; only their ids are printed.
fds_keys="$("$bin/order-api" keys generate --scopes fds:score)"
fds_key="$(sed -n 1p <<<"$fds_keys")"
fds_entry="$(sed -n 2p <<<"$fds_keys")"
shop_key="$("$bin/order-api" keys create --name "demo storefront $(date +%s)" --scopes orders:write,orders:read)"
shop_key_id="${shop_key:4:16}"
report_key="$("$bin/order-api" keys create --name "demo back office $(date +%s)" --scopes reports)"
report_key_id="${report_key:4:16}"
"$bin/order-api" keys list | { head -n 1; grep -e "^$shop_key_id" -e "^$report_key_id" || true; }

step "SMTP server (aiosmtpd) on 127.0.0.1:$smtp_port"
PYTHONPATH="$repo/interop/python" "$venv/bin/python" -m aiosmtpd -n -u -l "127.0.0.1:$smtp_port" \
    -c smtp_sink.Sink "$demo/mail" >"$demo/smtp.log" 2>&1 &
smtp_pid=$!
pids+=("$smtp_pid")

step "Shipping partner's API (interop/python/partner_stub.py) on http://127.0.0.1:$partner_port"
"$venv/bin/python" "$repo/interop/python/partner_stub.py" "$partner_port" >"$demo/partner.log" 2>&1 &
partner_pid=$!
pids+=("$partner_pid")

step "fds-worker (gRPC score on 127.0.0.1:$grpc_port, queue fds; ops on 127.0.0.1:$fds_ops_port)"
API_KEYS="$fds_entry" OPS_ADDR="127.0.0.1:$fds_ops_port" GRPC_ADDR="127.0.0.1:$grpc_port" \
    "$bin/fds-worker" >"$demo/fds-worker.log" 2>&1 &
fds_pid=$!
pids+=("$fds_pid")

step "email-worker (queues email, default; ops on 127.0.0.1:$ops_port)"
SHIPPING_PARTNER_URL="http://127.0.0.1:$partner_port" OPS_ADDR="127.0.0.1:$ops_port" \
    "$bin/email-worker" >"$demo/email-worker.log" 2>&1 &
worker_pid=$!
pids+=("$worker_pid")

step "report-worker (queues reports, maintenance; ops on 127.0.0.1:$report_ops_port)"
OPS_ADDR="127.0.0.1:$report_ops_port" "$bin/report-worker" >"$demo/report-worker.log" 2>&1 &
report_pid=$!
pids+=("$report_pid")

step "order-api on http://127.0.0.1:$http_port (ops on 127.0.0.1:$api_ops_port)"
FDS_API_KEY="$fds_key" HTTP_ADDR="127.0.0.1:$http_port" OPS_ADDR="127.0.0.1:$api_ops_port" \
    FDS_GRPC_URL="http://127.0.0.1:$grpc_port" "$bin/order-api" >"$demo/order-api.log" 2>&1 &
api_pid=$!
pids+=("$api_pid")

wait_http "http://127.0.0.1:$api_ops_port/readyz" order-api
wait_http "http://127.0.0.1:$ops_port/readyz" email-worker
wait_http "http://127.0.0.1:$fds_ops_port/readyz" fds-worker
wait_http "http://127.0.0.1:$report_ops_port/readyz" report-worker
wait_http "http://127.0.0.1:$partner_port/shipments" partner
echo "ready: $(curl -fsS "http://127.0.0.1:$api_ops_port/readyz")"

step "POST /v1/orders with the storefront's key (the answer shows the status, not the fraud rules)"
response="$(curl -fsS -D "$demo/order.headers" -X POST "http://127.0.0.1:$http_port/v1/orders" \
    -H "authorization: Bearer $shop_key" \
    -H 'content-type: application/json' -H "Idempotency-Key: demo-$(date +%s%N)" \
    --data-binary @- <<'JSON'
{ "customer": { "id": "c-1001", "email": "minsu.kim@example.com", "name": "김민수",
                "account_created_at": "2025-03-01T00:00:00Z" },
  "items": [ { "sku": "KB-101", "name": "무선 키보드", "quantity": 2, "unit_price": 45000 } ],
  "currency": "KRW",
  "shipping_address": { "name": "김민수", "line1": "세종대로 110", "line2": null, "city": "Seoul",
                        "postal_code": "04524", "country": "KR", "phone": "+82-2-120" },
  "billing_country": "KR",
  "payment": { "method": "card", "card_fingerprint": "fp_9f8e7d" } }
JSON
)"
echo "$response"
order_id="$(json 'd["order_id"]' <<<"$response")"
# The order's trace in Jaeger (when OTEL_EXPORTER_OTLP_ENDPOINT points at one): search by this id.
echo "trace: $(tr -d '\r' <"$demo/order.headers" | sed -n 's/^x-trace-id: //Ip')"
api="http://127.0.0.1:$http_port"
shop=(-H "authorization: Bearer $shop_key")

step "The order's canvas: GET /v1/tasks/{id} for each of its tasks until all are SUCCESS"
# group(confirmation, chain(generate_invoice_pdf -> send_invoice_email), register_shipment)
for name in send_order_confirmation_email generate_invoice_pdf send_invoice_email register_shipment; do
    id="$(json "d['tasks']['$name']" <<<"$response")"
    state=""
    for _ in $(seq 1 300); do
        task="$(curl -fsS "${shop[@]}" "$api/v1/tasks/$id")"
        state="$(json 'd["state"]' <<<"$task")"
        [[ "$state" == "SUCCESS" || "$state" == "FAILURE" ]] && break
        sleep 0.2
    done
    printf '%-30s %s  %s\n' "$name" "$state" "$(json 'json.dumps(d["result"], ensure_ascii=False)' <<<"$task")"
    [[ "$state" == "SUCCESS" ]] || { echo "demo: $name ended in state '$state'" >&2; exit 1; }
done

step "GET /v1/orders/$order_id: the tracking number and the invoice link"
order="$(curl -fsS "${shop[@]}" "$api/v1/orders/$order_id")"
json '"status: %s\ntracking_number: %s\ninvoice_url: %s" % (d["status"], d["tracking_number"], d["invoice_url"])' <<<"$order"
tracking="$(json 'd["tracking_number"] or ""' <<<"$order")"
[[ -n "$tracking" ]] || { echo "demo: the order has no tracking number" >&2; exit 1; }
echo "the partner's bookings: $(curl -fsS "http://127.0.0.1:$partner_port/shipments")"

step "GET /v1/orders/$order_id/invoice: the PDF (its text, as pdftotext reads it)"
curl -fsS "${shop[@]}" -o "$demo/invoice.pdf" "$api/v1/orders/$order_id/invoice"
echo "$demo/invoice.pdf: $(wc -c <"$demo/invoice.pdf") bytes (first page as a picture: $demo/invoice-1.png)"
pdftoppm -png -r 80 -f 1 -l 1 "$demo/invoice.pdf" "$demo/invoice"
pdftotext -layout "$demo/invoice.pdf" - | sed -e '/^\s*$/d' | head -n 30

step "The mails the SMTP server received"
"$venv/bin/python" - "$demo/mail" <<'PY'
import email, email.policy, glob, json, os, sys
files = sorted(glob.glob(os.path.join(sys.argv[1], "*.eml")), key=lambda p: int(os.path.basename(p)[:-4]))
if len(files) < 2:
    sys.exit(f"demo: {len(files)} mail(s) received, expected the confirmation and the invoice")
for path in files:
    envelope = json.load(open(path[:-4] + ".json"))
    msg = email.message_from_binary_file(open(path, "rb"), policy=email.policy.default)
    print(f"envelope: {envelope['mail_from']} -> {', '.join(envelope['rcpt_tos'])}")
    for h in ("From", "To", "Subject", "Message-ID"):
        print(f"{h}: {msg[h]}")
    print("parts:", ", ".join(p.get_content_type() for p in msg.walk() if not p.is_multipart()))
    for part in msg.iter_attachments():
        print(f"attachment: {part.get_filename()} ({part.get_content_type()}, {len(part.get_content())} bytes)")
    print()
    print(msg.get_body(preferencelist=("plain",)).get_content())
PY

step "POST /v1/reports/sales with the back office's key, then its progress until completed"
report_auth=(-H "authorization: Bearer $report_key")
today="$(TZ=Asia/Seoul date +%F)"
report="$(curl -fsS -X POST "$api/v1/reports/sales" "${report_auth[@]}" -H 'content-type: application/json' \
    --data-binary "{\"start_date\": \"$today\", \"end_date\": \"$today\", \"user_id\": \"analyst@shopfds.example\"}")"
echo "$report"
report_id="$(json 'd["task_id"]' <<<"$report")"
seen=""
status=""
for _ in $(seq 1 600); do
    progress="$(curl -fsS "${report_auth[@]}" "$api/v1/reports/sales/$report_id")"
    status="$(json 'd["status"]' <<<"$progress")"
    if [[ "$progress" != "$seen" ]]; then echo "$progress"; seen="$progress"; fi
    [[ "$status" == "completed" || "$status" == "failed" ]] && break
    sleep 0.05
done
[[ "$status" == "completed" ]] || { echo "demo: the report ended '$status'" >&2; exit 1; }
curl -fsS "${report_auth[@]}" -o "$demo/sales-report.pdf" "$api/v1/reports/$report_id/pdf"
echo "$demo/sales-report.pdf: $(wc -c <"$demo/sales-report.pdf") bytes (its pages as pictures: $demo/sales-report-*.png)"
pdftoppm -png -r 80 "$demo/sales-report.pdf" "$demo/sales-report"
pdftotext -layout "$demo/sales-report.pdf" - | sed -e '/^\s*$/d' | head -n 25

step "The Rust workers as stock Celery sees them: celery inspect ping (the seed's liveness probe)"
PYTHONPATH="$repo/interop/python" "$venv/bin/celery" -A shopfds_celery inspect ping --timeout 3

step "Why each task started when it did: shopfds_task_wait_seconds from the workers' /metrics"
"$venv/bin/python" - "$ops_port" "$fds_ops_port" "$report_ops_port" <<'PY'
import re, sys, urllib.request
rows = {}
for port in sys.argv[1:]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    for m in re.finditer(r'^shopfds_task_wait_seconds_sum\{(.*?)\} (\S+)$', text, re.M):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        rows.setdefault(labels["task"], {})[labels["phase"]] = float(m.group(2))
if not rows:
    sys.exit("demo: no shopfds_task_wait_seconds on the workers' /metrics")
phases = ["outbox", "broker", "prefetch", "eta", "retry_backoff", "rate_limit"]
print(f"{'task (ms waited, summed)':30}" + "".join(f"{p:>14}" for p in phases))
for task, by in sorted(rows.items()):
    print(f"{task:30}" + "".join(f"{by[p] * 1000:14.1f}" if p in by else f"{'-':>14}" for p in phases))
PY

step "Revoking the storefront's key (refused within API_KEYS_CACHE_SECS, 30 s by default)"
"$bin/order-api" keys revoke "$shop_key_id"
without_key="$(curl -sS -o /dev/null -w '%{http_code}' "$api/v1/orders/$order_id")"
echo "GET /v1/orders/$order_id without a key: $without_key"
[[ "$without_key" == "401" ]] || { echo "demo: expected 401 without a key" >&2; exit 1; }

step "Shutting down with SIGTERM"
trap - EXIT
status=0
for name_pid in "order-api:$api_pid" "email-worker:$worker_pid" "report-worker:$report_pid" "fds-worker:$fds_pid"; do
    name="${name_pid%%:*}"; pid="${name_pid##*:}"
    kill -TERM "$pid"
    if wait "$pid"; then echo "$name exited 0"; else code=$?; echo "$name exited $code" >&2; status=1; fi
done
for pid in "$smtp_pid" "$partner_pid"; do
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
done
echo "logs: $demo/*.log"
exit "$status"
