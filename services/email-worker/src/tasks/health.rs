//! `health_check()`: what this worker sees of its dependencies, as a task result (the seed runs
//! it every 10 s from the scheduler). It never fails: an unreachable dependency is reported in
//! the result, so the result backend keeps the last view of each.
//!
//! `{"worker", "checked_at", "database", "smtp", "shipping_partner"}`: `ok`, or why not
//! (`shipping_partner` is `configured` or `not configured`; it is not called).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::{Value, json};
use shopfds_broker::{Task, TaskContext, TaskError, TaskOptions};
use shopfds_protocol::payloads::HealthCheck;
use shopfds_protocol::tasks::HEALTH_CHECK;
use shopfds_store::Store;

use crate::mail::Mailer;
use crate::partner::Partner;

/// Longest one dependency's check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

pub struct HealthCheckTask {
    pub store: Store,
    pub mailer: Arc<Mailer>,
    pub partner: Partner,
    /// This worker's node name (`email-worker@host`).
    pub worker: String,
}

impl Task for HealthCheckTask {
    const NAME: &'static str = HEALTH_CHECK;
    type Args = HealthCheck;

    fn options(&self) -> TaskOptions {
        // A report, not an effect: a lost one is replaced 10 s later.
        TaskOptions {
            max_retries: 0,
            ..TaskOptions::default()
        }
    }

    async fn run(&self, _: HealthCheck, _: TaskContext) -> Result<Value, TaskError> {
        let database = bounded(async { self.store.ping().await.map_err(|e| e.to_string()) });
        let smtp = bounded(self.mailer.check());
        let (database, smtp) = tokio::join!(database, smtp);
        Ok(json!({
            "worker": self.worker,
            "checked_at": Utc::now().to_rfc3339(),
            "database": database,
            "smtp": smtp,
            "shipping_partner": if self.partner.is_configured() { "configured" } else { "not configured" },
        }))
    }
}

/// `ok`, the error, or `timed out after 5s`.
async fn bounded(check: impl Future<Output = Result<(), String>>) -> String {
    match tokio::time::timeout(CHECK_TIMEOUT, check).await {
        Ok(Ok(())) => "ok".to_owned(),
        Ok(Err(reason)) => reason,
        Err(_) => format!("timed out after {}s", CHECK_TIMEOUT.as_secs()),
    }
}
