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
use shopfds_service::Supervisor;
use shopfds_store::Store;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::Settings;
use crate::config::VelocitySource;
use crate::engine::{Engine, watch_rules};
use crate::grpc::{self, FraudDetectionService};
use crate::recorder::ResultRecorder;
use crate::velocity::{self, VelocityIndex};

/// How long queued decisions may take to reach the database once the stop begins.
const RESULTS_FLUSH_GRACE: Duration = Duration::from_secs(10);

pub struct Application {
    settings: Settings,
    store: Store,
    engine: Arc<Engine>,
    ops_listener: TcpListener,
    grpc_listener: TcpListener,
}

impl Application {
    /// Loads the rules (an invalid file fails the start, naming `FDS_RULES_PATH` and the key),
    /// connects the database (running migrations) and binds the operations and gRPC ports
    /// (port 0 picks a free one, for tests).
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        let engine =
            Engine::from_path(settings.fds.rules_path.as_deref()).context("FDS_RULES_PATH")?;
        tracing::info!(rules_version = %engine.rules().version, "fraud rules loaded");
        let store = Store::connect(&settings.database).await?;
        let ops_listener = shopfds_service::bind_ops(&settings.shell).await?;
        let grpc_listener = TcpListener::bind(settings.fds.grpc_addr)
            .await
            .with_context(|| format!("GRPC_ADDR: cannot listen on {}", settings.fds.grpc_addr))?;
        Ok(Application {
            settings,
            store,
            engine: Arc::new(engine),
            ops_listener,
            grpc_listener,
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
            settings: Arc::new(self.settings.tasks.clone()),
        };
        crate::tasks::register(&mut registry, deps);
        registry
    }

    /// Serves gRPC and consumes until `shutdown` fires, then drains in-flight RPCs and running
    /// tasks, and writes the decisions still queued. Each part runs on the supervisor: one that
    /// fails stops the others.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let registry = self.registry();
        let s = self.settings;
        let fds = s.fds.clone();
        let backend = s.results.build(&self.store, &s.broker).await?;
        let grace = s.worker.stop_within();
        let mut parts = Supervisor::new(shutdown);
        let token = parts.token();

        shopfds_service::spawn_worker(
            &mut parts,
            self.ops_listener,
            &s.shell,
            Worker::new(s.broker, s.worker, registry, backend)
                .with_revoke_store(std::sync::Arc::new(self.store.revoked_tasks())),
            shopfds_results::database_check(&self.store),
        );
        let intel = crate::tasks::spawn_background(
            self.store.clone(),
            Arc::clone(&self.engine),
            &s.tasks,
            token.clone(),
        );
        parts.spawn("threat-intel reloader", joined(intel));
        if let Some(path) = fds.rules_path.clone() {
            let watcher = watch_rules(
                Arc::clone(&self.engine),
                path,
                fds.rules_reload,
                token.clone(),
            );
            parts.spawn("rules watcher", joined(watcher));
        }

        let (recorder, writer) = ResultRecorder::spawn(self.store.fds(), fds.results_buffer);
        let mut service = FraudDetectionService::new(
            Arc::clone(&self.engine),
            self.store.clone(),
            recorder,
            fds.velocity_timeout,
        );
        if fds.velocity_source == VelocitySource::Memory {
            let index = VelocityIndex::new();
            service = service.with_velocity_index(Arc::clone(&index));
            let feed = velocity::sync(index, self.store.velocity(), token.clone());
            parts.spawn("velocity feed", joined(feed));
        }
        let grpc_tls = s.grpc_tls.server_config();
        let auth = shopfds_auth::Authenticator::new(&s.auth, Some(self.store.api_keys()));
        parts.spawn("grpc", {
            let token = token.clone();
            grpc::serve_with_tls(
                self.grpc_listener,
                service,
                fds.grpc_concurrency,
                grpc_tls,
                auth,
                token,
            )
        });
        // The server (and with it the last recorder) stops first: the writer then drains.
        parts.spawn("decision writer", async move {
            token.cancelled().await;
            if tokio::time::timeout(RESULTS_FLUSH_GRACE, writer)
                .await
                .is_err()
            {
                tracing::warn!("fds results still queued after {RESULTS_FLUSH_GRACE:?}; abandoned");
            }
            Ok::<_, anyhow::Error>(())
        });
        let outcome = parts.join(grace).await;
        self.store.close().await;
        outcome
    }
}

/// A background loop spawned by its module, as a part: a panic in it is a failure.
async fn joined(handle: tokio::task::JoinHandle<()>) -> anyhow::Result<()> {
    handle.await.context("the task panicked")
}
