//! Wires the worker: result store, the object store of documents and archives, the font
//! documents are set in, the SMTP transport, task registry, operations endpoints.
//!
//! A message for a task not in the registry (see [`crate::tasks`]) is dead-lettered to
//! `failed.<queue>` with "unknown task … no handler registered" rather than acknowledged or left
//! to pile up.

use std::sync::Arc;

use anyhow::Context;
use shopfds_broker::{Registry, Worker};
use shopfds_documents::{DocumentFont, Storage};
use shopfds_mail::Mailer;
use shopfds_service::Supervisor;
use shopfds_store::Store;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::Settings;

pub struct Application {
    settings: Settings,
    store: Store,
    storage: Option<Storage>,
    font: DocumentFont,
    mailer: Arc<Mailer>,
    ops_listener: TcpListener,
}

impl Application {
    /// Loads the font (a missing one stops the start with the reason), opens the object store,
    /// connects the database (running migrations) and binds the operations port (port 0 picks a
    /// free one, for tests).
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        let font = settings.font.load().context("PDF_FONT")?;
        let storage = settings.storage.open().map_err(anyhow::Error::msg)?;
        if storage.is_none() {
            tracing::warn!(
                "neither STORAGE_DIR nor STORAGE_URL is set: invoices, reports and log archives \
                 are refused until one is"
            );
        }
        let mailer = Arc::new(Mailer::new(&settings.mail)?);
        let store = Store::connect(&settings.database).await?;
        let ops_listener = shopfds_service::bind_ops(&settings.shell).await?;
        Ok(Application {
            settings,
            store,
            storage,
            font,
            mailer,
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
            crate::tasks::Deps {
                store: self.store.clone(),
                storage: self.storage.clone(),
                font: self.font.clone(),
                mailer: self.mailer.clone(),
                archive_batch_size: self.settings.archive_batch_size,
                report_mail_to: self.settings.report_mail_to.clone(),
            },
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
