//! The life of a service process that every binary shares: operations endpoints served from the
//! start (so liveness holds while the broker is down), the broker work, and an orderly stop.

use std::sync::Arc;

use shopfds_telemetry::ops::{self, Check};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::amqp::connect_with_retry;
use crate::{
    BrokerError, BrokerSettings, Registry, ResultBackend, Worker, WorkerSettings, topology,
};

/// Serves `/healthz`, `/readyz` (`database` and broker) and `/metrics` on `ops_listener` and runs
/// the worker until `shutdown` fires; then drains the worker and stops the ops server. The
/// caller closes its database pool afterwards.
pub async fn run_worker(
    ops_listener: TcpListener,
    broker: BrokerSettings,
    settings: WorkerSettings,
    registry: Registry,
    backend: Arc<dyn ResultBackend>,
    database: Check,
    shutdown: CancellationToken,
) -> Result<(), BrokerError> {
    let readiness = crate::ops::readiness(database, &broker);
    let ops_server = tokio::spawn(ops::serve(ops_listener, readiness, shutdown.clone()));
    let outcome = Worker::new(broker, settings, registry, backend)
        .run(shutdown.clone())
        .await;
    shutdown.cancel();
    let _ = ops_server.await;
    outcome
}

/// Serves the operations endpoints, declares the topology once on a connection of its own
/// (closed afterwards: a service that neither publishes nor consumes yet would only hold an
/// idle connection), then waits for `shutdown`.
pub async fn run_declare_only(
    ops_listener: TcpListener,
    broker: BrokerSettings,
    database: Check,
    shutdown: CancellationToken,
) -> Result<(), BrokerError> {
    let readiness = crate::ops::readiness(database, &broker);
    let ops_server = tokio::spawn(ops::serve(ops_listener, readiness, shutdown.clone()));
    let declared = declare_once(&broker, &shutdown).await;
    if declared.is_ok() {
        shutdown.cancelled().await;
    }
    shutdown.cancel();
    let _ = ops_server.await;
    declared
}

async fn declare_once(
    broker: &BrokerSettings,
    shutdown: &CancellationToken,
) -> Result<(), BrokerError> {
    let Some(conn) = connect_with_retry(broker, shutdown).await else {
        return Ok(());
    };
    let declared = async {
        let channel = conn.create_channel().await?;
        topology::declare_for(&channel, broker).await?;
        let _ = channel.close(200, "declared".into()).await;
        Ok::<(), BrokerError>(())
    }
    .await;
    let _ = conn.close(200, "topology declared".into()).await;
    declared?;
    tracing::info!(queue_type = broker.queue_type.as_str(), "topology declared");
    Ok(())
}
