//! `activity_logs`: what happened to orders, one line per event, and the archiving of old lines
//! (`archive_old_logs`) in batches that survive a crash at any point.
//!
//! A batch is planned first (a `log_archives` row naming the id range, the cutoff and the object
//! path, committed), then its lines are written to the object store, then — in one transaction —
//! exactly the lines written are deleted and the batch marked done. A run that stopped after
//! planning or after writing finds its unfinished batch, writes the same object again (the
//! lines are still there) and finishes it: every line ends in one archive object, once.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::{Store, StoreError};

repository! {
    /// The `activity_logs` and `log_archives` tables.
    ActivityLogs
}

impl Store {
    /// Order events and their archiving.
    pub fn activity_logs(&self) -> ActivityLogs {
        ActivityLogs::new(self.pool.clone())
    }
}

/// One line of the log, as archived.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, sqlx::FromRow)]
pub struct ActivityLine {
    pub id: i64,
    pub order_id: Option<Uuid>,
    pub event: String,
    pub details: Value,
    pub created_at: DateTime<Utc>,
}

/// A planned archive object: the lines with ids `first_id..=last_id` older than `cutoff`.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ArchiveBatch {
    pub first_id: i64,
    pub last_id: i64,
    pub cutoff: DateTime<Utc>,
    pub path: String,
}

/// Writes one line in the caller's transaction (with the change it describes).
pub async fn record(
    tx: &mut Transaction<'_, Postgres>,
    order_id: Option<Uuid>,
    event: &str,
    details: &Value,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO activity_logs (order_id, event, details) VALUES ($1, $2, $3)")
        .bind(order_id)
        .bind(event)
        .bind(details)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

impl ActivityLogs {
    /// Writes one line on its own.
    pub async fn record(
        &self,
        order_id: Option<Uuid>,
        event: &str,
        details: &Value,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        record(&mut tx, order_id, event, details).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Lines older than `cutoff` still in the table.
    pub async fn count_before(&self, cutoff: DateTime<Utc>) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT count(*) FROM activity_logs WHERE created_at < $1")
                .bind(cutoff)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// The next batch to archive: an unfinished one left by an earlier run, else up to `max`
    /// of the oldest lines before `cutoff`, planned now under `prefix`. `None`: nothing to do.
    pub async fn next_batch(
        &self,
        cutoff: DateTime<Utc>,
        max: i64,
        prefix: &str,
    ) -> Result<Option<ArchiveBatch>, StoreError> {
        let unfinished: Option<ArchiveBatch> = sqlx::query_as(
            "SELECT first_id, last_id, cutoff, path FROM log_archives \
             WHERE NOT done ORDER BY first_id LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        if unfinished.is_some() {
            return Ok(unfinished);
        }
        let range: (Option<i64>, Option<i64>) = sqlx::query_as(
            "SELECT min(id), max(id) FROM (SELECT id FROM activity_logs \
             WHERE created_at < $1 ORDER BY id LIMIT $2) AS oldest",
        )
        .bind(cutoff)
        .bind(max.max(1))
        .fetch_one(&self.pool)
        .await?;
        let (Some(first_id), Some(last_id)) = range else {
            return Ok(None);
        };
        let batch = ArchiveBatch {
            first_id,
            last_id,
            cutoff,
            path: format!("{prefix}/{first_id:020}-{last_id:020}.jsonl.gz"),
        };
        // Two runs planning at once: the second finds the first's row and takes it.
        sqlx::query(
            "INSERT INTO log_archives (first_id, last_id, cutoff, path) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (first_id) DO NOTHING",
        )
        .bind(batch.first_id)
        .bind(batch.last_id)
        .bind(batch.cutoff)
        .bind(&batch.path)
        .execute(&self.pool)
        .await?;
        Ok(Some(batch))
    }

    /// The batch's lines, in id order.
    pub async fn lines(&self, batch: &ArchiveBatch) -> Result<Vec<ActivityLine>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, order_id, event, details, created_at FROM activity_logs \
             WHERE id BETWEEN $1 AND $2 AND created_at < $3 ORDER BY id",
        )
        .bind(batch.first_id)
        .bind(batch.last_id)
        .bind(batch.cutoff)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Deletes exactly the archived lines and marks the batch done, in one transaction.
    pub async fn finish(&self, batch: &ArchiveBatch, archived: &[i64]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM activity_logs WHERE id = ANY($1)")
            .bind(archived)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE log_archives SET done = true, lines = $2 WHERE first_id = $1")
            .bind(batch.first_id)
            .bind(i32::try_from(archived.len()).unwrap_or(i32::MAX))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}
