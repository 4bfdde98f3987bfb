//! The transactional outbox: task messages written in the same transaction as the business data
//! (`insert`, used by `orders().create`, or [`Outbox::enqueue_tasks`] on their own), then
//! published by a relay that marks a row sent only after RabbitMQ confirmed it. A broker outage
//! delays messages; it never loses one.
//!
//! - [`message`]: a task message mapped to its row and back, and its PENDING result row;
//! - [`relay`]: the relay's store side. Rows are claimed `FOR UPDATE SKIP LOCKED`, so relays on
//!   several replicas share the work without sending a row twice; a row is marked sent only for
//!   the publisher's confirm, and a failed attempt is counted on it with its error.
//!
//! Every write of outbox rows notifies [`OUTBOX_CHANNEL`] at commit, which wakes the relays.
//! Unsent rows are never purged.

pub mod message;
pub mod relay;

use sqlx::postgres::PgListener;
use sqlx::{Postgres, Transaction};

pub use message::{OutboxMessage, OutboxRow, PendingTask};

use crate::StoreError;

/// The channel relays LISTEN on; every write of outbox rows notifies it at commit.
pub const OUTBOX_CHANNEL: &str = "outbox_new";

repository! {
    /// The `outbox` table.
    Outbox
}

impl Outbox {
    /// Rows not yet confirmed by the broker (a gauge for `/metrics`).
    pub async fn pending(&self) -> Result<i64, StoreError> {
        let n = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
            .fetch_one(&self.pool)
            .await?;
        Ok(n)
    }

    /// Deletes rows sent more than `older_than` ago; unsent rows are never purged.
    pub async fn purge_sent(&self, older_than: chrono::Duration) -> Result<u64, StoreError> {
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
    pub async fn listener(&self) -> Result<PgListener, StoreError> {
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
        self.enqueue_tasks(outbox, &[]).await
    }

    /// [`enqueue`](Self::enqueue) plus PENDING result rows for the tasks, in one transaction.
    pub async fn enqueue_tasks(
        &self,
        outbox: &[OutboxMessage],
        pending: &[PendingTask],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        insert(&mut tx, outbox, pending).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Inside the caller's transaction: the messages (in one statement, their order kept in the
/// ids), PENDING result rows for `pending` (rows that exist are left alone), and, when there
/// are messages, the notification that wakes the relays at commit.
pub(crate) async fn insert(
    tx: &mut Transaction<'static, Postgres>,
    outbox: &[OutboxMessage],
    pending: &[PendingTask],
) -> Result<(), StoreError> {
    insert_messages(tx, outbox).await?;
    crate::results::insert_pending(tx, pending).await?;
    if !outbox.is_empty() {
        // Delivered to listeners when the surrounding transaction commits, not before.
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(OUTBOX_CHANNEL)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

async fn insert_messages(
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
