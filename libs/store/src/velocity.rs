//! Velocity: what the fraud rules count of stored orders (orders per customer, client IP and
//! card fingerprint in a short and a long window, in one round trip), and the feed that keeps a
//! replica's in-memory velocity index in step with `orders` (the keys of recent orders, and a
//! listener on [`ORDERS_CHANNEL`], which a trigger on `orders` notifies at commit). Read only.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use sqlx::postgres::PgListener;
use uuid::Uuid;

use crate::StoreError;

/// The channel a trigger on `orders` notifies, payload the new order's id, when the inserting
/// transaction commits.
pub const ORDERS_CHANNEL: &str = "orders_new";

/// What the velocity rules count of one stored order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct VelocityEntry {
    pub order_id: Uuid,
    pub customer_id: String,
    pub client_ip: Option<String>,
    pub card_fingerprint: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// The columns of a [`VelocityEntry`] (a macro, so the queries stay static strings).
macro_rules! velocity_entry_columns {
    () => {
        "SELECT id AS order_id, customer_id, NULLIF(client_ip, '') AS client_ip, \
         NULLIF(payment ->> 'card_fingerprint', '') AS card_fingerprint, created_at FROM orders "
    };
}

/// Whose orders to count: a customer, and optionally a client IP and a card fingerprint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VelocityQuery {
    pub customer_id: String,
    pub client_ip: Option<String>,
    pub card_fingerprint: Option<String>,
    /// Not counted (an order re-evaluated after it was written).
    pub exclude_order: Option<Uuid>,
    /// The end of both windows (normally now).
    pub at: DateTime<Utc>,
    pub short_window: Duration,
    /// Must be at least `short_window`.
    pub long_window: Duration,
}

/// Stored orders in each window; a key that was not given counts 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VelocityCounts {
    pub customer_short: i64,
    pub customer_long: i64,
    pub ip_short: i64,
    pub ip_long: i64,
    pub card_short: i64,
    pub card_long: i64,
}

repository! {
    /// Reads of `orders` for the velocity rules.
    Velocity
}

impl Velocity {
    /// Orders per customer, client IP and card fingerprint in the short and the long window
    /// ending at `query.at`: ONE indexed query (a BitmapOr of the three `(key, created_at)`
    /// indexes), so the Score path pays a single round trip.
    pub async fn counts(&self, query: &VelocityQuery) -> Result<VelocityCounts, StoreError> {
        // No upper bound: an order the database stamped a moment "after" this process's clock
        // still counts.
        count_velocity(&self.pool, query, None).await
    }

    /// The velocity keys of every order created after `since`, oldest first: what a replica
    /// loads into its index when it starts or lost its listener.
    pub async fn entries_since(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<VelocityEntry>, StoreError> {
        let rows = sqlx::query_as(concat!(
            velocity_entry_columns!(),
            "WHERE created_at > $1 ORDER BY created_at"
        ))
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    /// The velocity keys of the named orders (those announced on [`ORDERS_CHANNEL`]); ids that
    /// name no order are left out.
    pub async fn entries(&self, ids: &[Uuid]) -> Result<Vec<VelocityEntry>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query_as(concat!(
            velocity_entry_columns!(),
            "WHERE id = ANY($1) ORDER BY created_at"
        ))
        .bind(ids)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    /// A listener already LISTENing on [`ORDERS_CHANNEL`], on a connection of its own.
    pub async fn orders_listener(&self) -> Result<PgListener, StoreError> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(ORDERS_CHANNEL).await?;
        Ok(listener)
    }
}

/// The velocity query, on any executor (the pool, or a transaction's connection). With
/// `until`, orders created after it are not counted: a re-evaluation sees what the rules would
/// have seen when the order was placed.
async fn count_velocity<'e, E: sqlx::PgExecutor<'e>>(
    executor: E,
    query: &VelocityQuery,
    until: Option<DateTime<Utc>>,
) -> Result<VelocityCounts, StoreError> {
    let short_start = window_start(query.at, query.short_window);
    let long_start = window_start(query.at, query.long_window.max(query.short_window));
    let row: (i64, i64, i64, i64, i64, i64) = sqlx::query_as(
        "SELECT \
           count(*) FILTER (WHERE customer_id = $1 AND created_at > $5), \
           count(*) FILTER (WHERE customer_id = $1), \
           count(*) FILTER (WHERE client_ip = $2 AND created_at > $5), \
           count(*) FILTER (WHERE client_ip = $2), \
           count(*) FILTER (WHERE payment ->> 'card_fingerprint' = $3 AND created_at > $5), \
           count(*) FILTER (WHERE payment ->> 'card_fingerprint' = $3) \
         FROM orders \
         WHERE created_at > $6 AND ($7::timestamptz IS NULL OR created_at <= $7) \
           AND (customer_id = $1 OR client_ip = $2 OR payment ->> 'card_fingerprint' = $3) \
           AND ($4::uuid IS NULL OR id <> $4)",
    )
    .bind(&query.customer_id)
    .bind(query.client_ip.as_deref().filter(|s| !s.is_empty()))
    .bind(query.card_fingerprint.as_deref().filter(|s| !s.is_empty()))
    .bind(query.exclude_order)
    .bind(short_start)
    .bind(long_start)
    .bind(until)
    .fetch_one(executor)
    .await?;
    Ok(VelocityCounts {
        customer_short: row.0,
        customer_long: row.1,
        ip_short: row.2,
        ip_long: row.3,
        card_short: row.4,
        card_long: row.5,
    })
}

/// Like [`Velocity::counts`], but on `conn` (inside the caller's transaction) and only orders
/// created at or before `query.at` count: a re-evaluation sees what the rules would have seen
/// when the order was placed, not the orders that came after it.
pub async fn counts_as_of(
    conn: &mut PgConnection,
    query: &VelocityQuery,
) -> Result<VelocityCounts, StoreError> {
    count_velocity(conn, query, Some(query.at)).await
}

/// `at - window`, saturating at the earliest representable time.
fn window_start(at: DateTime<Utc>, window: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(window)
        .ok()
        .and_then(|w| at.checked_sub_signed(w))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}
