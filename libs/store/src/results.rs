//! The result store: one row per task id with its Celery state, retries, progress meta, result
//! or error and an expiry, read by `GET /v1/tasks/{id}`. A ready (terminal) state is never
//! replaced by a non-ready one; an expired row reads as unknown until [`Results::purge_expired`] deletes it.
//! A task's row is created PENDING with its message (`insert_pending`), so its id is known
//! before a worker has seen it.

use chrono::{DateTime, Utc};
use shopfds_protocol::TaskState;
pub use shopfds_protocol::result::{TaskRecord, TaskStateUpdate};
use sqlx::{Postgres, Transaction};

use crate::StoreError;
use crate::outbox::PendingTask;

const ALL_STATES: [TaskState; 9] = [
    TaskState::Pending,
    TaskState::Received,
    TaskState::Started,
    TaskState::Progress,
    TaskState::Retry,
    TaskState::Success,
    TaskState::Failure,
    TaskState::Revoked,
    TaskState::Rejected,
];

#[derive(sqlx::FromRow)]
struct Row {
    task_id: String,
    name: String,
    queue: String,
    state: String,
    retries: i32,
    progress: Option<serde_json::Value>,
    result: Option<serde_json::Value>,
    error: Option<serde_json::Value>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
}

impl TryFrom<Row> for TaskRecord {
    type Error = StoreError;

    fn try_from(r: Row) -> Result<Self, StoreError> {
        let state = r
            .state
            .parse::<TaskState>()
            .map_err(|e| StoreError::Corrupt(format!("task_results row {:?}: {e}", r.task_id)))?;
        Ok(TaskRecord {
            task_id: r.task_id,
            name: r.name,
            queue: r.queue,
            state,
            retries: r.retries,
            progress: r.progress,
            result: r.result,
            error: r.error,
            created_at: r.created_at,
            updated_at: r.updated_at,
            expires_at: r.expires_at,
        })
    }
}

repository! {
    /// The `task_results` table.
    Results
}

impl Results {
    /// Upserts the task's row. A ready (terminal) state is never replaced by a non-ready one: a
    /// late STARTED from a redelivered message must not hide SUCCESS. Otherwise the update
    /// replaces state, progress, result and error; retries keep the maximum seen; `updated_at`
    /// is now; `expires_at` is replaced when given.
    pub async fn record(&self, update: &TaskStateUpdate) -> Result<(), StoreError> {
        self.record_many(std::slice::from_ref(update)).await
    }

    /// Upserts many rows in one statement, with the rules of [`Results::record`]. Task
    /// ids must be distinct (coalesce first): PostgreSQL refuses to update one row twice in a
    /// statement.
    pub async fn record_many(&self, updates: &[TaskStateUpdate]) -> Result<(), StoreError> {
        if updates.is_empty() {
            return Ok(());
        }
        let ready: Vec<&str> = ALL_STATES
            .iter()
            .filter(|s| s.is_ready())
            .map(|s| s.as_str())
            .collect();
        let ids: Vec<&str> = updates.iter().map(|u| u.task_id.as_str()).collect();
        let names: Vec<&str> = updates.iter().map(|u| u.name.as_str()).collect();
        let queues: Vec<&str> = updates.iter().map(|u| u.queue.as_str()).collect();
        let states: Vec<&str> = updates.iter().map(|u| u.state.as_str()).collect();
        let retries: Vec<i32> = updates.iter().map(|u| u.retries).collect();
        let progress: Vec<Option<serde_json::Value>> =
            updates.iter().map(|u| u.progress.clone()).collect();
        let results: Vec<Option<serde_json::Value>> =
            updates.iter().map(|u| u.result.clone()).collect();
        let errors: Vec<Option<serde_json::Value>> =
            updates.iter().map(|u| u.error.clone()).collect();
        let expires: Vec<Option<DateTime<Utc>>> = updates.iter().map(|u| u.expires_at).collect();
        sqlx::query(
            "INSERT INTO task_results \
                 (task_id, name, queue, state, retries, progress, result, error, expires_at) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int4[], \
                                  $6::jsonb[], $7::jsonb[], $8::jsonb[], $9::timestamptz[]) \
             ON CONFLICT (task_id) DO UPDATE SET \
                 name = COALESCE(NULLIF(EXCLUDED.name, ''), task_results.name), \
                 queue = COALESCE(NULLIF(EXCLUDED.queue, ''), task_results.queue), \
                 state = EXCLUDED.state, \
                 retries = GREATEST(task_results.retries, EXCLUDED.retries), \
                 progress = EXCLUDED.progress, \
                 result = EXCLUDED.result, \
                 error = EXCLUDED.error, \
                 updated_at = now(), \
                 expires_at = COALESCE(EXCLUDED.expires_at, task_results.expires_at) \
             WHERE EXCLUDED.state = ANY($10::text[]) \
                OR NOT task_results.state = ANY($10::text[])",
        )
        .bind(ids)
        .bind(names)
        .bind(queues)
        .bind(states)
        .bind(retries)
        .bind(progress)
        .bind(results)
        .bind(errors)
        .bind(expires)
        .bind(ready)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The task's row; an expired row reads as unknown, as in Celery's backends.
    pub async fn get(&self, task_id: &str) -> Result<Option<TaskRecord>, StoreError> {
        sqlx::query_as::<_, Row>(
            "SELECT task_id, name, queue, state, retries, progress, result, error, created_at, \
                    updated_at, expires_at \
             FROM task_results \
             WHERE task_id = $1 AND (expires_at IS NULL OR expires_at >= now())",
        )
        .bind(task_id)
        .fetch_optional(&self.pool)
        .await?
        .map(TaskRecord::try_from)
        .transpose()
    }

    /// Deletes expired rows (Celery beat's `celery.backend_cleanup`).
    pub async fn purge_expired(&self) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM task_results WHERE expires_at < now()")
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// PENDING rows for tasks about to be published (a fanned-out group), so their ids are
    /// queryable at once; rows that exist already are left alone.
    pub async fn record_pending(&self, pending: &[PendingTask]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        insert_pending(&mut tx, pending).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// PENDING rows for tasks not yet in the result store, inside the caller's transaction; a row
/// that exists is left alone.
pub(crate) async fn insert_pending(
    tx: &mut Transaction<'static, Postgres>,
    pending: &[PendingTask],
) -> Result<(), StoreError> {
    if pending.is_empty() {
        return Ok(());
    }
    let task_ids: Vec<&str> = pending.iter().map(|p| p.task_id.as_str()).collect();
    let names: Vec<&str> = pending.iter().map(|p| p.name.as_str()).collect();
    let queues: Vec<&str> = pending.iter().map(|p| p.queue.as_str()).collect();
    sqlx::query(
        "INSERT INTO task_results (task_id, name, queue, state) \
         SELECT t.task_id, t.name, t.queue, 'PENDING' \
         FROM UNNEST($1::text[], $2::text[], $3::text[]) AS t (task_id, name, queue) \
         ON CONFLICT (task_id) DO NOTHING",
    )
    .bind(task_ids)
    .bind(names)
    .bind(queues)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_is_listed_once() {
        for s in ALL_STATES {
            assert_eq!(s.as_str().parse::<TaskState>().ok(), Some(s));
        }
        let mut names: Vec<&str> = ALL_STATES.iter().map(|s| s.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL_STATES.len());
    }
}
