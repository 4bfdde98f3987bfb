//! Settings of the email-worker, from the environment, validated at start.

use shopfds_broker::{BrokerSettings, WorkerSettings};
use shopfds_documents::StorageSettings;
use shopfds_mail::MailSettings;
use shopfds_results::ResultSettings;
use shopfds_service::{ConfigError, Env, ServiceSettings, ShellSettings};
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
    /// `SMTP_URL`, `MAIL_FROM`.
    pub mail: MailSettings,
    /// `SHIPPING_PARTNER_URL`, `SHIPPING_PARTNER_TOKEN`, `SHIPPING_PARTNER_TIMEOUT_SECS`.
    pub partner: PartnerSettings,
    /// `STORAGE_DIR` / `STORAGE_URL`: where report-worker writes the invoices this worker
    /// attaches; unset: `send_invoice_email` is refused with the reason.
    pub storage: StorageSettings,
}

impl ServiceSettings for Settings {
    const SERVICE: &'static str = SERVICE;
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn read(env: &Env) -> Result<Self, ConfigError> {
        let worker = WorkerSettings::read(env, SERVICE, &["email", "default"], 16, 1)?;
        let mut database = DatabaseSettings::read(env)?;
        // Each running task holds one connection while it sends (the once-only lock), so the
        // pool must be larger than the concurrency unless the operator chose a size.
        if !env.is_set("DATABASE_MAX_CONNECTIONS") {
            database.max_connections =
                u32::try_from(worker.concurrency.saturating_add(4)).unwrap_or(u32::MAX);
        }
        Ok(Settings {
            shell: ShellSettings::read(env, SERVICE, "127.0.0.1:9101")?,
            broker: BrokerSettings::read(env, SERVICE)?,
            database,
            worker,
            results: ResultSettings::read(env)?,
            mail: MailSettings::read(env)?,
            partner: PartnerSettings::read(env)?,
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
