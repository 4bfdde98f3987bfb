//! beat-scheduler's tables: `beat_schedules` (what runs when) and `beat_slots` (what was
//! published). A slot is claimed by inserting its row in the same transaction as its outbox
//! message: the primary key `(schedule, planned_at)` lets one replica's insert through and turns
//! every other replica's into nothing, so a slot is published once however many replicas plan
//! it, and only after RabbitMQ confirmed it does the outbox row count as sent (the relay).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::outbox::OutboxMessage;
use crate::{PendingTask, Store, StoreError};

repository! {
    /// The `beat_schedules` and `beat_slots` tables.
    Beat
}

impl Store {
    /// beat-scheduler's schedules and slots.
    pub fn beat(&self) -> Beat {
        Beat::new(self.pool.clone())
    }
}

/// One schedule as stored.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ScheduleRow {
    pub name: String,
    pub task: String,
    pub cron: Option<String>,
    pub every_secs: Option<i32>,
    pub kwargs: Value,
    pub queue: String,
    /// `skip` or `latest`.
    pub missed: String,
    pub enabled: bool,
    /// `file` or `cli`.
    pub source: String,
}

impl Beat {
    /// Every schedule, by name.
    pub async fn schedules(&self) -> Result<Vec<ScheduleRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT name, task, cron, every_secs, kwargs, queue, missed, enabled, source \
             FROM beat_schedules ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Seeds the file's schedules: a missing one is inserted, one still as the file made it
    /// (`source = 'file'`) takes the file's definition (its `enabled` kept: a pause survives a
    /// restart), one a person added or edited (`source = 'cli'`) is left alone.
    pub async fn seed(&self, rows: &[ScheduleRow]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for row in rows {
            sqlx::query(
                "INSERT INTO beat_schedules (name, task, cron, every_secs, kwargs, queue, missed, enabled, source) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'file') \
                 ON CONFLICT (name) DO UPDATE SET task = EXCLUDED.task, cron = EXCLUDED.cron, \
                     every_secs = EXCLUDED.every_secs, kwargs = EXCLUDED.kwargs, queue = EXCLUDED.queue, \
                     missed = EXCLUDED.missed, updated_at = now() \
                 WHERE beat_schedules.source = 'file'",
            )
            .bind(&row.name)
            .bind(&row.task)
            .bind(&row.cron)
            .bind(row.every_secs)
            .bind(&row.kwargs)
            .bind(&row.queue)
            .bind(&row.missed)
            .bind(row.enabled)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Adds a schedule, or replaces one of that name (it becomes a person's: `source = 'cli'`).
    pub async fn put(&self, row: &ScheduleRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO beat_schedules (name, task, cron, every_secs, kwargs, queue, missed, enabled, source) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'cli') \
             ON CONFLICT (name) DO UPDATE SET task = EXCLUDED.task, cron = EXCLUDED.cron, \
                 every_secs = EXCLUDED.every_secs, kwargs = EXCLUDED.kwargs, queue = EXCLUDED.queue, \
                 missed = EXCLUDED.missed, enabled = EXCLUDED.enabled, source = 'cli', updated_at = now()",
        )
        .bind(&row.name)
        .bind(&row.task)
        .bind(&row.cron)
        .bind(row.every_secs)
        .bind(&row.kwargs)
        .bind(&row.queue)
        .bind(&row.missed)
        .bind(row.enabled)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Pauses (`false`) or resumes (`true`) a schedule; whether it exists.
    pub async fn set_enabled(&self, name: &str, enabled: bool) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE beat_schedules SET enabled = $2, updated_at = now() WHERE name = $1",
        )
        .bind(name)
        .bind(enabled)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Removes a schedule; whether it existed. (A schedule of the file comes back at the next
    /// start unless it is removed from the file too.)
    pub async fn remove(&self, name: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM beat_schedules WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// The latest planned time published of each schedule.
    pub async fn last_planned(&self) -> Result<HashMap<String, DateTime<Utc>>, StoreError> {
        let rows: Vec<(String, DateTime<Utc>)> =
            sqlx::query_as("SELECT schedule, max(planned_at) FROM beat_slots GROUP BY schedule")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().collect())
    }

    /// Claims slot `(schedule, planned_at)` and, if this call got it, writes its message to the
    /// outbox with its PENDING row, in one transaction; whether this call got it.
    pub async fn claim(
        &self,
        schedule: &str,
        planned_at: DateTime<Utc>,
        message: &OutboxMessage,
        pending: &PendingTask,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let claimed = sqlx::query(
            "INSERT INTO beat_slots (schedule, planned_at, task_id) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
        )
        .bind(schedule)
        .bind(planned_at)
        .bind(&message.task_id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if claimed {
            crate::outbox::insert(
                &mut tx,
                std::slice::from_ref(message),
                std::slice::from_ref(pending),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(claimed)
    }

    /// Deletes slots older than `older_than`, except each schedule's latest (it is where the
    /// next run is counted from); the rows deleted.
    pub async fn purge_slots(&self, older_than: chrono::Duration) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM beat_slots s WHERE s.planned_at < now() - $1 \
             AND s.planned_at < (SELECT max(m.planned_at) FROM beat_slots m WHERE m.schedule = s.schedule)",
        )
        .bind(older_than)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}
