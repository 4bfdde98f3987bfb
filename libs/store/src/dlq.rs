//! dlq-reprocessor's lineage (`dlq_replays`): one row per message taken out of a dead-letter
//! queue, written after the broker confirmed its new copy and before the dead letter is acked,
//! with the arguments before and after an edit, who and when.

use serde_json::Value;

use crate::{Store, StoreError};

repository! {
    /// The `dlq_replays` table.
    DlqReplays
}

impl Store {
    /// dlq-reprocessor's lineage of replays.
    pub fn dlq_replays(&self) -> DlqReplays {
        DlqReplays::new(self.pool.clone())
    }
}

/// One replay as recorded.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ReplayRecord {
    pub task_id: Option<String>,
    pub task: Option<String>,
    pub dead_letter_queue: String,
    /// `replayed` or `parked`.
    pub outcome: String,
    pub replays: i32,
    pub reason: Option<String>,
    /// `[args, kwargs]` as dead-lettered.
    pub original_args: Option<Value>,
    /// `[args, kwargs]` as replayed, when edited.
    pub edited_args: Option<Value>,
    pub replayed_by: String,
}

impl DlqReplays {
    pub async fn record(&self, r: &ReplayRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO dlq_replays (task_id, task, dead_letter_queue, outcome, replays, reason, \
             original_args, edited_args, replayed_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&r.task_id)
        .bind(&r.task)
        .bind(&r.dead_letter_queue)
        .bind(&r.outcome)
        .bind(r.replays)
        .bind(&r.reason)
        .bind(&r.original_args)
        .bind(&r.edited_args)
        .bind(&r.replayed_by)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The replays of task `task_id`, oldest first.
    pub async fn of_task(&self, task_id: &str) -> Result<Vec<ReplayRecord>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT task_id, task, dead_letter_queue, outcome, replays, reason, original_args, \
             edited_args, replayed_by FROM dlq_replays WHERE task_id = $1 ORDER BY id",
        )
        .bind(task_id)
        .fetch_all(&self.pool)
        .await?)
    }
}
