//! Batch fraud evaluation and the threat-intelligence feed, as fds-worker's queue tasks need them:
//!
//! - which orders of a time range still lack a fraud decision ([`Store::unscored_orders`]);
//! - reading an order's facts, its velocity *as of the order's own time*, recording the batch
//!   decision and, for an order that was never scored in real time, its new fds JSON and status:
//!   free functions over a `PgConnection`, so they run inside a once-only guard's transaction
//!   ([`crate::OnceGuard::transaction`]) and commit together with its completion record;
//! - the `threat_intel` table: one row per validated feed version, the newest of which every
//!   replica loads.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::outbox::{PendingTask, insert_pending_tasks};
use crate::{NewFdsResult, Store, StoreError, VelocityCounts, VelocityQuery};

/// What the fraud rules need of a stored order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct OrderToEvaluate {
    pub id: Uuid,
    pub customer_id: String,
    pub customer_email: String,
    pub account_created_at: Option<DateTime<Utc>>,
    pub currency: String,
    pub total: i64,
    /// `shipping_address.country`.
    pub shipping_country: Option<String>,
    pub billing_country: String,
    /// `payment.card_fingerprint`.
    pub card_fingerprint: Option<String>,
    pub client_ip: Option<String>,
    /// The fds JSON the order was written with (`source` = realtime, fallback or batch).
    pub fds: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

/// One stored version of the threat-intelligence feed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct ThreatIntelRecord {
    pub version: i64,
    pub source: String,
    pub snapshot: serde_json::Value,
    pub fetched_at: DateTime<Utc>,
    pub checked_at: DateTime<Utc>,
}

/// What [`Store::save_threat_intel`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedThreatIntel {
    pub version: i64,
    /// False when the newest stored version already had this content (only `checked_at` moved).
    pub created: bool,
}

/// The SQL condition "this order has no real-time score of its own": order-api wrote the
/// configured fallback, or nothing usable.
const UNSCORED_FDS: &str = "(jsonb_typeof(fds) <> 'object' OR fds = '{}'::jsonb \
                             OR fds ->> 'source' = 'fallback')";

