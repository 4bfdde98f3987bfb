//! Once-only side effects. A task that mails, charges or ships takes a guard keyed by its task
//! id or a business key; a second delivery of the same message waits for the first, then sees
//! what it recorded and skips the effect.
//!
//! Once the effect has happened, its record must land: [`OnceGuard::complete`] writes it in the
//! guard's transaction, and if that connection is lost (the database restarted, the network
//! cut) writes it again on a fresh connection, for as long as the database stays unreachable.
//! Run the effect and `complete` inside the worker's `TaskContext::effect`, so neither a time
//! limit nor the end of a shutdown grace period cuts between them.

use std::time::Duration;

use sqlx::{PgPool, Postgres, Transaction};

use crate::StoreError;

/// One attempt to write the record may take this long before the connection counts as lost
/// (a half-open socket would otherwise wait out the kernel's TCP timeout).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// The pause between two attempts starts here and doubles up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

const RECORD: &str = "INSERT INTO processed_tasks (key, task_id, result) VALUES ($1, $2, $3) \
                      ON CONFLICT (key) DO NOTHING";

/// An open transaction holding the key's advisory lock. [`complete`](Self::complete) records the
/// key and commits; dropping the guard rolls back, releasing the lock without recording, so the
/// effect runs again on redelivery.
#[derive(Debug)]
pub struct OnceGuard {
    tx: Transaction<'static, Postgres>,
    pool: PgPool,
    key: String,
    done: Option<serde_json::Value>,
}

repository! {
    /// The `processed_tasks` table and the advisory locks keyed like it.
    Once
}

impl Once {
    /// Begins a transaction, takes `pg_advisory_xact_lock(hashtextextended(key, 0))` so two
    /// deliveries of the same task serialize, and reads what a previous run recorded. The guard
    /// holds a pooled connection until it completes or drops: keep the side effect short.
    pub async fn begin(&self, key: &str) -> Result<OnceGuard, StoreError> {
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
            pool: self.pool.clone(),
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
    /// already-done key the first record is kept. If the guard's connection is lost, the record
    /// is written on a fresh connection, retried (100 ms doubling to 5 s) until the database
    /// answers; only an error that is not about reaching the database, or a closed pool (the
    /// service is stopping), is returned.
    pub async fn complete(
        mut self,
        task_id: &str,
        result: serde_json::Value,
    ) -> Result<(), StoreError> {
        let first = async {
            sqlx::query(RECORD)
                .bind(&self.key)
                .bind(task_id)
                .bind(&result)
                .execute(&mut *self.tx)
                .await?;
            self.tx.commit().await
        };
        let lost = match tokio::time::timeout(ATTEMPT_TIMEOUT, first).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => match StoreError::from(e) {
                e if e.is_unavailable() => e.to_string(),
                e => return Err(e),
            },
            Err(_) => format!("no answer within {}s", ATTEMPT_TIMEOUT.as_secs()),
        };
        // The transaction is gone with its connection (and so is the lock); whether its commit
        // landed is unknown, and the insert below is a no-op if it did.
        tracing::warn!(key = %self.key, error = %lost, "once-only record not written: the database connection was lost; writing it again until it lands");
        let pool = self.pool.clone();
        let mut pause = RETRY_FIRST;
        loop {
            tokio::time::sleep(pause).await;
            let attempt = sqlx::query(RECORD)
                .bind(&self.key)
                .bind(task_id)
                .bind(&result)
                .execute(&pool);
            let error = match tokio::time::timeout(ATTEMPT_TIMEOUT, attempt).await {
                Ok(Ok(_)) => {
                    tracing::info!(key = %self.key, "once-only record written after the database came back");
                    return Ok(());
                }
                Ok(Err(sqlx::Error::PoolClosed)) => {
                    return Err(StoreError::Unavailable(sqlx::Error::PoolClosed));
                }
                Ok(Err(e)) => match StoreError::from(e) {
                    e if e.is_unavailable() => e.to_string(),
                    e => return Err(e),
                },
                Err(_) => format!("no answer within {}s", ATTEMPT_TIMEOUT.as_secs()),
            };
            tracing::warn!(key = %self.key, %error, retry_in_ms = pause.as_millis(), "once-only record still not written");
            pause = (pause * 2).min(RETRY_MAX);
        }
    }
}
