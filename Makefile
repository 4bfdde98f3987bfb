# The verbs a person types. `make demo` and `make test` set up what they need themselves:
# PostgreSQL, RabbitMQ and Redis (installed from Debian packages and started where missing), the
# Hangul font documents are set in and poppler-utils (Debian's fonts-nanum, poppler-utils), and
# a Python virtualenv with stock Celery and aiosmtpd for the interoperability tests and the demo.

SHELL := /bin/bash
# Builds are kept outside the clone, so a fresh clone (CI) reuses earlier compilations.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/shopfds/target

.PHONY: all setup services python k8s-tools build test demo bench chaos fmt lint clean k8s-check

all: build

setup: services python k8s-tools

services:
	@scripts/ensure-services.sh

python:
	@scripts/python-env.sh >/dev/null

# checkov, kubernetes-validate, Docker Compose v2 and KEDA's CRD schemas, in a cache directory
# outside the repository (scripts/k8s-tools.sh); kubectl and promtool come with `services`.
k8s-tools:
	@scripts/k8s-tools.sh >/dev/null

# The Kubernetes manifests and the compose file, offline: every overlay rendered with kubectl
# kustomize, every object validated against the Kubernetes API's and KEDA's schemas, checkov
# (findings explained in k8s/security-exceptions.md), per-service properties (namespace, probes,
# resources, grace, autoscaling, PDB, NetworkPolicy, volumes, connection budget, images by digest),
# `docker compose config`, and infrastructure/check-config.py. `make test` runs the same
# (tools/config-checks/tests/k8s.rs). About half a minute.
k8s-check: services k8s-tools
	@scripts/k8s-check.sh

build:
	cargo build --workspace --bins

test: setup
	cargo test --workspace --no-fail-fast

demo: setup build
	@scripts/demo.sh

# The fault harness (tools/chaos): the services against a RabbitMQ node, a PostgreSQL proxy and
# an SMTP sink of its own; CHAOS_ORDERS orders at CHAOS_RATE per second while workers are
# SIGKILLed and SIGTERMed, the broker restarts and PostgreSQL is cut (schedule from CHAOS_SEED);
# prints the ledger's table and fails on any violation. `make test` runs a 200-order version.
CHAOS_ORDERS ?= 1000
CHAOS_RATE ?= 10
CHAOS_SEED ?= 1
chaos: setup build
	"$(CARGO_TARGET_DIR)/debug/shopfds-chaos" --orders $(CHAOS_ORDERS) --rate $(CHAOS_RATE) --seed $(CHAOS_SEED)

# Score latency (p50…p99.9) and throughput of the in-process fds-worker on loopback, release build;
# a measurement that prints whether the target was met (BENCH_RATE, BENCH_REQUESTS,
# BENCH_CONCURRENCY, BENCH_CONNECTIONS tune it; see services/fds-worker/benches/score_load.rs).
# Then the harness tools/bench (shopfds-bench, release build): in one run on the local RabbitMQ,
# the bare lapin floor, our worker runtime and stock Celery (prefork -c2, threads -c8) draining
# pre-filled no-op tasks with the same queue, messages, prefetch and acks; the median of 3 runs
# with min and max, CPU per task and worker RSS, one table with the ratios ours/Celery and
# ours/floor, written to bench/RESULTS.md (see README, `make bench`). `make test` runs it in
# --tiny mode (tools/bench/tests/tiny).
bench: setup
	cargo bench -p fds-worker --bench score_load
	cargo build --release -p shopfds-bench --bins
	"$(CARGO_TARGET_DIR)/release/shopfds-bench"

fmt:
	cargo fmt --all

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

clean:
	cargo clean
	rm -rf .venv .demo
