//! Wires the beat-scheduler: database (migrated), broker topology, operations endpoints.
//!
//! Nothing is published or consumed yet: the service declares the topology it will rely on,
//! then serves `/healthz`, `/readyz` and `/metrics` until shutdown.

use shopfds_broker::amqp::connect_with_retry;
use shopfds_broker::topology;
use shopfds_store::Store;
use shopfds_telemetry::ops;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::Settings;

pub struct Application {
    settings: Settings,
    store: Store,
    ops_listener: TcpListener,
}

impl Application {
    /// Connects the database (running migrations) and binds the operations port (port 0 picks a
    /// free one, for tests).
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        let store = Store::connect(&settings.database).await?;
        let ops_listener = TcpListener::bind(settings.ops_addr).await?;
        Ok(Application {
            settings,
            store,
            ops_listener,
        })
    }

    pub fn ops_port(&self) -> u16 {
        self.ops_listener
            .local_addr()
            .map(|a| a.port())
            .unwrap_or(0)
    }

    /// Serves the operations endpoints at once (so liveness holds while the broker is down),
    /// connects to the broker with backoff, declares the topology, then waits for `shutdown`.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let readiness = shopfds_broker::ops::readiness(&self.store, &self.settings.broker);
        let ops_server = tokio::spawn(ops::serve(self.ops_listener, readiness, shutdown.clone()));
        let declared = declare_topology(&self.settings, &shutdown).await;
        if declared.is_ok() {
            shutdown.cancelled().await;
        }
        shutdown.cancel();
        let _ = ops_server.await;
        self.store.close().await;
        declared?;
        tracing::info!("beat-scheduler stopped");
        Ok(())
    }
}

/// Declares the topology on a connection of its own, closed afterwards: until this service
/// publishes or consumes, holding a connection open would only show up as an idle one. Returns
/// at once if `shutdown` fires while the broker is still unreachable.
async fn declare_topology(settings: &Settings, shutdown: &CancellationToken) -> anyhow::Result<()> {
    let Some(conn) = connect_with_retry(&settings.broker, shutdown).await else {
        return Ok(());
    };
    let declared = async {
        let channel = conn.create_channel().await?;
        topology::declare(&channel, settings.broker.queue_type).await?;
        let _ = channel.close(200, "declared".into()).await;
        anyhow::Ok(())
    }
    .await;
    let _ = conn.close(200, "topology declared".into()).await;
    declared?;
    tracing::info!(
        queue_type = settings.broker.queue_type.as_str(),
        "topology declared"
    );
    Ok(())
}
