//! Settings of the report-worker, from the environment, validated at start.

use shopfds_broker::{BrokerSettings, WorkerSettings};
use shopfds_documents::{FontSettings, StorageSettings};
use shopfds_mail::MailSettings;
use shopfds_results::ResultSettings;
use shopfds_service::{ConfigError, Env, ServiceSettings, ShellSettings};
use shopfds_store::DatabaseSettings;

pub const SERVICE: &str = "report-worker";

/// Queues consumed unless `WORKER_QUEUES` says otherwise.
pub const DEFAULT_QUEUES: &[&str] = &["reports", "maintenance"];

/// Tasks running at once unless `WORKER_CONCURRENCY` says otherwise.
pub const DEFAULT_CONCURRENCY: usize = 4;

#[derive(Debug, Clone)]
pub struct Settings {
    /// Telemetry, `OPS_ADDR` (default `127.0.0.1:9103`), HTTP limits.
    pub shell: ShellSettings,
    pub broker: BrokerSettings,
    pub database: DatabaseSettings,
    pub worker: WorkerSettings,
    /// `RESULT_BACKEND` and its batch settings.
    pub results: ResultSettings,
    /// `STORAGE_DIR` / `STORAGE_URL`: where invoices, reports and log archives are written;
    /// unset: the tasks that write there are refused with the reason.
    pub storage: StorageSettings,
    /// `PDF_FONT`: the font documents are set in (default: Debian's fonts-nanum), loaded and
    /// checked at start.
    pub font: FontSettings,
    /// `SMTP_URL`, `MAIL_FROM`: sales reports are mailed.
    pub mail: MailSettings,
    /// `ARCHIVE_BATCH_SIZE` (default 10000): log lines per archive object.
    pub archive_batch_size: i64,
    /// `REPORT_MAIL_TO` (optional): where a sales report goes when its `user_id` is not an
    /// email address (the daily report has none); unset: such a report is stored, not mailed.
    pub report_mail_to: Option<String>,
}

impl ServiceSettings for Settings {
    const SERVICE: &'static str = SERVICE;
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn read(env: &Env) -> Result<Self, ConfigError> {
        Ok(Settings {
            shell: ShellSettings::read(env, SERVICE, "127.0.0.1:9103")?,
            broker: BrokerSettings::read(env, SERVICE)?,
            database: DatabaseSettings::read(env)?,
            worker: WorkerSettings::read(env, SERVICE, DEFAULT_QUEUES, DEFAULT_CONCURRENCY, 1)?,
            results: ResultSettings::read(env)?,
            storage: StorageSettings::read(env)?,
            font: FontSettings::read(env)?,
            mail: MailSettings::read(env)?,
            archive_batch_size: env.positive("ARCHIVE_BATCH_SIZE", 10_000)?,
            report_mail_to: report_mail_to(env)?,
        })
    }

    fn shell(&self) -> &ShellSettings {
        &self.shell
    }
}

/// `REPORT_MAIL_TO`: one email address, or unset.
fn report_mail_to(env: &Env) -> Result<Option<String>, ConfigError> {
    match env.get("REPORT_MAIL_TO") {
        Some(to) if !shopfds_mail::is_address(&to) => Err(ConfigError::new(
            "REPORT_MAIL_TO",
            format!("{to:?} is not one email address (reports@example.com)"),
        )),
        to => Ok(to),
    }
}

impl Settings {
    /// The settings of the process environment (tests start from these and change a few).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::read(&Env::process())
    }
}
