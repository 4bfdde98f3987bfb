//! Fraud detection data: the decisions fds-worker records (`fds_results`) and the velocity counts
//! its rules read from `orders` (orders per customer, client IP and card fingerprint in a short
//! and a long window), both in one round trip each; and the feed that keeps a replica's
//! in-memory velocity index in step with `orders` (the keys of recent orders, and a listener on
//! [`ORDERS_CHANNEL`]).

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{Store, StoreError};

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

/// The decision column of `fds_results` (checked by the schema).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum FdsDecision {
    Approve,
    Review,
    Block,
}

impl FdsDecision {
    pub fn as_str(self) -> &'static str {
        match self {
            FdsDecision::Approve => "APPROVE",
            FdsDecision::Review => "REVIEW",
            FdsDecision::Block => "BLOCK",
        }
    }

    fn parse(s: &str) -> Result<FdsDecision, StoreError> {
        match s {
            "APPROVE" => Ok(FdsDecision::Approve),
            "REVIEW" => Ok(FdsDecision::Review),
            "BLOCK" => Ok(FdsDecision::Block),
            other => Err(StoreError::Corrupt(format!("fds decision {other:?}"))),
        }
    }
}

impl fmt::Display for FdsDecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a decision came from: the gRPC Score path, a batch (re-)evaluation, or the caller's
/// configured fallback when the score was unavailable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FdsSource {
    Realtime,
    Batch,
    Fallback,
}

impl FdsSource {
    pub fn as_str(self) -> &'static str {
        match self {
            FdsSource::Realtime => "realtime",
            FdsSource::Batch => "batch",
            FdsSource::Fallback => "fallback",
        }
    }

    fn parse(s: &str) -> Result<FdsSource, StoreError> {
        match s {
            "realtime" => Ok(FdsSource::Realtime),
            "batch" => Ok(FdsSource::Batch),
            "fallback" => Ok(FdsSource::Fallback),
            other => Err(StoreError::Corrupt(format!("fds source {other:?}"))),
        }
    }
}

/// A decision to record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewFdsResult {
    /// As the caller sent it (a UUID once the order exists).
    pub order_id: String,
    /// 0..=100.
    pub score: i32,
    pub decision: FdsDecision,
    /// A JSON array: `[{ "rule_id", "weight", "message" }, …]`.
    pub reasons: serde_json::Value,
    pub rules_version: String,
    pub source: FdsSource,
}

/// A recorded decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FdsResultRecord {
    pub id: i64,
    pub order_id: String,
    pub score: i32,
    pub decision: FdsDecision,
    pub reasons: serde_json::Value,
    pub rules_version: String,
    pub source: FdsSource,
    pub created_at: DateTime<Utc>,
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

#[derive(sqlx::FromRow)]
struct Row {
    id: i64,
    order_id: String,
    score: i32,
    decision: String,
    reasons: serde_json::Value,
    rules_version: String,
    source: String,
    created_at: DateTime<Utc>,
}

impl TryFrom<Row> for FdsResultRecord {
    type Error = StoreError;

    fn try_from(row: Row) -> Result<Self, StoreError> {
        Ok(FdsResultRecord {
            id: row.id,
            order_id: row.order_id,
            score: row.score,
            decision: FdsDecision::parse(&row.decision)?,
            reasons: row.reasons,
            rules_version: row.rules_version,
            source: FdsSource::parse(&row.source)?,
            created_at: row.created_at,
        })
    }
}

impl Store {
    /// Records one decision; returns its id.
    pub async fn record_fds_result(&self, result: &NewFdsResult) -> Result<i64, StoreError> {
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
        .fetch_one(&self.pool)
        .await?;
        Ok(id)
    }

    /// Records several decisions in one statement (the background writer's batch); returns how
    /// many rows were written.
    pub async fn record_fds_results(&self, results: &[NewFdsResult]) -> Result<u64, StoreError> {
        if results.is_empty() {
            return Ok(0);
        }
        let mut order_ids = Vec::with_capacity(results.len());
        let mut scores = Vec::with_capacity(results.len());
        let mut decisions = Vec::with_capacity(results.len());
        let mut reasons = Vec::with_capacity(results.len());
        let mut versions = Vec::with_capacity(results.len());
        let mut sources = Vec::with_capacity(results.len());
        for r in results {
            order_ids.push(r.order_id.as_str());
            scores.push(r.score);
            decisions.push(r.decision.as_str());
            reasons.push(r.reasons.clone());
            versions.push(r.rules_version.as_str());
            sources.push(r.source.as_str());
        }
        let done = sqlx::query(
            "INSERT INTO fds_results (order_id, score, decision, reasons, rules_version, source) \
             SELECT * FROM UNNEST($1::text[], $2::int[], $3::text[], $4::jsonb[], $5::text[], \
                                  $6::text[])",
        )
        .bind(&order_ids)
        .bind(&scores)
        .bind(&decisions)
        .bind(&reasons)
        .bind(&versions)
        .bind(&sources)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// The decisions recorded for `order_id`, oldest first.
    pub async fn fds_results_for_order(
        &self,
        order_id: &str,
    ) -> Result<Vec<FdsResultRecord>, StoreError> {
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT id, order_id, score, decision, reasons, rules_version, source, created_at \
             FROM fds_results WHERE order_id = $1 ORDER BY created_at, id",
        )
        .bind(order_id)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(FdsResultRecord::try_from).collect()
    }

    /// Orders per customer, client IP and card fingerprint in the short and the long window
    /// ending at `query.at`: ONE indexed query (a BitmapOr of the three `(key, created_at)`
    /// indexes), so the Score path pays a single round trip.
    pub async fn velocity_counts(
        &self,
        query: &VelocityQuery,
    ) -> Result<VelocityCounts, StoreError> {
        // No upper bound: an order the database stamped a moment "after" this process's clock
        // still counts.
        count_velocity(&self.pool, query, None).await
    }
}

impl Store {
    /// The velocity keys of every order created after `since`, oldest first: what a replica
    /// loads into its index when it starts or lost its listener.
    pub async fn velocity_entries_since(
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
    pub async fn velocity_entries(&self, ids: &[Uuid]) -> Result<Vec<VelocityEntry>, StoreError> {
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
    pub async fn orders_listener(&self) -> Result<sqlx::postgres::PgListener, StoreError> {
        let mut listener = sqlx::postgres::PgListener::connect_with(&self.pool).await?;
        listener.listen(ORDERS_CHANNEL).await?;
        Ok(listener)
    }
}

/// The velocity query, on any executor (the pool, or a transaction's connection). With
/// `until`, orders created after it are not counted: a re-evaluation sees what the rules would
/// have seen when the order was placed.
pub(crate) async fn count_velocity<'e, E: sqlx::PgExecutor<'e>>(
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

/// `at - window`, saturating at the earliest representable time.
fn window_start(at: DateTime<Utc>, window: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(window)
        .ok()
        .and_then(|w| at.checked_sub_signed(w))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}
