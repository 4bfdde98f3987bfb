//! The transactional outbox: task messages written in the same transaction as the business data,
//! then published by a relay that marks a row sent only after RabbitMQ confirmed it. A broker
//! outage delays messages; it never loses one.

use std::collections::HashSet;
use std::future::Future;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgListener;
use sqlx::{Postgres, Transaction};

use crate::{Store, StoreError};

/// The channel relays LISTEN on; every write of outbox rows notifies it at commit.
pub const OUTBOX_CHANNEL: &str = "outbox_new";

/// One AMQP message to publish.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxMessage {
    pub task_id: String,
    pub exchange: String,
    pub routing_key: String,
    /// JSON object: the AMQP application headers.
    pub headers: serde_json::Value,
    /// JSON object: `correlation_id`, `content_type`, `content_encoding`, `priority`,
    /// `reply_to`, `delivery_mode`.
    pub properties: serde_json::Value,
    pub body: Vec<u8>,
}

/// An unsent outbox row handed to the publisher.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxRow {
    pub id: i64,
    pub message: OutboxMessage,
    /// Failed publish attempts so far.
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
}

/// A task whose result row is created as PENDING together with its message, so
/// `GET /v1/tasks/{id}` knows the task before a worker has seen it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingTask {
    pub task_id: String,
    pub name: String,
    pub queue: String,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: i64,
    task_id: String,
    exchange: String,
    routing_key: String,
    headers: serde_json::Value,
    properties: serde_json::Value,
    body: Vec<u8>,
    attempts: i32,
    created_at: DateTime<Utc>,
}

impl From<Row> for OutboxRow {
    fn from(r: Row) -> Self {
        OutboxRow {
            id: r.id,
            message: OutboxMessage {
                task_id: r.task_id,
                exchange: r.exchange,
                routing_key: r.routing_key,
                headers: r.headers,
                properties: r.properties,
                body: r.body,
            },
            attempts: r.attempts,
            created_at: r.created_at,
        }
    }
}