impl Store {
    /// Orders created in `[from, until)` that still need a decision, oldest first: no `batch`
    /// row in `fds_results`, and either no `realtime` row or an order that carries the fallback
    /// decision (fds-worker answered after order-api's deadline: the row exists, the order was
    /// never updated).
    pub async fn unscored_orders(
        &self,
        from: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<Uuid>, StoreError> {
        let sql = format!(
            "SELECT o.id FROM orders o \
             WHERE o.created_at >= $1 AND o.created_at < $2 \
               AND NOT EXISTS (SELECT 1 FROM fds_results r \
                               WHERE r.order_id = o.id::text AND r.source = 'batch') \
               AND (NOT EXISTS (SELECT 1 FROM fds_results r \
                                WHERE r.order_id = o.id::text AND r.source = 'realtime') \
                    OR {UNSCORED_FDS}) \
             ORDER BY o.created_at, o.id"
        );
        let ids = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(from)
            .bind(until)
            .fetch_all(&self.pool)
            .await?;
        Ok(ids)
    }

    /// PENDING rows for tasks about to be published (a fanned-out group), so their ids are
    /// queryable at once; rows that exist already are left alone.
    pub async fn record_pending_tasks(&self, pending: &[PendingTask]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        insert_pending_tasks(&mut tx, pending).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Stores a validated feed snapshot as a new version, unless the newest version has the same
    /// content (then only its `checked_at` moves). Keeps the newest `keep` versions.
    pub async fn save_threat_intel(
        &self,
        source: &str,
        snapshot: &serde_json::Value,
        keep: i64,
    ) -> Result<SavedThreatIntel, StoreError> {
        let mut tx = self.pool.begin().await?;
        // One writer at a time, so "same as the newest?" and the insert see the same newest row.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('threat_intel', 0))")
            .execute(&mut *tx)
            .await?;
        let newest: Option<(i64, serde_json::Value)> = sqlx::query_as(
            "SELECT version, snapshot FROM threat_intel ORDER BY version DESC LIMIT 1",
        )
        .fetch_optional(&mut *tx)
        .await?;
        let saved = match newest {
            Some((version, stored)) if stored == *snapshot => {
                sqlx::query(
                    "UPDATE threat_intel SET checked_at = now(), source = $2 WHERE version = $1",
                )
                .bind(version)
                .bind(source)
                .execute(&mut *tx)
                .await?;
                SavedThreatIntel {
                    version,
                    created: false,
                }
            }
            _ => {
                let version = sqlx::query_scalar(
                    "INSERT INTO threat_intel (source, snapshot) VALUES ($1, $2) RETURNING version",
                )
                .bind(source)
                .bind(snapshot)
                .fetch_one(&mut *tx)
                .await?;
                SavedThreatIntel {
                    version,
                    created: true,
                }
            }
        };
        sqlx::query(
            "DELETE FROM threat_intel WHERE version NOT IN \
             (SELECT version FROM threat_intel ORDER BY version DESC LIMIT $1)",
        )
        .bind(keep.max(1))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(saved)
    }

    /// The newest stored feed version, if any.
    pub async fn latest_threat_intel(&self) -> Result<Option<ThreatIntelRecord>, StoreError> {
        let record = sqlx::query_as(
            "SELECT version, source, snapshot, fetched_at, checked_at FROM threat_intel \
             ORDER BY version DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(record)
    }

    /// The newest stored feed version number (a cheap poll: the primary key's last entry).
    pub async fn latest_threat_intel_version(&self) -> Result<Option<i64>, StoreError> {
        let version = sqlx::query_scalar("SELECT max(version) FROM threat_intel")
            .fetch_one(&self.pool)
            .await?;
        Ok(version)
    }
}

/// The order's facts, read on `conn` (inside the caller's transaction).
pub async fn order_to_evaluate(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<OrderToEvaluate>, StoreError> {
    let order = sqlx::query_as(
        "SELECT id, customer_id, customer_email, account_created_at, currency, total, \
                shipping_address ->> 'country' AS shipping_country, billing_country, \
                payment ->> 'card_fingerprint' AS card_fingerprint, client_ip, fds, created_at \
         FROM orders WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(order)
}

/// Like [`Store::velocity_counts`], but only orders created at or before `query.at` count: a
/// re-evaluation sees what the rules would have seen when the order was placed, not the orders
/// that came after it.
pub async fn velocity_counts_as_of(
    conn: &mut PgConnection,
    query: &VelocityQuery,
) -> Result<VelocityCounts, StoreError> {
    crate::fds::count_velocity(conn, query, Some(query.at)).await
}

/// Inserts one decision on `conn`; returns its id.
pub async fn insert_fds_result(
    conn: &mut PgConnection,
    result: &NewFdsResult,
) -> Result<i64, StoreError> {
    let id = sqlx::query_scalar(
        "INSERT INTO fds_results (order_id, score, decision, reasons, rules_version, source) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
    )
    .bind(&result.order_id)
    .bind(result.score)
    .bind(result.decision.as_str())
    .bind(&result.reasons)
    .bind(&result.rules_version)
    .bind(result.source.as_str())
    .fetch_one(&mut *conn)
    .await?;
    Ok(id)
}

/// Gives an order that was never scored in real time (fallback or empty `fds`) its new `fds`
/// JSON and `status`; an order scored in real time is left as it is. True when it was updated.
pub async fn set_unscored_order_fds(
    conn: &mut PgConnection,
    id: Uuid,
    fds: &serde_json::Value,
    status: &str,
) -> Result<bool, StoreError> {
    let sql = format!(
        "UPDATE orders SET fds = $2, status = $3, updated_at = now() \
         WHERE id = $1 AND {UNSCORED_FDS}"
    );
    let done = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .bind(fds)
        .bind(status)
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected() == 1)
}
