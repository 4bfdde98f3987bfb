//! Settings of the email-worker, from the environment, validated at start.

use std::net::SocketAddr;

use anyhow::Context;
use lettre::message::Mailbox;
use shopfds_broker::{BrokerSettings, WorkerSettings};
use shopfds_results::ResultSettings;
use shopfds_store::DatabaseSettings;
use shopfds_telemetry::TelemetrySettings;

pub const SERVICE: &str = "email-worker";

#[derive(Debug, Clone)]
pub struct Settings {
    pub broker: BrokerSettings,
    pub database: DatabaseSettings,
    pub worker: WorkerSettings,
    /// `RESULT_BACKEND` and its batch settings.
    pub results: ResultSettings,
    pub telemetry: TelemetrySettings,
    /// `SMTP_URL`: `smtp://host:port` (plain), `smtp://host:587?tls=required` (STARTTLS) or
    /// `smtps://user:pass@host:465`. Default `smtp://127.0.0.1:1025`.
    pub smtp_url: String,
    /// `MAIL_FROM`, default `ShopFDS <noreply@shopfds.com>`.
    pub mail_from: Mailbox,
    /// `OPS_ADDR`: `/healthz`, `/readyz`, `/metrics`. Default `127.0.0.1:9101`.
    pub ops_addr: SocketAddr,
}

impl Settings {
    pub fn from_env() -> anyhow::Result<Self> {
        let worker = WorkerSettings::from_env(SERVICE, &["email", "default"], 16)?;
        let mut database = DatabaseSettings::from_env()?;
        // Each running task holds one connection while it sends (the once-only lock), so the
        // pool must be larger than the concurrency unless the operator chose a size.
        if std::env::var("DATABASE_MAX_CONNECTIONS").is_err() {
            database.max_connections = u32::try_from(worker.concurrency + 4).unwrap_or(u32::MAX);
        }
        let mail_from = std::env::var("MAIL_FROM")
            .unwrap_or_else(|_| "ShopFDS <noreply@shopfds.com>".to_owned());
        Ok(Settings {
            broker: BrokerSettings::from_env(SERVICE)?,
            database,
            worker,
            results: ResultSettings::from_env()?,
            telemetry: TelemetrySettings::from_env(SERVICE)?,
            smtp_url: std::env::var("SMTP_URL")
                .unwrap_or_else(|_| "smtp://127.0.0.1:1025".to_owned()),
            mail_from: mail_from
                .parse()
                .with_context(|| format!("MAIL_FROM: {mail_from:?} is not a mailbox"))?,
            ops_addr: std::env::var("OPS_ADDR")
                .unwrap_or_else(|_| "127.0.0.1:9101".to_owned())
                .parse()
                .context("OPS_ADDR: expected host:port")?,
        })
    }
}
