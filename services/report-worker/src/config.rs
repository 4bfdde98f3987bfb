//! Settings of the report-worker, from the environment, validated at start.

use std::net::SocketAddr;

use anyhow::Context;
use shopfds_broker::{BrokerSettings, WorkerSettings};
use shopfds_results::ResultSettings;
use shopfds_store::DatabaseSettings;
use shopfds_telemetry::TelemetrySettings;

pub const SERVICE: &str = "report-worker";

/// Queues consumed unless `WORKER_QUEUES` says otherwise.
pub const DEFAULT_QUEUES: &[&str] = &["reports", "maintenance"];

/// Tasks running at once unless `WORKER_CONCURRENCY` says otherwise.
pub const DEFAULT_CONCURRENCY: usize = 4;

#[derive(Debug, Clone)]
pub struct Settings {
    pub broker: BrokerSettings,
    pub database: DatabaseSettings,
    pub worker: WorkerSettings,
    /// `RESULT_BACKEND` and its batch settings.
    pub results: ResultSettings,
    pub telemetry: TelemetrySettings,
    /// `OPS_ADDR`: `/healthz`, `/readyz`, `/metrics`. Default `127.0.0.1:9103`.
    pub ops_addr: SocketAddr,
}

impl Settings {
    pub fn from_env() -> anyhow::Result<Self> {
        let ops_addr = std::env::var("OPS_ADDR").unwrap_or_else(|_| "127.0.0.1:9103".to_owned());
        Ok(Settings {
            broker: BrokerSettings::from_env(SERVICE)?,
            database: DatabaseSettings::from_env()?,
            worker: WorkerSettings::from_env(SERVICE, DEFAULT_QUEUES, DEFAULT_CONCURRENCY)?,
            results: ResultSettings::from_env()?,
            telemetry: TelemetrySettings::from_env(SERVICE)?,
            ops_addr: ops_addr
                .parse()
                .with_context(|| format!("OPS_ADDR: {ops_addr:?} is not host:port"))?,
        })
    }
}
