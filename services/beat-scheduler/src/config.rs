//! Settings of the beat-scheduler, from the environment, validated at start.

use std::net::SocketAddr;

use anyhow::Context;
use shopfds_broker::BrokerSettings;
use shopfds_store::DatabaseSettings;
use shopfds_telemetry::TelemetrySettings;

pub const SERVICE: &str = "beat-scheduler";

#[derive(Debug, Clone)]
pub struct Settings {
    pub broker: BrokerSettings,
    pub database: DatabaseSettings,
    pub telemetry: TelemetrySettings,
    /// `OPS_ADDR`: `/healthz`, `/readyz`, `/metrics`. Default `127.0.0.1:9104`.
    pub ops_addr: SocketAddr,
}

impl Settings {
    pub fn from_env() -> anyhow::Result<Self> {
        let ops_addr = std::env::var("OPS_ADDR").unwrap_or_else(|_| "127.0.0.1:9104".to_owned());
        Ok(Settings {
            broker: BrokerSettings::from_env(SERVICE)?,
            database: DatabaseSettings::from_env()?,
            telemetry: TelemetrySettings::from_env(SERVICE)?,
            ops_addr: ops_addr
                .parse()
                .with_context(|| format!("OPS_ADDR: {ops_addr:?} is not host:port"))?,
        })
    }
}
