//! Settings of the beat-scheduler, from the environment, validated at start.

use shopfds_broker::BrokerSettings;
use shopfds_service::{ConfigError, Env, ServiceSettings, ShellSettings};
use shopfds_store::DatabaseSettings;

pub const SERVICE: &str = "beat-scheduler";

#[derive(Debug, Clone)]
pub struct Settings {
    /// Telemetry, `OPS_ADDR` (default `127.0.0.1:9104`), HTTP limits.
    pub shell: ShellSettings,
    pub broker: BrokerSettings,
    pub database: DatabaseSettings,
}

impl ServiceSettings for Settings {
    const SERVICE: &'static str = SERVICE;

    fn read(env: &Env) -> Result<Self, ConfigError> {
        Ok(Settings {
            shell: ShellSettings::read(env, SERVICE, "127.0.0.1:9104")?,
            broker: BrokerSettings::read(env, SERVICE)?,
            database: DatabaseSettings::read(env)?,
        })
    }

    fn shell(&self) -> &ShellSettings {
        &self.shell
    }
}
