#!/usr/bin/env python3
"""Offline checks of the laptop stack in infrastructure/ (and of the k8s definitions it shares).

Needs python3 with PyYAML and promtool (scripts/ensure-services.sh installs it); a missing tool
is a failure, never a skip. Run by scripts/k8s-check.sh, so `make k8s-check` and `make test`
(tools/config-checks/tests/k8s.rs) run it; the Kubernetes manifests themselves are checked by
k8s/check/check.py. Run from anywhere:  python3 infrastructure/check-config.py
Exit status 0 when every check passed.
"""
import json
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
INFRA = ROOT / "infrastructure"
K8S = ROOT / "k8s"
SERVICES = {  # name -> ops port
    "order-api": 9100, "email-worker": 9101, "fds-worker": 9102,
    "report-worker": 9103, "beat-scheduler": 9104, "dlq-reprocessor": 9105,
}
WORKERS = ["email-worker", "fds-worker", "report-worker", "beat-scheduler", "dlq-reprocessor"]
QUEUES = ["default", "email", "fds", "reports", "maintenance"]
METRICS = {"shopfds_tasks_total", "shopfds_task_duration_seconds_bucket", "shopfds_messages_published_total",
           "shopfds_outbox_pending", "shopfds_http_requests_total", "shopfds_http_request_duration_seconds_bucket",
           "shopfds_broker_connected", "shopfds_dead_letter_messages"}
# (tools/config-checks/tests/metrics.rs checks every shopfds_* name against the code itself.)

passed, failed = 0, 0


def check(ok, what):
    global passed, failed
    if ok:
        passed += 1
    else:
        failed += 1
        print(f"FAIL {what}")


