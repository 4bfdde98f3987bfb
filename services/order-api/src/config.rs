//! Settings of order-api, from the environment, validated at start.

use std::net::SocketAddr;
use std::time::Duration;

use shopfds_broker::BrokerSettings;
use shopfds_documents::StorageSettings;
use shopfds_results::ResultSettings;
use shopfds_service::relay::RelaySettings;
use shopfds_service::{ConfigError, Env, ServiceSettings, ShellSettings};
use shopfds_store::DatabaseSettings;

use crate::fds::FdsSettings;
use crate::housekeeping::HousekeepingSettings;
use crate::security::SecuritySettings;

pub const SERVICE: &str = "order-api";

#[derive(Debug, Clone)]
pub struct Settings {
    /// Telemetry, `OPS_ADDR` (`/healthz`, `/readyz`, `/metrics`; default `127.0.0.1:9100`), and
    /// `HTTP_HEADER_READ_TIMEOUT_SECS`, `HTTP_MAX_CONNECTIONS` for both HTTP ports.
    pub shell: ShellSettings,
    /// `HTTP_ADDR`: the API. Default `127.0.0.1:8080`.
    pub http_addr: SocketAddr,
    pub database: DatabaseSettings,
    pub broker: BrokerSettings,
    pub relay: RelaySettings,
    pub housekeeping: HousekeepingSettings,
    pub fds: FdsSettings,
    /// `RESULT_BACKEND`: where `GET /v1/tasks/{id}` reads task states.
    pub results: ResultSettings,
    /// `REQUEST_TIMEOUT_SECS` (default 10): a request taking longer is answered 408.
    pub request_timeout: Duration,
    /// `SHUTDOWN_GRACE_SECS` (default 30): after SIGTERM, how long in-flight requests may take.
    pub shutdown_grace: Duration,
    /// API keys, trusted proxies, amount limits, `FDS_API_KEY` ([`SecuritySettings`]).
    pub security: SecuritySettings,
    /// `STORAGE_DIR` / `STORAGE_URL`: where invoices and sales reports are read from (report-worker
    /// writes them); unset: those downloads answer 503.
    pub storage: StorageSettings,
}

impl ServiceSettings for Settings {
    const SERVICE: &'static str = SERVICE;
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn read(env: &Env) -> Result<Self, ConfigError> {
        Ok(Settings {
            shell: ShellSettings::read(env, SERVICE, "127.0.0.1:9100")?,
            http_addr: env.addr("HTTP_ADDR", "127.0.0.1:8080")?,
            database: DatabaseSettings::read(env)?,
            broker: BrokerSettings::read(env, SERVICE)?,
            relay: RelaySettings::read(env)?,
            housekeeping: HousekeepingSettings::read(env)?,
            fds: FdsSettings::read(env)?,
            results: ResultSettings::read(env)?,
            request_timeout: env.secs("REQUEST_TIMEOUT_SECS", Duration::from_secs(10))?,
            shutdown_grace: env.secs("SHUTDOWN_GRACE_SECS", Duration::from_secs(30))?,
            security: SecuritySettings::read(env)?,
            storage: StorageSettings::read(env)?,
        })
    }

    fn shell(&self) -> &ShellSettings {
        &self.shell
    }
}

impl Settings {
    /// The settings of the process environment (tests start from these and change a few).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::read(&Env::process())
    }
}
