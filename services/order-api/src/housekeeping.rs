//! Housekeeping: the purges that keep the database from growing, run every
//! `HOUSEKEEPING_INTERVAL_SECS` (the first at start) until shutdown:
//!
//! - task results past their expiry (Celery beat's `celery.backend_cleanup`);
//! - outbox rows sent more than `OUTBOX_RETENTION_HOURS` ago (unsent rows are never purged);
//! - idempotency keys older than 24 h (after that a repeated request makes a new order);
//! - chords (with their counted parts) older than 7 days.
//!
//! It runs on every replica, relaying or not, without coordination: each purge is one `DELETE`
//! of rows past a cut-off, so two replicas purging at once delete each row once (the second
//! waits on the first's row lock, then skips the row), and a purge that fails (the database
//! away, or PostgreSQL aborting one of two concurrent purges as a deadlock) is logged and done
//! by the next round. Nothing else depends on a purge having run.

use std::time::Duration;

use shopfds_config::{ConfigError, Env};
use shopfds_store::Store;
use tokio_util::sync::CancellationToken;

/// How long idempotency keys are kept: a client retrying an order later than this makes a new
/// one.
const IDEMPOTENCY_KEY_RETENTION: chrono::TimeDelta = chrono::TimeDelta::hours(24);
/// A chord still open after a week will not complete: its parts have long used up their
/// retries (the longest policy waits 600 s between tries).
const CHORD_RETENTION: chrono::TimeDelta = chrono::TimeDelta::days(7);

/// 100 years: an interval PostgreSQL and chrono both hold.
const MAX_RETENTION_HOURS: u64 = 100 * 366 * 24;

#[derive(Debug, Clone)]
pub struct HousekeepingSettings {
    /// `HOUSEKEEPING_INTERVAL_SECS` (default 600, at least 1): the pause between two rounds of
    /// purges.
    pub every: Duration,
    /// `OUTBOX_RETENTION_HOURS` (default 24, at most 100 years): sent outbox rows are purged
    /// after this long.
    pub outbox_retention: Duration,
}

impl Default for HousekeepingSettings {
    fn default() -> Self {
        HousekeepingSettings {
            every: Duration::from_secs(600),
            outbox_retention: Duration::from_secs(24 * 3600),
        }
    }
}

impl HousekeepingSettings {
    pub fn read(env: &Env) -> Result<Self, ConfigError> {
        let defaults = HousekeepingSettings::default();
        let every = env.positive("HOUSEKEEPING_INTERVAL_SECS", defaults.every.as_secs())?;
        let hours: u64 = env.parse("OUTBOX_RETENTION_HOURS", 24)?;
        if hours > MAX_RETENTION_HOURS {
            return Err(ConfigError::new(
                "OUTBOX_RETENTION_HOURS",
                format!("{hours}: at most {MAX_RETENTION_HOURS} (100 years)"),
            ));
        }
        let outbox_retention = Duration::from_secs(hours * 3600);
        Ok(HousekeepingSettings {
            every: Duration::from_secs(every),
            outbox_retention,
        })
    }
}

/// Purges every `settings.every` until `shutdown`.
pub async fn run(store: Store, settings: HousekeepingSettings, shutdown: CancellationToken) {
    loop {
        purge(&store, &settings).await;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(settings.every) => {}
        }
    }
}

/// One round: each purge on its own, a failure logged and left to the next round.
async fn purge(store: &Store, settings: &HousekeepingSettings) {
    // Bounded by `HousekeepingSettings::read`; a larger value set in code keeps rows for a day.
    let outbox_retention =
        chrono::Duration::from_std(settings.outbox_retention).unwrap_or(chrono::Duration::days(1));
    match store.results().purge_expired().await {
        Ok(n) if n > 0 => tracing::info!(removed = n, "expired task results removed"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not purge expired results"),
    }
    if let Err(e) = store.outbox().purge_sent(outbox_retention).await {
        tracing::warn!(error = %e, "could not purge sent outbox rows");
    }
    if let Err(e) = store.idempotency().purge(IDEMPOTENCY_KEY_RETENTION).await {
        tracing::warn!(error = %e, "could not purge idempotency keys");
    }
    match store
        .chords()
        .purge_before(chrono::Utc::now() - CHORD_RETENTION)
        .await
    {
        Ok(n) if n > 0 => tracing::info!(removed = n, "chords older than 7 days removed"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not purge old chords"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_ten_minutes_and_a_day() {
        let settings = HousekeepingSettings::read(&Env::from_pairs(Vec::<(String, String)>::new()));
        let settings = settings.map(|s| (s.every, s.outbox_retention));
        assert_eq!(
            settings.ok(),
            Some((Duration::from_secs(600), Duration::from_secs(86_400)))
        );
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        for (variable, value) in [
            ("HOUSEKEEPING_INTERVAL_SECS", "0"),
            ("HOUSEKEEPING_INTERVAL_SECS", "soon"),
            ("OUTBOX_RETENTION_HOURS", "18446744073709551615"),
            ("OUTBOX_RETENTION_HOURS", "900000"),
        ] {
            let err = HousekeepingSettings::read(&Env::from_pairs([(variable, value)])).err();
            assert_eq!(
                err.map(|e| e.variable),
                Some(variable.to_owned()),
                "{value}"
            );
        }
    }
}
