//! Batch fraud evaluation, as fds-worker's queue tasks need it:
//!
//! - which orders of a time range still lack a fraud decision ([`FdsBatch::unscored_orders`]);
//! - reading an order's facts ([`order_to_evaluate`]) and, for an order that was never scored in
//!   real time, giving it its new fds JSON and status ([`set_unscored_order_fds`]): free
//!   functions over a `PgConnection`, so they run inside a once-only guard's transaction
//!   ([`crate::OnceGuard::transaction`]) and commit together with its completion record, as do
//!   [`crate::velocity::counts_as_of`] and [`crate::fds::insert`].
//!
//! An order that was scored in real time is never changed here.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::StoreError;

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

/// The SQL condition "this order has no real-time score of its own": order-api wrote the
/// configured fallback, or nothing usable.
const UNSCORED_FDS: &str = "(jsonb_typeof(fds) <> 'object' OR fds = '{}'::jsonb \
                             OR fds ->> 'source' = 'fallback')";

repository! {
    /// The batch evaluation's reads of `orders` and `fds_results`.
    FdsBatch
}

impl FdsBatch {
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