def load_yaml_all(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


# ---- every YAML and JSON file parses -------------------------------------------------------------
for p in sorted(list(INFRA.rglob("*.yml")) + list(INFRA.rglob("*.yaml")) + list(K8S.rglob("*.yaml"))):
    try:
        load_yaml_all(p)
        check(True, p)
    except yaml.YAMLError as e:
        check(False, f"{p}: {e}")
for p in sorted(list(INFRA.rglob("*.json")) + list(K8S.rglob("*.json"))):
    try:
        json.loads(p.read_text())
        check(True, p)
    except ValueError as e:
        check(False, f"{p}: {e}")


# ---- RabbitMQ topology: both definition files declare exactly the seed's topology ---------------
def check_topology(path, queue_type):
    d = json.loads(path.read_text())
    ex = {e["name"]: e for e in d["exchanges"]}
    qs = {q["name"]: q for q in d["queues"]}
    bs = {(b["source"], b["destination"], b["routing_key"]) for b in d["bindings"]}
    check(set(ex) == set(QUEUES) | {"dlx"}, f"{path}: exchanges {sorted(ex)}")
    check(set(qs) == set(QUEUES) | {f"failed.{q}" for q in QUEUES}, f"{path}: queues {sorted(qs)}")
    check(ex.get("dlx", {}).get("type") == "topic" and ex["dlx"]["durable"], f"{path}: dlx is a durable topic exchange")
    extra = {"x-queue-type": "quorum"} if queue_type == "quorum" else {}
    for q in QUEUES:
        check(ex.get(q, {}).get("type") == "direct" and ex[q]["durable"] and not ex[q]["auto_delete"],
              f"{path}: exchange {q} durable direct")
        want = {"x-dead-letter-exchange": "dlx", "x-dead-letter-routing-key": f"failed.{q}", **extra}
        check(qs[q]["arguments"] == want and qs[q]["durable"] and not qs[q]["auto_delete"],
              f"{path}: queue {q} arguments {qs[q]['arguments']} != {want}")
        check(qs[f"failed.{q}"]["arguments"] == extra and qs[f"failed.{q}"]["durable"],
              f"{path}: queue failed.{q} arguments")
        check((q, q, q) in bs, f"{path}: binding {q} -> {q}")
        check(("dlx", f"failed.{q}", f"failed.{q}") in bs, f"{path}: binding dlx -> failed.{q}")
    check(len(bs) == 2 * len(QUEUES), f"{path}: no extra bindings")
    return d


local_defs = check_topology(INFRA / "rabbitmq/definitions.json", "quorum")
check([u["name"] for u in local_defs.get("users", [])] == ["shopfds", "admin"],
      "laptop definitions carry users shopfds and admin (no guest)")
k8s_defs = check_topology(K8S / "base/rabbitmq/definitions.json", "quorum")
check(local_defs["policies"] == k8s_defs["policies"], "laptop and cluster apply the same policies")
check([p for p in local_defs["permissions"] if p["user"] == "shopfds"]
      == [p for p in k8s_defs["permissions"] if p["user"] == "shopfds"],
      "laptop and cluster give user shopfds the same permissions")
check("users" not in k8s_defs, "cluster definitions carry no user (they come from Secret rabbitmq-users)")
users = json.loads((K8S / "overlays/local/rabbitmq-users.json").read_text())
check({p["user"] for p in k8s_defs["permissions"]} <= {u["name"] for u in users["users"]},
      "every permission's user exists in the local rabbitmq-users.json")
conf = (INFRA / "rabbitmq/rabbitmq.conf").read_text()
check("load_definitions = /etc/rabbitmq/definitions.json" in conf, "rabbitmq.conf loads the definitions")
check("prometheus.return_per_object_metrics = true" in conf, "rabbitmq.conf: per-queue metrics")

# ---- docker compose ------------------------------------------------------------------------------
compose = load_yaml_all(INFRA / "docker-compose.yml")[0]
svcs = compose["services"]
for name, port in SERVICES.items():
    s = svcs.get(name)
    check(s is not None, f"compose: service {name}")
    if s is None:
        continue
    check(s["build"]["args"]["SERVICE"] == name and s["build"]["context"] == "..", f"compose: {name} build")
    env = s["environment"]
    for k in ["DATABASE_URL", "BROKER_URL", "QUEUE_TYPE", "LOG_FORMAT", "RUST_LOG",
              "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_SERVICE_NAME", "SHUTDOWN_GRACE_SECS"]:
        check(k in env, f"compose: {name} sets {k}")
    check(env.get("OTEL_SERVICE_NAME") == name, f"compose: {name} OTEL_SERVICE_NAME")
    check(env.get("OPS_ADDR") == f"0.0.0.0:{port}", f"compose: {name} ops on 0.0.0.0:{port}")
    if name == "order-api":
        check(env.get("HTTP_ADDR") == "0.0.0.0:8080", "compose: order-api API on 0.0.0.0:8080")
    check(f"http://127.0.0.1:{port}/healthz" in s["healthcheck"]["test"], f"compose: {name} healthcheck /healthz")
    if name in WORKERS:
        check(s.get("stop_grace_period") == "120s", f"compose: {name} stop_grace_period 120s")
    check(int(env["SHUTDOWN_GRACE_SECS"]) < int(str(s["stop_grace_period"]).rstrip("s")),
          f"compose: {name} drains before SIGKILL")
for dep_on in ["postgres", "rabbitmq", "jaeger"]:
    check(dep_on in svcs, f"compose: {dep_on}")
for mount in svcs["rabbitmq"]["volumes"] + svcs["prometheus"]["volumes"] + svcs["grafana"]["volumes"] \
        + svcs["shipping-partner"]["volumes"]:
    src = mount.split(":")[0]
    if src.startswith("./"):
        check((INFRA / src).exists(), f"compose: mounted file {src} exists")
check(svcs["flower"]["image"].startswith("mher/flower:2.0"), "compose: flower image")
check("FLOWER_BASIC_AUTH" in svcs["flower"]["environment"], "compose: flower basic auth")

# ---- Prometheus: every service scraped, alert expressions use known metrics ----------------------
prom = load_yaml_all(INFRA / "prometheus/prometheus.yml")[0]
targets = {t for j in prom["scrape_configs"] for sc in j["static_configs"] for t in sc["targets"]}
for name, port in SERVICES.items():
    check(f"{name}:{port}" in targets, f"prometheus scrapes {name}:{port}")
check("rabbitmq:15692" in targets, "prometheus scrapes rabbitmq:15692")
alerts_text = (INFRA / "prometheus/alerts.yml").read_text()
for m in set(re.findall(r"\bshopfds_[a-z_]+", alerts_text)):
    check(m in METRICS or m + "_bucket" in METRICS, f"alerts.yml: metric {m} is one the services expose")
for needed in ["shopfds_outbox_pending", "shopfds_task_duration_seconds_bucket", 'queue=~"failed\\\\..+"',
               "shopfds_tasks_total", "up{"]:
    check(needed in alerts_text, f"alerts.yml mentions {needed}")

# ---- Grafana -------------------------------------------------------------------------------------
dash = json.loads((INFRA / "grafana/dashboards/shopfds-jobs.json").read_text())
exprs = " ".join(t["expr"] for p in dash["panels"] for t in p.get("targets", []))
for m in METRICS:
    check(m.replace("_bucket", "") in exprs, f"dashboard shows {m}")
ds = load_yaml_all(INFRA / "grafana/provisioning/datasources/datasources.yml")[0]
check(any(d.get("uid") == "prometheus" for d in ds["datasources"]), "grafana datasource uid prometheus")

# ---- kustomize: referenced files exist; rendered overlays are complete ---------------------------
for kfile in K8S.rglob("kustomization.yaml"):
    k = load_yaml_all(kfile)[0]
    for r in k.get("resources", []):
        check((kfile.parent / r).exists(), f"{kfile}: resource {r} exists")
    for gen in k.get("configMapGenerator", []) + k.get("secretGenerator", []):
        for f in gen.get("files", []):
            check((kfile.parent / f.split("=")[-1]).exists(), f"{kfile}: generator file {f} exists")


promtool = shutil.which("promtool")
if promtool:
    out = subprocess.run([promtool, "check", "rules", str(INFRA / "prometheus/alerts.yml")], capture_output=True, text=True)
    check(out.returncode == 0, f"promtool check rules: {out.stdout}{out.stderr}")
    tests = INFRA / "prometheus/alerts_test.yml"
    if tests.exists():
        out = subprocess.run([promtool, "test", "rules", str(tests)], capture_output=True, text=True, cwd=tests.parent)
        check(out.returncode == 0, f"promtool test rules: {out.stdout}{out.stderr}")
    with tempfile.TemporaryDirectory() as tmp:
        cfg = (INFRA / "prometheus/prometheus.yml").read_text().replace("/etc/prometheus/alerts.yml",
                                                                       str(INFRA / "prometheus/alerts.yml"))
        pathlib.Path(tmp, "prometheus.yml").write_text(cfg)
        out = subprocess.run([promtool, "check", "config", str(pathlib.Path(tmp, "prometheus.yml"))],
                             capture_output=True, text=True)
        check(out.returncode == 0, f"promtool check config: {out.stdout}{out.stderr}")
else:
    check(False, "promtool is installed (make setup: scripts/ensure-services.sh)")

print(f"config: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
