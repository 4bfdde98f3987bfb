//! Chords counted in PostgreSQL. Each header part that succeeds is recorded once (keyed by task
//! id, so a redelivery does not count twice) and increments its chord's counter under the row
//! lock; the call that brings the counter to the chord's size publishes the body inside the same
//! transaction, so the body is published once, or again with the same ids if the worker died
//! before the commit. A failed part marks the chord FAILURE once; later parts see it and stop.

use std::future::Future;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::StoreError;

/// One succeeded header part.
#[derive(Debug, Clone, PartialEq)]
pub struct ChordPart<'a> {
    pub group_id: &'a str,
    /// Number of parts in the header.
    pub size: usize,
    pub task_id: &'a str,
    /// Position in the header; the body gets the results in this order.
    pub group_index: Option<i64>,
    pub result: &'a Value,
}

/// What recording a part did.
#[derive(Debug, Clone, PartialEq)]
pub enum ChordProgress {
    /// Counted; `done` of `size` parts have succeeded.
    Counted { done: usize, size: usize },
    /// This was the last part: the body was published with the results, in header order.
    Completed { results: Vec<Value> },
    /// This task id was already counted (a redelivery): nothing to do.
    AlreadyCounted,
    /// Another part failed: the body will not run.
    ChordFailed,
}

/// Recording a part failed: in the database, or publishing the body (then nothing was kept).
#[derive(Debug, thiserror::Error)]
pub enum ChordError<E: std::error::Error + 'static> {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("could not publish the chord body: {0}")]
    Publish(#[source] E),
}

/// A chord's row, for inspection and tests.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ChordRecord {
    pub group_id: String,
    pub size: i32,
    pub done: i32,
    pub state: String,
    pub failed_task_id: Option<String>,
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

fn size_i32(size: usize) -> Result<i32, StoreError> {
    i32::try_from(size)
        .ok()
        .filter(|s| *s > 0)
        .ok_or_else(|| StoreError::Corrupt(format!("chord size {size} out of range")))
}

repository! {
    /// The `chords` and `chord_parts` tables.
    Chords
}

impl Chords {
    /// Records a succeeded part. When it is the last one, `publish_body` runs with the results
    /// (header order) before the commit; if it fails, nothing is recorded and the error is
    /// returned, so the caller can requeue the part's message and try again.
    pub async fn part_succeeded<F, Fut, E>(
        &self,
        part: &ChordPart<'_>,
        publish_body: F,
    ) -> Result<ChordProgress, ChordError<E>>
    where
        F: FnOnce(Vec<Value>) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: std::error::Error + 'static,
    {
        let size = size_i32(part.size)?;
        let index = part.group_index.and_then(|i| i32::try_from(i).ok());
        let mut tx = self.pool.begin().await.map_err(StoreError::from)?;
        sqlx::query("INSERT INTO chords (group_id, size) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(part.group_id)
            .bind(size)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from)?;
        let inserted = sqlx::query(
            "INSERT INTO chord_parts (group_id, task_id, group_index, result) \
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(part.group_id)
        .bind(part.task_id)
        .bind(index)
        .bind(part.result)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from)?
        .rows_affected();
        if inserted == 0 {
            tx.rollback().await.map_err(StoreError::from)?;
            return Ok(ChordProgress::AlreadyCounted);
        }
        // Takes the chord's row lock until commit: concurrent parts count one after the other.
        let (done, size, state): (i32, i32, String) = sqlx::query_as(
            "UPDATE chords SET done = done + 1, updated_at = now() WHERE group_id = $1 \
             RETURNING done, size, state",
        )
        .bind(part.group_id)
        .fetch_one(&mut *tx)
        .await
        .map_err(StoreError::from)?;
        if state == "FAILURE" {
            tx.commit().await.map_err(StoreError::from)?;
            return Ok(ChordProgress::ChordFailed);
        }
        if done != size {
            if done > size {
                tracing::warn!(group_id = %part.group_id, done, size, "chord counted more parts than its size");
            }
            tx.commit().await.map_err(StoreError::from)?;
            return Ok(ChordProgress::Counted {
                done: usize::try_from(done).unwrap_or_default(),
                size: usize::try_from(size).unwrap_or_default(),
            });
        }
        let results: Vec<Value> = sqlx::query_scalar(
            "SELECT result FROM chord_parts WHERE group_id = $1 \
             ORDER BY group_index NULLS LAST, seq",
        )
        .bind(part.group_id)
        .fetch_all(&mut *tx)
        .await
        .map_err(StoreError::from)?;
        publish_body(results.clone())
            .await
            .map_err(ChordError::Publish)?;
        sqlx::query("UPDATE chords SET state = 'SUCCESS', updated_at = now() WHERE group_id = $1")
            .bind(part.group_id)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from)?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(ChordProgress::Completed { results })
    }

    /// Records that a part failed for good. True for the one call that failed the chord (it
    /// reports the body's failure and fires its errbacks); false when the chord had already
    /// failed or completed.
    pub async fn part_failed(
        &self,
        group_id: &str,
        size: usize,
        task_id: &str,
        reason: &str,
    ) -> Result<bool, StoreError> {
        let size = size_i32(size)?;
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO chords (group_id, size) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(group_id)
            .bind(size)
            .execute(&mut *tx)
            .await?;
        let failed = sqlx::query(
            "UPDATE chords SET state = 'FAILURE', failed_task_id = $2, reason = $3, \
             updated_at = now() WHERE group_id = $1 AND state = 'PENDING'",
        )
        .bind(group_id)
        .bind(task_id)
        .bind(reason)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(failed == 1)
    }

    /// The chord counted under `group_id`, if any part reported yet.
    pub async fn get(&self, group_id: &str) -> Result<Option<ChordRecord>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT group_id, size, done, state, failed_task_id, reason, created_at, updated_at \
             FROM chords WHERE group_id = $1",
        )
        .bind(group_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Deletes chords (and their parts) created before `before`: the clean-up that runs with the
    /// result expiry. Returns how many chords went.
    pub async fn purge_before(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        Ok(sqlx::query("DELETE FROM chords WHERE created_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }
}
