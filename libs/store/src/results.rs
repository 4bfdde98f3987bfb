//! The result store: one row per task id with its Celery state, retries, progress meta, result
//! or error and an expiry, read by `GET /v1/tasks/{id}`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shopfds_protocol::TaskState;

use crate::{Store, StoreError};

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

/// A state change reported by a worker (or the API, for PENDING/REVOKED).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskStateUpdate {
    pub task_id: String,
    /// Empty keeps the stored name (a worker that only knows the id).
    pub name: String,
    /// Empty keeps the stored queue.
    pub queue: String,
    pub state: TaskState,
    pub retries: i32,
    /// `{ "current", "total", "message" }` for PROGRESS.
    pub progress: Option<serde_json::Value>,
    pub result: Option<serde_json::Value>,
    pub error: Option<serde_json::Value>,
    /// `None` keeps the stored expiry.
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub task_id: String,
    pub name: String,
    pub queue: String,
    pub state: TaskState,
    pub retries: i32,
    pub progress: Option<serde_json::Value>,
    pub result: Option<serde_json::Value>,
    pub error: Option<serde_json::Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

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

impl Store {
    /// Upserts the task's row. A ready (terminal) state is never replaced by a non-ready one: a
    /// late STARTED from a redelivered message must not hide SUCCESS. Otherwise the update
    /// replaces state, progress, result and error; retries keep the maximum seen; `updated_at`
    /// is now; `expires_at` is replaced when given.
    pub async fn record_task_state(&self, update: &TaskStateUpdate) -> Result<(), StoreError> {
        // From the protocol crate, so the SQL cannot drift from `TaskState::is_ready`.
        let ready: Vec<&str> = ALL_STATES
            .iter()
            .filter(|s| s.is_ready())
            .map(|s| s.as_str())
            .collect();
        sqlx::query(
            "INSERT INTO task_results \
                 (task_id, name, queue, state, retries, progress, result, error, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
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
        .bind(&update.task_id)
        .bind(&update.name)
        .bind(&update.queue)
        .bind(update.state.as_str())
        .bind(update.retries)
        .bind(&update.progress)
        .bind(&update.result)
        .bind(&update.error)
        .bind(update.expires_at)
        .bind(ready)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The task's row; an expired row reads as unknown, as in Celery's backends.
    pub async fn task_result(&self, task_id: &str) -> Result<Option<TaskRecord>, StoreError> {
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
    pub async fn purge_expired_results(&self) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM task_results WHERE expires_at < now()")
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
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
