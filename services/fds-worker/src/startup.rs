//! Wires the service: result store, rule engine (and its rules-file watcher), the gRPC score
//! server, the background decision writer, the queue worker and the operations endpoints — all
//! stopped by one cancellation token.
//!
//! The worker runs the tasks of [`crate::tasks`] (settings from `FDS_BATCH_CHUNK_SIZE`,
//! `THREAT_INTEL_*`); their threat-intel reloader runs next to it. A message for any other task
//! is dead-lettered to `failed.<queue>` with "unknown task … no handler registered".

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use shopfds_broker::{Registry, Worker};
use shopfds_store::Store;
use shopfds_telemetry::ops;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::Settings;
use crate::config::VelocitySource;
use crate::engine::{Engine, watch_rules};
use crate::grpc::{self, FraudDetectionService};
use crate::recorder::ResultRecorder;
use crate::velocity::{self, VelocityIndex};

/// How long queued decisions may take to reach the database at shutdown.
const RESULTS_FLUSH_GRACE: Duration = Duration::from_secs(10);

pub struct Application {
    settings: Settings,
    store: Store,
    engine: Arc<Engine>,
    ops_listener: TcpListener,
    grpc_listener: TcpListener,
    tasks: crate::tasks::TasksSettings,
}

impl Application {
    /// Loads the rules (an invalid file fails the start, naming `FDS_RULES_PATH` and the key),
    /// connects the database (running migrations) and binds the operations and gRPC ports
    /// (port 0 picks a free one, for tests).
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        let engine =
            Engine::from_path(settings.fds.rules_path.as_deref()).context("FDS_RULES_PATH")?;
        tracing::info!(rules_version = %engine.rules().version, "fraud rules loaded");
        let tasks = crate::tasks::TasksSettings::from_env()?;
        let store = Store::connect(&settings.database).await?;
        let ops_listener = TcpListener::bind(settings.ops_addr)
            .await
            .with_context(|| format!("OPS_ADDR: cannot listen on {}", settings.ops_addr))?;
        let grpc_listener = TcpListener::bind(settings.fds.grpc_addr)
            .await
            .with_context(|| format!("GRPC_ADDR: cannot listen on {}", settings.fds.grpc_addr))?;
        Ok(Application {
            settings,
            store,
            engine: Arc::new(engine),
            ops_listener,
            grpc_listener,
            tasks,
        })
    }

    pub fn ops_port(&self) -> u16 {
        self.ops_listener
            .local_addr()
            .map(|a| a.port())
            .unwrap_or(0)
    }

    /// The address the gRPC server listens on.
    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc_listener.local_addr().ok()
    }

    pub fn grpc_port(&self) -> u16 {
        self.grpc_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// The engine the gRPC server uses (its rules and threat intelligence can be swapped).
    pub fn engine(&self) -> Arc<Engine> {
        Arc::clone(&self.engine)
    }

    pub fn registry(&self) -> Registry {
        let mut registry = Registry::new();
        let deps = crate::tasks::Deps {
            store: self.store.clone(),
            engine: Arc::clone(&self.engine),
            settings: Arc::new(self.tasks.clone()),
        };
        crate::tasks::register(&mut registry, deps);
        registry
    }

    /// Serves gRPC and consumes until `shutdown` fires, then drains in-flight RPCs and running
    /// tasks, and writes the decisions still queued.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let registry = self.registry();
        let fds = self.settings.fds.clone();
        let backend = self
            .settings
            .results
            .build(&self.store, &self.settings.broker)
            .await?;
        let worker = Worker::new(
            self.settings.broker,
            self.settings.worker,
            registry,
            backend,
        );
        // `broker` is ready while this worker consumes; a probe opens no connection.
        let readiness = shopfds_broker::ops::readiness(
            shopfds_results::database_check(&self.store),
            worker.broker_state(),
        );
        let ops_server = tokio::spawn(ops::serve(self.ops_listener, readiness, shutdown.clone()));
        let background = crate::tasks::spawn_background(
            self.store.clone(),
            Arc::clone(&self.engine),
            &self.tasks,
            shutdown.clone(),
        );

        let watcher = fds.rules_path.clone().map(|path| {
            watch_rules(
                Arc::clone(&self.engine),
                path,
                fds.rules_reload,
                shutdown.clone(),
            )
        });
        let (recorder, writer) = ResultRecorder::spawn(self.store.fds(), fds.results_buffer);
        let mut service = FraudDetectionService::new(
            Arc::clone(&self.engine),
            self.store.clone(),
            recorder,
            fds.velocity_timeout,
        );
        let velocity_sync = match fds.velocity_source {
            VelocitySource::Memory => {
                let index = VelocityIndex::new();
                service = service.with_velocity_index(Arc::clone(&index));
                Some(velocity::sync(
                    index,
                    self.store.velocity(),
                    shutdown.clone(),
                ))
            }
            VelocitySource::Database => None,
        };
        let auth =
            shopfds_auth::Authenticator::new(&self.settings.auth, Some(self.store.api_keys()));
        let grpc_server = {
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let served = grpc::serve(
                    self.grpc_listener,
                    service,
                    fds.grpc_concurrency,
                    auth,
                    shutdown.clone(),
                )
                .await;
                if let Err(e) = &served {
                    tracing::error!(error = %e, "gRPC server failed; stopping");
                    shutdown.cancel();
                }
                served
            })
        };

        let outcome = worker.run(shutdown.clone()).await;
        shutdown.cancel();
        let grpc_outcome = grpc_server.await;
        // The server (and with it the last recorder) is gone: the writer drains and stops.
        if tokio::time::timeout(RESULTS_FLUSH_GRACE, writer)
            .await
            .is_err()
        {
            tracing::warn!("fds results still queued after {RESULTS_FLUSH_GRACE:?}; abandoned");
        }
        if let Some(watcher) = watcher {
            let _ = watcher.await;
        }
        if let Some(velocity_sync) = velocity_sync {
            let _ = velocity_sync.await;
        }
        let _ = background.await;
        let _ = ops_server.await;
        self.store.close().await;
        outcome?;
        grpc_outcome.context("gRPC server task")??;
        tracing::info!("fds-worker stopped");
        Ok(())
    }
}
