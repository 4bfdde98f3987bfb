//! Settings of the dlq-reprocessor, from the environment, validated at start.

use std::time::Duration;

use shopfds_auth::AuthSettings;
use shopfds_broker::BrokerSettings;
use shopfds_service::{ConfigError, Env, ServiceSettings, ShellSettings};
use shopfds_store::DatabaseSettings;

use crate::workbench::Limits;

pub const SERVICE: &str = "dlq-reprocessor";

#[derive(Debug, Clone)]
pub struct Settings {
    /// Telemetry, `OPS_ADDR` (default `127.0.0.1:9105`: the ops endpoints and the DLQ API), HTTP
    /// limits.
    pub shell: ShellSettings,
    pub broker: BrokerSettings,
    pub database: DatabaseSettings,
    /// `DLQ_REPLAY_RATE` (default 50 per second), `DLQ_MAX_REPLAYS` (default 3).
    pub limits: Limits,
    /// `API_KEYS`, `API_KEYS_CACHE_SECS`: the API's callers, who need scope `admin`.
    pub auth: AuthSettings,
    /// `DLQ_DEPTH_INTERVAL_SECS` (default 15): how often the dead-letter and parked queues'
    /// depths are read for `shopfds_dead_letter_messages`.
    pub depth_interval: Duration,
}

/// The default of `DLQ_DEPTH_INTERVAL_SECS`: the usual Prometheus scrape interval.
pub const DEPTH_INTERVAL: Duration = Duration::from_secs(15);

impl ServiceSettings for Settings {
    const SERVICE: &'static str = SERVICE;
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn read(env: &Env) -> Result<Self, ConfigError> {
        let defaults = Limits::default();
        let rate: f64 = env.parse("DLQ_REPLAY_RATE", defaults.rate)?;
        if !(rate.is_finite() && rate > 0.0) {
            return Err(ConfigError::new(
                "DLQ_REPLAY_RATE",
                format!("{rate} is not a positive number of messages per second"),
            ));
        }
        let depth_interval = env.secs("DLQ_DEPTH_INTERVAL_SECS", DEPTH_INTERVAL)?;
        if depth_interval.is_zero() {
            return Err(ConfigError::new(
                "DLQ_DEPTH_INTERVAL_SECS",
                "0 is not a number of seconds between readings (at least 1)",
            ));
        }
        Ok(Settings {
            shell: ShellSettings::read(env, SERVICE, "127.0.0.1:9105")?,
            broker: BrokerSettings::read(env, SERVICE)?,
            database: DatabaseSettings::read(env)?,
            limits: Limits {
                rate,
                max_replays: env.parse("DLQ_MAX_REPLAYS", defaults.max_replays)?,
            },
            auth: AuthSettings::read(env)?,
            depth_interval,
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
