//! The relay's store side. [`Outbox::relay`] is one step: in ONE transaction it locks up to a
//! batch of unsent rows (oldest first, `FOR UPDATE SKIP LOCKED`, so relays on several replicas
//! share the work without waiting for each other), hands them to the publisher, then marks the
//! rows the broker confirmed sent and counts a failed attempt, with its error, on the others.
//! [`Outbox::drain`] maps the rows back to the messages they hold ([`OutboxRow::into_outgoing`])
//! and repeats the step until the outbox is empty; a relay loop needs nothing else of the store.
//!
//! If the publisher panics or the step's future is dropped, the transaction rolls back and the
//! rows stay unsent: a message may then be published twice, never lost (consumers are
//! idempotent by task id).

use std::collections::HashSet;
use std::future::Future;

use shopfds_broker::{Outgoing, PublishError};

use super::message::Row;
use super::{Outbox, OutboxRow};
use crate::StoreError;

impl Outbox {
    /// One relay step over at most `limit` rows. `publish` publishes them, awaits the broker's
    /// confirms and answers per outbox id; ids it was not given are ignored. Returns how many
    /// rows were marked sent.
    pub async fn relay<F, Fut>(&self, limit: i64, publish: F) -> Result<usize, StoreError>
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

    /// Relay steps of `batch` rows until the outbox is empty or a step did not send a full
    /// batch (a publish failed). `publish` gets the messages the rows hold and answers one
    /// outcome per message, in order (as `Publisher::publish_batch` does); a row that cannot be
    /// published is not handed to it and counts a failed attempt. Returns how many rows were
    /// marked sent.
    pub async fn drain<F, Fut>(&self, batch: i64, publish: F) -> Result<usize, StoreError>
    where
        F: Fn(Vec<Outgoing>) -> Fut,
        Fut: Future<Output = Vec<Result<(), PublishError>>>,
    {
        let full = usize::try_from(batch).unwrap_or(usize::MAX);
        let mut total = 0;
        loop {
            let sent = self
                .relay(batch, |rows| publish_rows(rows, &publish))
                .await?;
            total += sent;
            if sent < full {
                return Ok(total);
            }
        }
    }
}

/// Publishes the rows that map to a message and answers per row id.
async fn publish_rows<F, Fut>(rows: Vec<OutboxRow>, publish: &F) -> Vec<(i64, Result<(), String>)>
where
    F: Fn(Vec<Outgoing>) -> Fut,
    Fut: Future<Output = Vec<Result<(), PublishError>>>,
{
    let mut outcomes = Vec::with_capacity(rows.len());
    let mut ids = Vec::with_capacity(rows.len());
    let mut messages = Vec::with_capacity(rows.len());
    for row in rows {
        let id = row.id;
        match row.into_outgoing() {
            Ok(message) => {
                ids.push(id);
                messages.push(message);
            }
            Err(e) => outcomes.push((id, Err(e))),
        }
    }
    if messages.is_empty() {
        return outcomes;
    }
    let mut published = publish(messages).await.into_iter();
    for id in ids {
        // A publisher that answers fewer outcomes than messages lost the rest with its channel.
        let outcome = published.next().unwrap_or(Err(PublishError::Closed));
        outcomes.push((id, outcome.map_err(|e| e.to_string())));
    }
    outcomes
}
