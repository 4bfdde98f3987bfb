//! Wires the beat-scheduler: database (migrated) with the schedule file seeded into it, the
//! ticker that claims due slots, the outbox relay that publishes them, broker topology, and the
//! operations port serving the schedules API ([`crate::api`]).

use shopfds_service::Supervisor;
use shopfds_store::Store;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::Settings;
use crate::ticker::Ticker;

pub struct Application {
    settings: Settings,
    store: Store,
    ops_listener: TcpListener,
}

impl Application {
    /// Reads and checks the schedule file (a bad one stops the start naming the schedule),
    /// connects the database (running migrations), seeds the schedules, and binds the
    /// operations port (port 0 picks a free one, for tests).
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        let rows = crate::file::parse(&settings.schedule_text().map_err(anyhow::Error::msg)?)
            .map_err(|e| anyhow::anyhow!("schedule file: {e}"))?;
        let store = Store::connect(&settings.database).await?;
        store.beat().seed(&rows).await?;
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
    /// declares the topology, ticks and relays until `shutdown`.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let s = self.settings;
        let auth = shopfds_auth::Authenticator::new(&s.auth, Some(self.store.api_keys()));
        let api = crate::api::router(self.store.clone(), s.timezone, auth);
        let mut parts = Supervisor::new(shutdown);
        shopfds_service::spawn_topology_with(
            &mut parts,
            self.ops_listener,
            &s.shell,
            s.broker.clone(),
            shopfds_results::database_check(&self.store),
            Some(api),
        );
        let ticker = Ticker {
            store: self.store.clone(),
            timezone: s.timezone,
        };
        let token = parts.token();
        parts.spawn("ticker", ticker.run(s.tick, token));
        if s.relay.enabled {
            let token = parts.token();
            parts.spawn(
                "outbox relay",
                shopfds_service::relay::run(self.store.clone(), s.broker, s.relay, token),
            );
        }
        let outcome = parts.join(STOP_WITHIN).await;
        self.store.close().await;
        outcome
    }
}

/// A tick, one relay round and closing the broker connection take well under this.
const STOP_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);
