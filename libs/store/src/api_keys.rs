//! The `api_keys` table: keys made by `order-api keys create`, looked up by their public id.
//! Only hashes are stored; scopes are kept as names and interpreted by `shopfds-auth`.

use chrono::{DateTime, Utc};

use crate::{Store, StoreError};

repository! {
    /// The `api_keys` table.
    ApiKeys
}

impl Store {
    /// API keys made by `order-api keys create`.
    pub fn api_keys(&self) -> ApiKeys {
        ApiKeys::new(self.pool.clone())
    }
}

/// A key to store: its public id, a name for people, scope names and the hex SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewApiKey {
    pub id: String,
    pub name: String,
    pub scopes: Vec<String>,
    pub hash: String,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ApiKeyRecord {
    pub id: String,
    pub name: String,
    pub scopes: Vec<String>,
    pub hash: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl ApiKeys {
    pub async fn insert(&self, key: &NewApiKey) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO api_keys (id, name, scopes, hash) VALUES ($1, $2, $3, $4)")
            .bind(&key.id)
            .bind(&key.name)
            .bind(&key.scopes)
            .bind(&key.hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The key with this id, revoked or not.
    pub async fn find(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, name, scopes, hash, created_at, revoked_at FROM api_keys WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Every key, oldest first.
    pub async fn list(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, name, scopes, hash, created_at, revoked_at FROM api_keys \
             ORDER BY created_at, id",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Marks the key revoked; `false` when there is no such key or it was revoked already.
    pub async fn revoke(&self, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL",
        )
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
