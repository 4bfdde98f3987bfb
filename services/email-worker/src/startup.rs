//! Wires the worker: result store, SMTP transport, the shipping partner's client, the object
//! store of invoices, task registry, operations endpoints.

use std::sync::Arc;

use shopfds_broker::{Registry, Worker};
use shopfds_documents::Storage;
use shopfds_service::Supervisor;
use shopfds_store::Store;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::Settings;
use crate::mail::Mailer;
use crate::partner::Partner;
use crate::tasks;

pub struct Application {
    settings: Settings,
    store: Store,
    mailer: Arc<Mailer>,
    partner: Partner,
    storage: Option<Storage>,
    ops_listener: TcpListener,
}

impl Application {
    /// Connects the database (running migrations), builds the SMTP transport and binds the
    /// operations port (port 0 picks a free one, for tests).
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        let store = Store::connect(&settings.database).await?;
        let mailer = Arc::new(Mailer::new(&settings.mail)?);
        let partner = Partner::new(settings.partner.clone())?;
        let storage = settings.storage.open().map_err(anyhow::Error::msg)?;
        let ops_listener = shopfds_service::bind_ops(&settings.shell).await?;
        Ok(Application {
            settings,
            store,
            mailer,
            partner,
            storage,
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
        tasks::register(
            &mut registry,
            self.mailer.clone(),
            self.partner.clone(),
            self.storage.clone(),
            self.store.clone(),
            &self.settings.worker.hostname,
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
            storage_probe(
                Worker::new(s.broker, s.worker, registry, backend)
                    .with_revoke_store(std::sync::Arc::new(self.store.revoked_tasks())),
                &self.storage,
            ),
            shopfds_results::database_check(&self.store),
        );
        let outcome = parts.join(grace).await;
        self.store.close().await;
        outcome
    }
}

/// A task that found the object store unreachable waits, with the worker, until it answers
/// (the store joins the worker's dependency probes), instead of spending its retries.
fn storage_probe(worker: Worker, storage: &Option<shopfds_documents::Storage>) -> Worker {
    match storage {
        Some(storage) => worker.with_probe("object store", storage.probe()),
        None => worker,
    }
}
