//! Wires the worker: result store, task registry, operations endpoints.
//!
//! The registry is empty until this worker's task handlers land, so a message for any task is
//! dead-lettered to `failed.<queue>` with "unknown task … no handler registered" rather than
//! acknowledged or left to pile up.

use shopfds_broker::{Registry, Worker};
use shopfds_service::Supervisor;
use shopfds_store::Store;
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
        let ops_listener = shopfds_service::bind_ops(&settings.shell).await?;
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

    pub fn registry(&self) -> Registry {
        Registry::new()
    }

    /// Consumes until `shutdown` fires, then drains running tasks within the grace period.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let registry = self.registry();
        let s = self.settings;
        let backend = s.results.build(&self.store, &s.broker).await?;
        let grace = s.worker.stop_within();
        let mut parts = Supervisor::new(shutdown);
        shopfds_service::spawn_worker(
            &mut parts,
            self.ops_listener,
            &s.shell,
            Worker::new(s.broker, s.worker, registry, backend),
            shopfds_results::database_check(&self.store),
        );
        let outcome = parts.join(grace).await;
        self.store.close().await;
        outcome
    }
}
