//! Wires the dlq-reprocessor: database (migrated), broker topology, the dead-letter depths'
//! sampler ([`crate::depths`]), and the operations port serving `/healthz`, `/readyz`,
//! `/metrics` and the DLQ API ([`crate::api`]).

use std::sync::Arc;

use shopfds_auth::Authenticator;
use shopfds_service::Supervisor;
use shopfds_store::Store;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::Settings;
use crate::workbench::Workbench;

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

    /// Serves the operations endpoints at once (so liveness holds while the broker is down),
    /// connects to the broker with backoff, declares the topology, then waits for `shutdown`.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let s = self.settings;
        let workbench = Arc::new(Workbench::new(
            s.broker.clone(),
            self.store.clone(),
            s.limits,
        ));
        let auth = Authenticator::new(&s.auth, Some(self.store.api_keys()));
        let api = crate::api::router(workbench.clone(), auth);
        let mut parts = Supervisor::new(shutdown);
        let token = parts.token();
        let every = s.depth_interval;
        parts.spawn("depths", async move {
            crate::depths::sample(&workbench, every, token).await;
        });
        shopfds_service::spawn_topology_with(
            &mut parts,
            self.ops_listener,
            &s.shell,
            s.broker,
            shopfds_results::database_check(&self.store),
            Some(api),
        );
        let outcome = parts.join(STOP_WITHIN).await;
        self.store.close().await;
        outcome
    }
}

/// Closing one broker connection and the ops server takes well under this.
const STOP_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);
