//! Wires the worker: result store, the object store of archives, task registry, operations
//! endpoints.
//!
//! The registry holds `archive_old_logs` (see [`crate::tasks`]); a message for any other task
//! (the report tasks are not built yet) is dead-lettered to `failed.<queue>` with "unknown task
//! … no handler registered" rather than acknowledged or left to pile up.

use std::sync::Arc;

use anyhow::Context;
use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use shopfds_broker::{Registry, Worker};
use shopfds_service::Supervisor;
use shopfds_store::Store;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::Settings;

pub struct Application {
    settings: Settings,
    store: Store,
    objects: Option<Arc<dyn ObjectStore>>,
    ops_listener: TcpListener,
}

impl Application {
    /// Connects the database (running migrations) and binds the operations port (port 0 picks a
    /// free one, for tests).
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        let store = Store::connect(&settings.database).await?;
        let objects = match &settings.object_store_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("STORAGE_DIR: cannot create {}", dir.display()))?;
                let local = LocalFileSystem::new_with_prefix(dir)
                    .with_context(|| format!("STORAGE_DIR: {}", dir.display()))?;
                Some(Arc::new(local) as Arc<dyn ObjectStore>)
            }
            None => None,
        };
        let ops_listener = shopfds_service::bind_ops(&settings.shell).await?;
        Ok(Application {
            settings,
            store,
            objects,
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
        let mut registry = Registry::new();
        crate::tasks::register(
            &mut registry,
            self.store.clone(),
            self.objects.clone(),
            self.settings.archive_batch_size,
        );
        registry
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
