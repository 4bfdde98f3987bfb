//! Settings of the beat-scheduler, from the environment, validated at start.

use std::path::PathBuf;
use std::time::Duration;

use chrono_tz::Tz;
use shopfds_broker::BrokerSettings;
use shopfds_service::relay::RelaySettings;
use shopfds_service::{ConfigError, Env, ServiceSettings, ShellSettings};
use shopfds_store::DatabaseSettings;

pub const SERVICE: &str = "beat-scheduler";

#[derive(Debug, Clone)]
pub struct Settings {
    /// Telemetry, `OPS_ADDR` (default `127.0.0.1:9104`), HTTP limits.
    pub shell: ShellSettings,
    pub broker: BrokerSettings,
    pub database: DatabaseSettings,
    /// `BEAT_TIMEZONE` (default `Asia/Seoul`): the zone cron expressions are read in.
    pub timezone: Tz,
    /// `BEAT_SCHEDULE_FILE`: a schedule file to seed instead of the built-in one.
    pub schedule_file: Option<PathBuf>,
    /// `BEAT_TICK_MS` (default 1000): how often each replica looks for due slots.
    pub tick: Duration,
    /// `RELAY_ENABLED`, `RELAY_BATCH_SIZE`, `RELAY_POLL_INTERVAL_MS`: the outbox relay that
    /// publishes the claimed slots.
    pub relay: RelaySettings,
    /// `API_KEYS`, `API_KEYS_CACHE_SECS`: the schedules API's callers, who need scope `admin`.
    pub auth: shopfds_auth::AuthSettings,
}

impl ServiceSettings for Settings {
    const SERVICE: &'static str = SERVICE;
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn read(env: &Env) -> Result<Self, ConfigError> {
        let zone = env.string("BEAT_TIMEZONE", "Asia/Seoul");
        Ok(Settings {
            shell: ShellSettings::read(env, SERVICE, "127.0.0.1:9104")?,
            broker: BrokerSettings::read(env, SERVICE)?,
            database: DatabaseSettings::read(env)?,
            timezone: zone.parse().map_err(|_| {
                ConfigError::new(
                    "BEAT_TIMEZONE",
                    format!("{zone:?} is not an IANA time zone (e.g. Asia/Seoul, UTC)"),
                )
            })?,
            schedule_file: env.file("BEAT_SCHEDULE_FILE")?,
            tick: env.millis("BEAT_TICK_MS", Duration::from_secs(1))?,
            relay: RelaySettings::read(env)?,
            auth: shopfds_auth::AuthSettings::read(env)?,
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

    /// The schedule file's text: `BEAT_SCHEDULE_FILE`, else the built-in one.
    pub fn schedule_text(&self) -> Result<String, String> {
        match &self.schedule_file {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|e| format!("BEAT_SCHEDULE_FILE {}: {e}", path.display())),
            None => Ok(crate::file::BUILT_IN.to_owned()),
        }
    }
}