impl Store {
    /// One relay step, safe with several relays at once. In one transaction: lock up to `limit`
    /// unsent rows (oldest first, `FOR UPDATE SKIP LOCKED`, so relays share the work without
    /// waiting for each other), hand them to `publish`, which publishes and awaits the broker's
    /// confirms and answers per outbox id, then mark the confirmed rows sent and count a failed
    /// attempt (with its error) on the others. Returns how many rows were marked sent.
    ///
    /// If `publish` panics or this future is dropped, the transaction rolls back and the rows
    /// stay unsent: a message may then be published twice, never lost (consumers are
    /// idempotent by task id).
    pub async fn relay_outbox<F, Fut>(&self, limit: i64, publish: F) -> Result<usize, StoreError>
    where
        F: FnOnce(Vec<OutboxRow>) -> Fut,
        Fut: Future<Output = Vec<(i64, Result<(), String>)>>,
    {
        let mut tx = self.pool.begin().await?;
        let rows: Vec<OutboxRow> = sqlx::query_as::<_, Row>(
            "SELECT id, task_id, exchange, routing_key, headers, properties, body, attempts, \
                    created_at \
             FROM outbox WHERE sent_at IS NULL \
             ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
        )
        .bind(limit.max(0))
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(OutboxRow::from)
        .collect();
        if rows.is_empty() {
            tx.commit().await?;
            return Ok(0);
        }

        // Only rows this step locked may be touched: an id the publisher made up is ignored.
        let locked: HashSet<i64> = rows.iter().map(|r| r.id).collect();
        let outcomes = publish(rows).await;
        let mut sent = Vec::new();
        let mut failed_ids = Vec::new();
        let mut failed_errors = Vec::new();
        for (id, outcome) in outcomes {
            if !locked.contains(&id) {
                tracing::warn!(outbox_id = id, "publisher reported an id it was not given");
                continue;
            }
            match outcome {
                Ok(()) => sent.push(id),
                Err(error) => {
                    failed_ids.push(id);
                    failed_errors.push(error);
                }
            }
        }

        let marked = if sent.is_empty() {
            0
        } else {
            sqlx::query("UPDATE outbox SET sent_at = now() WHERE id = ANY($1) AND sent_at IS NULL")
                .bind(&sent)
                .execute(&mut *tx)
                .await?
                .rows_affected()
        };
        if !failed_ids.is_empty() {
            sqlx::query(
                "UPDATE outbox AS o SET attempts = o.attempts + 1, last_error = f.error \
                 FROM UNNEST($1::int8[], $2::text[]) AS f (id, error) \
                 WHERE o.id = f.id AND o.sent_at IS NULL",
            )
            .bind(&failed_ids)
            .bind(&failed_errors)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(usize::try_from(marked).unwrap_or(usize::MAX))
    }

    /// Rows not yet confirmed by the broker (a gauge for `/metrics`).
    pub async fn outbox_pending(&self) -> Result<i64, StoreError> {
        let n = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
            .fetch_one(&self.pool)
            .await?;
        Ok(n)
    }

    /// Deletes rows sent more than `older_than` ago; unsent rows are never purged.
    pub async fn purge_sent_outbox(&self, older_than: chrono::Duration) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM outbox WHERE sent_at IS NOT NULL AND sent_at < now() - $1::interval",
        )
        .bind(older_than)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// A listener already LISTENing on [`OUTBOX_CHANNEL`]. It holds its own connection and
    /// reconnects by itself; a relay should still poll now and then, since a notification sent
    /// while it was reconnecting is lost.
    pub async fn outbox_listener(&self) -> Result<PgListener, StoreError> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(OUTBOX_CHANNEL).await?;
        Ok(listener)
    }

    /// Inserts outbox rows on their own (the scheduler, retries requested over HTTP, …) and
    /// wakes the relays.
    pub async fn enqueue(&self, outbox: &[OutboxMessage]) -> Result<(), StoreError> {
        if outbox.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        insert_outbox(&mut tx, outbox).await?;
        notify(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// [`enqueue`](Self::enqueue) plus PENDING result rows for the tasks, in one transaction.
    pub async fn enqueue_tasks(
        &self,
        outbox: &[OutboxMessage],
        pending: &[PendingTask],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        insert_outbox(&mut tx, outbox).await?;
        insert_pending_tasks(&mut tx, pending).await?;
        if !outbox.is_empty() {
            notify(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// Inserts the messages in one statement, keeping their order in the ids.
pub(crate) async fn insert_outbox(
    tx: &mut Transaction<'static, Postgres>,
    outbox: &[OutboxMessage],
) -> Result<(), StoreError> {
    if outbox.is_empty() {
        return Ok(());
    }
    let mut ords = Vec::with_capacity(outbox.len());
    let mut task_ids = Vec::with_capacity(outbox.len());
    let mut exchanges = Vec::with_capacity(outbox.len());
    let mut routing_keys = Vec::with_capacity(outbox.len());
    let mut headers = Vec::with_capacity(outbox.len());
    let mut properties = Vec::with_capacity(outbox.len());
    let mut bodies = Vec::with_capacity(outbox.len());
    for (ord, m) in (0_i32..).zip(outbox) {
        ords.push(ord);
        task_ids.push(m.task_id.as_str());
        exchanges.push(m.exchange.as_str());
        routing_keys.push(m.routing_key.as_str());
        headers.push(m.headers.clone());
        properties.push(m.properties.clone());
        bodies.push(m.body.as_slice());
    }
    sqlx::query(
        "INSERT INTO outbox (task_id, exchange, routing_key, headers, properties, body) \
         SELECT m.task_id, m.exchange, m.routing_key, m.headers, m.properties, m.body \
         FROM UNNEST($1::int4[], $2::text[], $3::text[], $4::text[], $5::jsonb[], $6::jsonb[], \
                     $7::bytea[]) \
              AS m (ord, task_id, exchange, routing_key, headers, properties, body) \
         ORDER BY m.ord",
    )
    .bind(ords)
    .bind(task_ids)
    .bind(exchanges)
    .bind(routing_keys)
    .bind(headers)
    .bind(properties)
    .bind(bodies)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// PENDING rows for tasks not yet in the result store; a row that exists is left alone.
pub(crate) async fn insert_pending_tasks(
    tx: &mut Transaction<'static, Postgres>,
    pending: &[PendingTask],
) -> Result<(), StoreError> {
    if pending.is_empty() {
        return Ok(());
    }
    let task_ids: Vec<&str> = pending.iter().map(|p| p.task_id.as_str()).collect();
    let names: Vec<&str> = pending.iter().map(|p| p.name.as_str()).collect();
    let queues: Vec<&str> = pending.iter().map(|p| p.queue.as_str()).collect();
    sqlx::query(
        "INSERT INTO task_results (task_id, name, queue, state) \
         SELECT t.task_id, t.name, t.queue, 'PENDING' \
         FROM UNNEST($1::text[], $2::text[], $3::text[]) AS t (task_id, name, queue) \
         ON CONFLICT (task_id) DO NOTHING",
    )
    .bind(task_ids)
    .bind(names)
    .bind(queues)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Delivered to listeners when the surrounding transaction commits, not before.
pub(crate) async fn notify(tx: &mut Transaction<'static, Postgres>) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(OUTBOX_CHANNEL)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
