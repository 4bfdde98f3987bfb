//! Settings of the email-worker, from the environment, validated at start.

use lettre::message::Mailbox;
use shopfds_broker::{BrokerSettings, WorkerSettings};
use shopfds_results::ResultSettings;
use shopfds_service::{ConfigError, Env, SecretUrl, ServiceSettings, ShellSettings};
use shopfds_store::DatabaseSettings;

use crate::partner::PartnerSettings;

pub const SERVICE: &str = "email-worker";

#[derive(Debug, Clone)]
pub struct Settings {
    /// Telemetry, `OPS_ADDR` (default `127.0.0.1:9101`), HTTP limits.
    pub shell: ShellSettings,
    pub broker: BrokerSettings,
    pub database: DatabaseSettings,
    pub worker: WorkerSettings,
    /// `RESULT_BACKEND` and its batch settings.
    pub results: ResultSettings,
    /// `SMTP_URL`: `smtp://host:port` (plain), `smtp://host:587?tls=required` (STARTTLS) or
    /// `smtps://user:pass@host:465`. Default `smtp://127.0.0.1:1025`. Logged without its password.
    pub smtp_url: SecretUrl,
    /// `MAIL_FROM`, default `ShopFDS <noreply@shopfds.com>`.
    pub mail_from: Mailbox,
    /// `SHIPPING_PARTNER_URL`, `SHIPPING_PARTNER_TOKEN`, `SHIPPING_PARTNER_TIMEOUT_SECS`.
    pub partner: PartnerSettings,
}

impl ServiceSettings for Settings {
    const SERVICE: &'static str = SERVICE;

    fn read(env: &Env) -> Result<Self, ConfigError> {
        let worker = WorkerSettings::read(env, SERVICE, &["email", "default"], 16, 1)?;
        let mut database = DatabaseSettings::read(env)?;
        // Each running task holds one connection while it sends (the once-only lock), so the
        // pool must be larger than the concurrency unless the operator chose a size.
        if !env.is_set("DATABASE_MAX_CONNECTIONS") {
            database.max_connections =
                u32::try_from(worker.concurrency.saturating_add(4)).unwrap_or(u32::MAX);
        }
        let mail_from = env.string("MAIL_FROM", "ShopFDS <noreply@shopfds.com>");
        Ok(Settings {
            shell: ShellSettings::read(env, SERVICE, "127.0.0.1:9101")?,
            broker: BrokerSettings::read(env, SERVICE)?,
            database,
            worker,
            results: ResultSettings::read(env)?,
            smtp_url: env.url("SMTP_URL", "smtp://127.0.0.1:1025", &["smtp", "smtps"])?,
            mail_from: mail_from.parse().map_err(|_| {
                ConfigError::new("MAIL_FROM", format!("{mail_from:?} is not a mailbox"))
            })?,
            partner: PartnerSettings::read(env)?,
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
