//! Once-only side effects. A task that mails, charges or ships takes a guard keyed by its task
//! id or a business key; a second delivery of the same message waits for the first, then sees
//! what it recorded and skips the effect.

use sqlx::{Postgres, Transaction};

use crate::{Store, StoreError};

/// An open transaction holding the key's advisory lock. [`complete`](Self::complete) records the
/// key and commits; dropping the guard rolls back, releasing the lock without recording, so the
/// effect runs again on redelivery.
#[derive(Debug)]
pub struct OnceGuard {
    tx: Transaction<'static, Postgres>,
    key: String,
    done: Option<serde_json::Value>,
}

impl Store {
    /// Begins a transaction, takes `pg_advisory_xact_lock(hashtextextended(key, 0))` so two
    /// deliveries of the same task serialize, and reads what a previous run recorded. The guard
    /// holds a pooled connection until it completes or drops: keep the side effect short.
    pub async fn begin_once(&self, key: &str) -> Result<OnceGuard, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(key)
            .execute(&mut *tx)
            .await?;
        let done: Option<serde_json::Value> =
            sqlx::query_scalar("SELECT result FROM processed_tasks WHERE key = $1")
                .bind(key)
                .fetch_optional(&mut *tx)
                .await?;
        Ok(OnceGuard {
            tx,
            key: key.to_owned(),
            done,
        })
    }
}

impl OnceGuard {
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The result recorded by the run that completed first, if any.
    pub fn already_done(&self) -> Option<&serde_json::Value> {
        self.done.as_ref()
    }

    /// The guard's transaction, to write business data atomically with the completion record
    /// (e.g. the invoice URL and "invoice done" commit together).
    pub fn transaction(&mut self) -> &mut Transaction<'static, Postgres> {
        &mut self.tx
    }

    /// Records the key with `task_id` and `result`, commits, and releases the lock. On an
    /// already-done key the first record is kept.
    pub async fn complete(
        mut self,
        task_id: &str,
        result: serde_json::Value,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO processed_tasks (key, task_id, result) VALUES ($1, $2, $3) \
             ON CONFLICT (key) DO NOTHING",
        )
        .bind(&self.key)
        .bind(task_id)
        .bind(result)
        .execute(&mut *self.tx)
        .await?;
        self.tx.commit().await?;
        Ok(())
    }
}
