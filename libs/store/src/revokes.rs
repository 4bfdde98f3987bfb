//! The `revoked_tasks` table: where a worker's revokes outlive it
//! ([`shopfds_broker::monitor::revoke`]). Adding is idempotent and says which ids are new;
//! reading returns the unexpired rows revoked at or after a time. Expired rows are deleted by
//! each write.

use std::future::Future;
use std::pin::Pin;

use chrono::{DateTime, Utc};
use shopfds_broker::monitor::revoke::{RevokeStore, Revokes};

use crate::{Store, StoreError};

repository! {
    /// The `revoked_tasks` table.
    RevokedTasks
}

impl Store {
    /// Revoked task ids, shared by every worker.
    pub fn revoked_tasks(&self) -> RevokedTasks {
        RevokedTasks::new(self.pool.clone())
    }
}

impl RevokedTasks {
    /// Stores `ids` as revoked at `at` until `expires_at`; the ids not stored before.
    pub async fn add(
        &self,
        ids: &[String],
        at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<Vec<String>, StoreError> {
        sqlx::query("DELETE FROM revoked_tasks WHERE expires_at < now()")
            .execute(&self.pool)
            .await?;
        let new: Vec<(String,)> = sqlx::query_as(
            "INSERT INTO revoked_tasks (task_id, revoked_at, expires_at) \
             SELECT id, $2, $3 FROM unnest($1::text[]) AS id \
             ON CONFLICT (task_id) DO NOTHING RETURNING task_id",
        )
        .bind(ids)
        .bind(at)
        .bind(expires_at)
        .fetch_all(&self.pool)
        .await?;
        Ok(new.into_iter().map(|(id,)| id).collect())
    }

    /// The unexpired revokes revoked at or after `since` (all for `None`).
    pub async fn since(&self, since: Option<DateTime<Utc>>) -> Result<Revokes, StoreError> {
        Ok(sqlx::query_as(
            "SELECT task_id, revoked_at FROM revoked_tasks \
             WHERE expires_at > now() AND ($1::timestamptz IS NULL OR revoked_at >= $1) \
             ORDER BY revoked_at",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?)
    }
}

type Boxed<'a, T> = Pin<Box<dyn Future<Output = Result<T, String>> + Send + 'a>>;

impl RevokeStore for RevokedTasks {
    fn add<'a>(
        &'a self,
        ids: &'a [String],
        at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Boxed<'a, Vec<String>> {
        Box::pin(async move {
            RevokedTasks::add(self, ids, at, expires_at)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn since(&self, since: Option<DateTime<Utc>>) -> Boxed<'_, Revokes> {
        Box::pin(async move {
            RevokedTasks::since(self, since)
                .await
                .map_err(|e| e.to_string())
        })
    }
}
