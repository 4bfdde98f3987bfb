//! The two shapes of a broker process: a queue worker, and a service that keeps the topology
//! declared. Either way the ops server starts with it (so liveness holds while the broker is
//! down) and `/readyz` reports `database` and `broker`, the state of the process's own
//! connection, never a connection opened for the probe.

use shopfds_broker::{BrokerSettings, Worker, service};
use shopfds_telemetry::ops::Check;
use tokio::net::TcpListener;

use crate::{ShellSettings, Supervisor, serve_ops};

/// Spawns `worker` as the part `worker` (with `database` as its probe while the database is
/// down: see the runtime's gate) and the ops server as `ops`.
pub fn spawn_worker(
    parts: &mut Supervisor,
    ops_listener: TcpListener,
    shell: &ShellSettings,
    worker: Worker,
    database: Check,
) {
    let worker = worker.with_probe("database", database.clone());
    let readiness = shopfds_broker::ops::readiness(database, worker.broker_state());
    serve_ops(parts, ops_listener, readiness, shell);
    let token = parts.token();
    parts.spawn("worker", async move { worker.run(token).await });
}

/// Spawns the part `topology` (connect, declare, keep the connection: see
/// [`service::keep_topology`]) and the ops server as `ops`.
pub fn spawn_topology(
    parts: &mut Supervisor,
    ops_listener: TcpListener,
    shell: &ShellSettings,
    broker: BrokerSettings,
    database: Check,
) {
    spawn_topology_with(parts, ops_listener, shell, broker, database, None);
}

/// [`spawn_topology`], with `api` served on the ops port beside the ops endpoints (the
/// dlq-reprocessor's DLQ API).
pub fn spawn_topology_with(
    parts: &mut Supervisor,
    ops_listener: TcpListener,
    shell: &ShellSettings,
    broker: BrokerSettings,
    database: Check,
    api: Option<axum::Router>,
) {
    let (state, watched) = shopfds_broker::state::channel();
    crate::ops::serve_ops_with(
        parts,
        ops_listener,
        shopfds_broker::ops::readiness(database, watched),
        shell,
        api,
    );
    let token = parts.token();
    parts.spawn("topology", service::keep_topology(broker, state, token));
}
