//! A service that only keeps the topology declared (a scheduler before it publishes): one
//! connection, re-established with backoff, whose state `/readyz` reports as `broker`.

use futures::StreamExt;
use lapin::Connection;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::amqp::{Backoff, close_quietly, connect_with_backoff, millis};
use crate::{BrokerError, BrokerSettings, BrokerState, topology};

/// Connects, declares the topology and keeps that connection until `shutdown` fires, reporting
/// its [`BrokerState`] on `state` (ready while the topology is declared on a live connection).
/// A failed declare (e.g. [`BrokerError::Inequivalent`]) is logged at error level and retried
/// with backoff, and a lost connection is re-established and the topology declared again.
/// Returns on shutdown, with the state `Stopped`.
pub async fn keep_topology(
    broker: BrokerSettings,
    state: watch::Sender<BrokerState>,
    shutdown: CancellationToken,
) {
    crate::connected::report(crate::connected::connection::TOPOLOGY, state.subscribe());
    keep_declared(&broker, &state, &shutdown).await;
    state.send_replace(BrokerState::Stopped);
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
