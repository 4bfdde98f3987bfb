//! Settings of order-api, from the environment, validated at start.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use shopfds_broker::BrokerSettings;
use shopfds_broker::settings::env_parse;
use shopfds_results::ResultSettings;
use shopfds_store::DatabaseSettings;
use shopfds_telemetry::TelemetrySettings;
use shopfds_telemetry::server::HttpServerSettings;

use crate::fds::FdsSettings;
use crate::security::SecuritySettings;

pub const SERVICE: &str = "order-api";

#[derive(Debug, Clone)]
pub struct Settings {
    /// `HTTP_ADDR`: the API and `/healthz`, `/readyz`, `/metrics`. Default `127.0.0.1:8080`.
    pub http_addr: SocketAddr,
    pub database: DatabaseSettings,
    pub broker: BrokerSettings,
    pub telemetry: TelemetrySettings,
    pub relay: RelaySettings,
    pub housekeeping: crate::housekeeping::HousekeepingSettings,
    pub fds: FdsSettings,
    /// `RESULT_BACKEND`: where `GET /v1/tasks/{id}` reads task states.
    pub results: ResultSettings,
    /// `REQUEST_TIMEOUT_SECS` (default 10): a request taking longer is answered 408.
    pub request_timeout: Duration,
    /// `SHUTDOWN_GRACE_SECS` (default 30): after SIGTERM, how long in-flight requests may take.
    pub shutdown_grace: Duration,
    /// `HTTP_HEADER_READ_TIMEOUT_SECS`, `HTTP_MAX_CONNECTIONS`: limits on slow, idle and
    /// numerous clients of `HTTP_ADDR`.
    pub http: HttpServerSettings,
    /// API keys, trusted proxies, amount limits, `FDS_API_KEY` ([`SecuritySettings`]).
    pub security: SecuritySettings,
}

#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// `RELAY_ENABLED` (default true): run the outbox relay in this process.
    pub enabled: bool,
    /// `RELAY_BATCH_SIZE` (default 100): rows published per confirm round trip.
    pub batch_size: i64,
    /// `RELAY_POLL_INTERVAL_MS` (default 1000): a safety net; relays are woken by NOTIFY.
    pub poll_interval: Duration,
}

impl Default for RelaySettings {
    fn default() -> Self {
        RelaySettings {
            enabled: true,
            batch_size: 100,
            poll_interval: Duration::from_secs(1),
        }
    }
}

impl Settings {
    pub fn from_env() -> anyhow::Result<Self> {
        let relay = RelaySettings {
            enabled: env_parse("RELAY_ENABLED", true)?,
            batch_size: env_parse("RELAY_BATCH_SIZE", 100)?,
            poll_interval: Duration::from_millis(env_parse("RELAY_POLL_INTERVAL_MS", 1000)?),
        };
        if relay.batch_size < 1 {
            anyhow::bail!("RELAY_BATCH_SIZE: must be at least 1");
        }
        Ok(Settings {
            http_addr: std::env::var("HTTP_ADDR")
                .unwrap_or_else(|_| "127.0.0.1:8080".to_owned())
                .parse()
                .context("HTTP_ADDR: expected host:port")?,
            database: DatabaseSettings::from_env()?,
            broker: BrokerSettings::from_env(SERVICE)?,
            telemetry: TelemetrySettings::from_env(SERVICE)?,
            relay,
            housekeeping: crate::housekeeping::HousekeepingSettings::read(
                &shopfds_config::Env::process(),
            )?,
            fds: FdsSettings::from_env()?,
            results: ResultSettings::from_env()?,
            request_timeout: Duration::from_secs(env_parse("REQUEST_TIMEOUT_SECS", 10)?),
            shutdown_grace: Duration::from_secs(env_parse("SHUTDOWN_GRACE_SECS", 30)?),
            http: HttpServerSettings::from_env()?,
            security: SecuritySettings::read(&shopfds_config::Env::process())?,
        })
    }
}
