//! HTTP `Idempotency-Key`s, scoped to a caller. A key is unique per `(scope, key)`: the scope is
//! the caller's API key id (empty for an anonymous caller), so one caller can neither replay nor
//! block another caller's order by using the same key. Each key is stored with a hash of the
//! request and the answer it got, in the transaction that wrote the order (`claim`), so a key
//! and its order become visible together; a repeated request with the same hash is answered
//! from the stored answer, with another hash it is a conflict. Keys are forgotten after a
//! retention ([`IdempotencyKeys::purge`]); after that the same key makes a new order.

use serde::{Deserialize, Serialize};
use sqlx::{Postgres, Transaction};

use crate::StoreError;

/// The `Idempotency-Key` header, whose key it is and a hash of the request it came with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRequest {
    /// The caller's API key id; empty for an anonymous caller.
    pub scope: String,
    pub key: String,
    pub request_hash: String,
}

/// The HTTP answer stored with an idempotency key, replayed verbatim for a repeated request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredResponse {
    pub status: u16,
    pub body: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CreateOutcome {
    /// The order, its outbox rows and task rows were written.
    Created,
    /// The key was used before with the same request: nothing was written, answer this again.
    Replayed(StoredResponse),
    /// The key was used before with a different request (HTTP 409); nothing was written.
    KeyConflict,
}

#[derive(sqlx::FromRow)]
struct IdempotencyRow {
    request_hash: String,
    response_status: Option<i32>,
    response_body: Option<serde_json::Value>,
}

const SELECT_KEY: &str = "SELECT request_hash, response_status, response_body \
                          FROM idempotency_keys WHERE scope = $1 AND key = $2";

/// What claiming a key found.
pub(crate) enum KeyCheck {
    /// The key is ours now (inserted in the open transaction).
    Claimed,
    Settled(CreateOutcome),
    /// The conflicting row disappeared before we could read it (purged); try again.
    Vanished,
}

repository! {
    /// The `idempotency_keys` table.
    IdempotencyKeys
}

impl IdempotencyKeys {
    /// What `orders().create` would answer for this key right now without writing anything:
    /// `Some(Replayed)` or `Some(KeyConflict)` when the key was used in its scope, `None` when
    /// it is free. A cheap check before work that should not run for a replay (scoring the
    /// order); the transaction in `orders().create` still decides races.
    pub async fn outcome(
        &self,
        idem: &IdempotencyRequest,
    ) -> Result<Option<CreateOutcome>, StoreError> {
        let existing = sqlx::query_as::<_, IdempotencyRow>(SELECT_KEY)
            .bind(&idem.scope)
            .bind(&idem.key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(existing.map(|row| {
            if row.request_hash != idem.request_hash {
                return CreateOutcome::KeyConflict;
            }
            match (
                row.response_status.and_then(|s| u16::try_from(s).ok()),
                row.response_body,
            ) {
                (Some(status), Some(body)) => {
                    CreateOutcome::Replayed(StoredResponse { status, body })
                }
                // A half-stored row cannot be replayed; let orders().create report it.
                _ => CreateOutcome::KeyConflict,
            }
        }))
    }

    /// Forgets idempotency keys older than `older_than` (24 h in production): after that a
    /// repeated request creates a new order.
    pub async fn purge(&self, older_than: chrono::Duration) -> Result<u64, StoreError> {
        let done =
            sqlx::query("DELETE FROM idempotency_keys WHERE created_at < now() - $1::interval")
                .bind(older_than)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected())
    }
}

/// Claims `idem` in `tx` with `response` as its answer (`INSERT … ON CONFLICT DO NOTHING`). A
/// concurrent claim of the same key in the same scope waits on the unique index until the first
/// one commits, then sees its row and settles as a replay or a conflict.
pub(crate) async fn claim(
    tx: &mut Transaction<'static, Postgres>,
    idem: &IdempotencyRequest,
    response: &StoredResponse,
) -> Result<KeyCheck, StoreError> {
    // The response is known before anything is written, so the key and its response go in with
    // one statement; they become visible together at commit.
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (scope, key, request_hash, response_status, response_body) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (scope, key) DO NOTHING",
    )
    .bind(&idem.scope)
    .bind(&idem.key)
    .bind(&idem.request_hash)
    .bind(i32::from(response.status))
    .bind(&response.body)
    .execute(&mut **tx)
    .await?;
    if inserted.rows_affected() == 1 {
        return Ok(KeyCheck::Claimed);
    }
    // READ COMMITTED: this statement takes a fresh snapshot, so it sees the row the other
    // transaction committed while our INSERT was waiting on the unique index.
    let existing = sqlx::query_as::<_, IdempotencyRow>(SELECT_KEY)
        .bind(&idem.scope)
        .bind(&idem.key)
        .fetch_optional(&mut **tx)
        .await?;
    let Some(existing) = existing else {
        return Ok(KeyCheck::Vanished);
    };
    if existing.request_hash != idem.request_hash {
        return Ok(KeyCheck::Settled(CreateOutcome::KeyConflict));
    }
    match (existing.response_status, existing.response_body) {
        (Some(status), Some(body)) => {
            let status = u16::try_from(status).map_err(|_| {
                StoreError::Corrupt(format!(
                    "idempotency key {:?}: stored status {status}",
                    idem.key
                ))
            })?;
            Ok(KeyCheck::Settled(CreateOutcome::Replayed(StoredResponse {
                status,
                body,
            })))
        }
        _ => Err(StoreError::Corrupt(format!(
            "idempotency key {:?} has no stored response",
            idem.key
        ))),
    }
}
