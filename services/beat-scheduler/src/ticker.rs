//! The tick: each replica, every `BEAT_TICK_MS`, reads the schedules and each one's latest
//! published slot from PostgreSQL, works out the due slots ([`crate::plan::due`]) and claims
//! each with its task message in one transaction (`shopfds_store::beat::Beat::claim`). A slot
//! another replica claimed first is skipped; the relay publishes what was claimed, with
//! publisher confirms. There is no leader: a replica that dies leaves the others ticking, so a
//! slot is late by at most a tick, and never doubled.
//!
//! Schedules are read every tick, so a schedule added, changed, paused or removed with
//! `beat-scheduler schedules …` takes effect within a tick on every replica, without a restart.

use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use shopfds_protocol::TaskMessage;
use shopfds_store::{OutboxMessage, PendingTask, Store, StoreError};
use tokio_util::sync::CancellationToken;

use crate::plan::{self, Due};
use crate::schedule::Schedule;

/// Slots older than this are deleted (each schedule's latest is kept).
const KEEP_SLOTS: chrono::Duration = chrono::Duration::days(2);
/// How often a replica purges old slots.
const PURGE_EVERY: Duration = Duration::from_secs(3600);

#[derive(Clone)]
pub struct Ticker {
    pub store: Store,
    pub timezone: Tz,
}

impl Ticker {
    /// One tick at `now`: the slots this replica claimed (and wrote to the outbox).
    pub async fn tick(&self, now: DateTime<Utc>) -> Result<Vec<Due>, StoreError> {
        let beat = self.store.beat();
        let schedules: Vec<Schedule> = beat
            .schedules()
            .await?
            .iter()
            .filter_map(|row| match Schedule::from_row(row) {
                Ok(schedule) => Some(schedule),
                Err(e) => {
                    tracing::warn!(error = %e, "schedule skipped");
                    None
                }
            })
            .collect();
        let last = beat.last_planned().await?;
        let mut claimed = Vec::new();
        for due in plan::due(&schedules, &last, now, self.timezone) {
            let Some(schedule) = schedules.iter().find(|s| s.name == due.schedule) else {
                continue;
            };
            let message = TaskMessage::new(schedule.task.as_str(), schedule.kwargs.clone());
            let outbox = OutboxMessage::task(&message, &schedule.queue);
            let pending = PendingTask::task(&message, &schedule.queue);
            if beat
                .claim(&due.schedule, due.planned_at, &outbox, &pending)
                .await?
            {
                tracing::info!(
                    schedule = %due.schedule,
                    task = %schedule.task,
                    task_id = %message.id(),
                    planned_at = %due.planned_at,
                    "slot claimed"
                );
                claimed.push(due);
            }
        }
        Ok(claimed)
    }

    /// Ticks every `every` until `shutdown`; purges old slots once an hour. A failed tick
    /// (database away) is logged and the next one tries again: slots missed meanwhile follow
    /// their schedule's missed-run policy.
    pub async fn run(self, every: Duration, shutdown: CancellationToken) {
        let mut last_purge: Option<tokio::time::Instant> = None;
        loop {
            if let Err(e) = self.tick(Utc::now()).await {
                tracing::warn!(error = %e, "beat tick failed");
            }
            if last_purge.is_none_or(|at| at.elapsed() >= PURGE_EVERY) {
                match self.store.beat().purge_slots(KEEP_SLOTS).await {
                    Ok(purged) => {
                        last_purge = Some(tokio::time::Instant::now());
                        if purged > 0 {
                            tracing::info!(purged, "old beat slots purged");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "purging old beat slots failed"),
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
        }
    }
}
