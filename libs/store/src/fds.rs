//! Fraud decisions: one `fds_results` row per decision fds-worker made (real time, batch, or
//! order-api's fallback), with its score, reasons and the rules version. Rows are only ever
//! added; an order re-evaluated in a batch gets a row of its own.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;

use crate::StoreError;

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

repository! {
    /// The `fds_results` table.
    FdsResults
}

impl FdsResults {
    /// Records one decision; returns its id.
    pub async fn record(&self, result: &NewFdsResult) -> Result<i64, StoreError> {
        let mut conn = self.pool.acquire().await?;
        insert(&mut conn, result).await
    }

    /// Records several decisions in one statement (the background writer's batch); returns how
    /// many rows were written.
    pub async fn record_many(&self, results: &[NewFdsResult]) -> Result<u64, StoreError> {
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
    pub async fn for_order(&self, order_id: &str) -> Result<Vec<FdsResultRecord>, StoreError> {
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT id, order_id, score, decision, reasons, rules_version, source, created_at \
             FROM fds_results WHERE order_id = $1 ORDER BY created_at, id",
        )
        .bind(order_id)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(FdsResultRecord::try_from).collect()
    }
}

/// Inserts one decision on `conn` (inside the caller's transaction); returns its id.
pub async fn insert(conn: &mut PgConnection, result: &NewFdsResult) -> Result<i64, StoreError> {
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
