//! The life of a service process that every binary shares: operations endpoints served from the
//! start (so liveness holds while the broker is down), the broker work, and an orderly stop.
//!
//! Readiness (`/readyz`) reports `database` (the given check) and `broker`: the state of the
//! service's own connection ([`crate::state`]), never a connection opened for the probe.

use std::sync::Arc;

use futures::StreamExt;
use lapin::Connection;
use shopfds_telemetry::ops::{self, Check};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::amqp::{Backoff, close_quietly, connect_with_backoff, millis};
use crate::{
    BrokerError, BrokerSettings, BrokerState, Registry, ResultBackend, Worker, WorkerSettings,
    topology,
};

/// Serves `/healthz`, `/readyz` (`database`, and `broker`: ready while the worker consumes) and
/// `/metrics` on `ops_listener` and runs the worker until `shutdown` fires; then drains the
/// worker and stops the ops server. The caller closes its database pool afterwards. The
/// `database` check is also the worker's probe while its database is down (see
/// [`crate::runtime::gate`]).
pub async fn run_worker(
    ops_listener: TcpListener,
    broker: BrokerSettings,
    settings: WorkerSettings,
    registry: Registry,
    backend: Arc<dyn ResultBackend>,
    database: Check,
    shutdown: CancellationToken,
) -> Result<(), BrokerError> {
    let worker =
        Worker::new(broker, settings, registry, backend).with_probe("database", database.clone());
    let readiness = crate::ops::readiness(database, worker.broker_state());
    let ops_server = tokio::spawn(ops::serve(ops_listener, readiness, shutdown.clone()));
    let outcome = worker.run(shutdown.clone()).await;
    shutdown.cancel();
    let _ = ops_server.await;
    outcome
}

/// Serves the operations endpoints, connects, declares the topology and keeps that connection
/// until `shutdown` fires. `broker` is ready while the topology is declared on a live
/// connection; a failed declare (e.g. [`BrokerError::Inequivalent`]) is logged at error level
/// and retried with backoff, and a lost connection is re-established and the topology declared
/// again. Returns `Ok` on shutdown.
pub async fn run_declare_only(
    ops_listener: TcpListener,
    broker: BrokerSettings,
    database: Check,
    shutdown: CancellationToken,
) -> Result<(), BrokerError> {
    let (state, watched) = crate::state::channel();
    let readiness = crate::ops::readiness(database, watched);
    let ops_server = tokio::spawn(ops::serve(ops_listener, readiness, shutdown.clone()));
    keep_declared(&broker, &state, &shutdown).await;
    state.send_replace(BrokerState::Stopped);
    shutdown.cancel();
    let _ = ops_server.await;
    Ok(())
}

async fn keep_declared(
    broker: &BrokerSettings,
    state: &watch::Sender<BrokerState>,
    shutdown: &CancellationToken,
) {
    let mut backoff = Backoff::new(broker);
    while let Some(conn) = connect_with_backoff(broker, shutdown, &mut backoff, state).await {
        // Listening before the declare, so a connection lost meanwhile is not missed.
        let events = conn.events_listener();
        let declared = tokio::select! {
            _ = shutdown.cancelled() => {
                close_quietly(&conn, "shutdown").await;
                return;
            }
            declared = declare(&conn, broker) => declared,
        };
        if let Err(error) = declared {
            close_quietly(&conn, "declare failed").await;
            tracing::error!(error = %error, retry_in_ms = millis(backoff.peek()), "cannot declare the topology; retrying after the delay");
            state.send_replace(BrokerState::Disconnected(error.to_string()));
            if !backoff.wait(shutdown).await {
                return;
            }
            continue;
        }
        tracing::info!(queue_type = broker.queue_type.as_str(), "topology declared");
        state.send_replace(BrokerState::Declared);
        let lost = tokio::select! {
            _ = shutdown.cancelled() => {
                close_quietly(&conn, "shutdown").await;
                return;
            }
            lost = connection_lost(events) => lost,
        };
        backoff.reset();
        tracing::warn!(error = %lost, "broker connection lost; reconnecting");
        state.send_replace(BrokerState::Disconnected(lost));
    }
}

async fn declare(conn: &Connection, broker: &BrokerSettings) -> Result<(), BrokerError> {
    let channel = conn.create_channel().await?;
    topology::declare_for(&channel, broker).await?;
    let _ = channel.close(200, "declared".into()).await;
    Ok(())
}

/// Waits for the connection's first error event: why it is gone.
async fn connection_lost(events: impl futures::Stream<Item = lapin::Event>) -> String {
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        if let lapin::Event::Error(e) = event {
            return e.to_string();
        }
    }
    "the connection closed".to_owned()
}
