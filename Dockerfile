# syntax=docker/dockerfile:1.7
#
# One Dockerfile for all six binaries; the image is chosen with --build-arg SERVICE:
#
#   docker build --build-arg SERVICE=order-api -t shopfds/order-api:dev .
#
# SERVICE is one of: order-api, email-worker, fds-worker, report-worker, beat-scheduler,
# dlq-reprocessor (directory = package = binary = image = Deployment name).
# Needs BuildKit (the default builder of current Docker) for the cache mounts.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

# ---------------------------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder
ARG SERVICE
RUN test -n "${SERVICE}" || { echo "build with --build-arg SERVICE=<package name>" >&2; exit 1; }

# protoc for tonic/prost code generation from proto/ (fds.v1); harmless for the other services.
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
# sqlx's query macros must not reach for a database during an image build: they read the
# checked-in .sqlx/ metadata instead (no-op when the code uses no query macros).
ENV SQLX_OFFLINE=true \
    CARGO_TERM_COLOR=never \
    PROTOC=/usr/bin/protoc

COPY . .

# The registry, git checkouts and target/ live in BuildKit cache mounts, so a rebuild after a
# code change recompiles only our crates. One shared target cache for all six images: the
# workspace's libraries are compiled once and reused by every service ("locked" serialises
# concurrent builds instead of corrupting the cache). The binary is copied out of the cache
# mount, which does not end up in the image layer.
RUN --mount=type=cache,id=shopfds-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=shopfds-cargo-git,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,id=shopfds-target,target=/src/target,sharing=locked \
    cargo build --release --locked -p "${SERVICE}" \
 && install -D -m 0755 "target/release/${SERVICE}" "/out/${SERVICE}"

# ---------------------------------------------------------------------------------------------
FROM debian:${DEBIAN_RELEASE}-slim AS runtime
ARG SERVICE

# ca-certificates: TLS to SMTP relays, the shipping partner, S3, a managed PostgreSQL.
# tzdata: beat-scheduler evaluates crontabs in Asia/Seoul.
# curl: the container healthcheck (docker compose) and debugging from `kubectl exec`.
# fonts-nanum: the Hangul font invoices and sales reports are set in (report-worker).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates tzdata curl fonts-nanum \
 && rm -rf /var/lib/apt/lists/*

# A fixed numeric uid/gid so Kubernetes' runAsNonRoot can verify it without /etc/passwd.
RUN groupadd --system --gid 10001 shopfds \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin shopfds \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/shopfds/storage

COPY --from=builder "/out/${SERVICE}" "/usr/local/bin/${SERVICE}"

# Container defaults; compose and the Kubernetes manifests set the rest (see infrastructure/README.md).
ENV SHOPFDS_SERVICE=${SERVICE} \
    LOG_FORMAT=json \
    RUST_LOG=info \
    OTEL_SERVICE_NAME=${SERVICE} \
    STORAGE_DIR=/var/lib/shopfds/storage \
    TZ=UTC

USER 10001:10001
WORKDIR /var/lib/shopfds

# Kubernetes and docker both send SIGTERM; the service stops taking new work and drains in-flight
# tasks within SHUTDOWN_GRACE_SECS. The binary is PID 1 (no shell stays behind: `exec`), so it
# must handle SIGTERM itself, which every service does through its shutdown token.
STOPSIGNAL SIGTERM

# ENTRYPOINT's exec form does not expand build arguments, so a one-line shell resolves the name
# once and replaces itself with the binary (the process keeps the service's name in `ps`).
# Arguments given to `docker run IMAGE …` / the Pod's `args` are passed on, e.g. the
# dlq-reprocessor CLI: `docker run --rm shopfds/dlq-reprocessor list`.
ENTRYPOINT ["/bin/sh", "-c", "exec \"/usr/local/bin/${SHOPFDS_SERVICE}\" \"$@\"", "--"]
