//! What a task's result looks like to everyone who reads or writes it: the state change a worker
//! reports and the record a reader (`GET /v1/tasks/{id}`, a Celery client) gets back, whatever
//! result backend keeps them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::TaskState;

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
