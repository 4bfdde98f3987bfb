//! Orders: written in ONE transaction with their outgoing task messages (the transactional
//! outbox), the PENDING rows of their tasks and the HTTP `Idempotency-Key`, so an order either
//! exists with all its work queued or does not exist at all.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::outbox::{OutboxMessage, PendingTask, insert_outbox, insert_pending_tasks};
use crate::{Store, StoreError};

/// The `Idempotency-Key` header and a hash of the request it came with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRequest {
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewOrderItem {
    pub sku: String,
    pub name: String,
    pub quantity: i32,
    /// Minor units of the order's currency.
    pub unit_price: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewOrder {
    pub id: Uuid,
    pub customer_id: String,
    pub customer_email: String,
    pub customer_name: String,
    pub account_created_at: Option<DateTime<Utc>>,
    /// ISO 4217 code, e.g. `KRW`.
    pub currency: String,
    /// Minor units of `currency`.
    pub total: i64,
    /// In line order.
    pub items: Vec<NewOrderItem>,
    pub shipping_address: serde_json::Value,
    pub billing_country: String,
    pub payment: serde_json::Value,
    pub client_ip: Option<String>,
    /// `accepted`, `review` or `blocked` (checked by the schema).
    pub status: String,
    pub fds: serde_json::Value,
    /// Task name → task id.
    pub tasks: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderRecord {
    pub id: Uuid,
    pub customer_id: String,
    pub customer_email: String,
    pub customer_name: String,
    pub account_created_at: Option<DateTime<Utc>>,
    pub currency: String,
    pub total: i64,
    pub items: Vec<NewOrderItem>,
    pub shipping_address: serde_json::Value,
    pub billing_country: String,
    pub payment: serde_json::Value,
    pub client_ip: Option<String>,
    pub status: String,
    pub fds: serde_json::Value,
    pub tasks: serde_json::Value,
    pub tracking_number: Option<String>,
    pub invoice_url: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct OrderRow {
    id: Uuid,
    customer_id: String,
    customer_email: String,
    customer_name: String,
    account_created_at: Option<DateTime<Utc>>,
    currency: String,
    total: i64,
    shipping_address: serde_json::Value,
    billing_country: String,
    payment: serde_json::Value,
    client_ip: Option<String>,
    status: String,
    fds: serde_json::Value,
    tasks: serde_json::Value,
    tracking_number: Option<String>,
    invoice_url: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct ItemRow {
    sku: String,
    name: String,
    quantity: i32,
    unit_price: i64,
}

#[derive(sqlx::FromRow)]
struct IdempotencyRow {
    request_hash: String,
    response_status: Option<i32>,
    response_body: Option<serde_json::Value>,
}

/// What the idempotency check found.
enum KeyCheck {
    /// The key is ours now (inserted in the open transaction).
    Claimed,
    Settled(CreateOutcome),
    /// The conflicting row disappeared before we could read it (purged); try again.
    Vanished,
}

impl Store {
    /// Writes an order in ONE transaction:
    /// 1. with `idem`, claims the key (`INSERT … ON CONFLICT DO NOTHING`). A key already used with
    ///    the same request hash replays its stored response, with another hash it is a conflict;
    ///    in both cases nothing else is written. A concurrent request with the same key waits on
    ///    the unique index until the first one commits, then sees its row and replays it.
    /// 2. inserts the order, its items, one outbox row per message and a PENDING `task_results`
    ///    row per task (existing rows are left alone);
    /// 3. stores `response` with the key;
    /// 4. `pg_notify('outbox_new')`, delivered to relays when the transaction commits.
    pub async fn create_order(
        &self,
        idem: Option<&IdempotencyRequest>,
        order: &NewOrder,
        outbox: &[OutboxMessage],
        pending: &[PendingTask],
        response: &StoredResponse,
    ) -> Result<CreateOutcome, StoreError> {
        // A retry only happens if a key is purged between our INSERT and SELECT.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let mut tx = self.pool.begin().await?;
            if let Some(idem) = idem {
                match claim_key(&mut tx, idem, response).await? {
                    KeyCheck::Claimed => {}
                    KeyCheck::Settled(outcome) => {
                        tx.rollback().await?;
                        return Ok(outcome);
                    }
                    KeyCheck::Vanished if attempts < 3 => {
                        tx.rollback().await?;
                        continue;
                    }
                    KeyCheck::Vanished => {
                        return Err(StoreError::Corrupt(format!(
                            "idempotency key {:?} conflicts but cannot be read",
                            idem.key
                        )));
                    }
                }
            }
            insert_order(&mut tx, order).await?;
            insert_outbox(&mut tx, outbox).await?;
            insert_pending_tasks(&mut tx, pending).await?;
            if !outbox.is_empty() {
                crate::outbox::notify(&mut tx).await?;
            }
            tx.commit().await?;
            return Ok(CreateOutcome::Created);
        }
    }

    /// What `create_order` would answer for this key right now without writing anything:
    /// `Some(Replayed)` or `Some(KeyConflict)` when the key was used, `None` when it is free.
    /// A cheap check before work that should not run for a replay (scoring the order); the
    /// transaction in `create_order` still decides races.
    pub async fn idempotent_outcome(
        &self,
        idem: &IdempotencyRequest,
    ) -> Result<Option<CreateOutcome>, StoreError> {
        let existing = sqlx::query_as::<_, IdempotencyRow>(
            "SELECT request_hash, response_status, response_body FROM idempotency_keys WHERE key = $1",
        )
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
                // A half-stored row cannot be replayed; let create_order report it.
                _ => CreateOutcome::KeyConflict,
            }
        }))
    }

    pub async fn get_order(&self, id: Uuid) -> Result<Option<OrderRecord>, StoreError> {
        let Some(row) = sqlx::query_as::<_, OrderRow>(
            "SELECT id, customer_id, customer_email, customer_name, account_created_at, currency, \
                    total, shipping_address, billing_country, payment, client_ip, status, fds, \
                    tasks, tracking_number, invoice_url, created_at, updated_at \
             FROM orders WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let items = sqlx::query_as::<_, ItemRow>(
            "SELECT sku, name, quantity, unit_price FROM order_items \
             WHERE order_id = $1 ORDER BY line_no",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|i| NewOrderItem {
            sku: i.sku,
            name: i.name,
            quantity: i.quantity,
            unit_price: i.unit_price,
        })
        .collect();
        Ok(Some(OrderRecord {
            id: row.id,
            customer_id: row.customer_id,
            customer_email: row.customer_email,
            customer_name: row.customer_name,
            account_created_at: row.account_created_at,
            currency: row.currency,
            total: row.total,
            items,
            shipping_address: row.shipping_address,
            billing_country: row.billing_country,
            payment: row.payment,
            client_ip: row.client_ip,
            status: row.status,
            fds: row.fds,
            tasks: row.tasks,
            tracking_number: row.tracking_number,
            invoice_url: row.invoice_url,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }))
    }

    /// Records the shipping partner's tracking number. An unknown order is logged, not an error:
    /// the task that calls this has nothing better to do about it.
    pub async fn set_order_tracking_number(
        &self,
        id: Uuid,
        tracking: &str,
    ) -> Result<(), StoreError> {
        let done =
            sqlx::query("UPDATE orders SET tracking_number = $2, updated_at = now() WHERE id = $1")
                .bind(id)
                .bind(tracking)
                .execute(&self.pool)
                .await?;
        if done.rows_affected() == 0 {
            tracing::warn!(order_id = %id, "tracking number for an unknown order");
        }
        Ok(())
    }

    /// Records where the invoice PDF was stored. An unknown order is logged, not an error.
    pub async fn set_order_invoice_url(&self, id: Uuid, url: &str) -> Result<(), StoreError> {
        let done =
            sqlx::query("UPDATE orders SET invoice_url = $2, updated_at = now() WHERE id = $1")
                .bind(id)
                .bind(url)
                .execute(&self.pool)
                .await?;
        if done.rows_affected() == 0 {
            tracing::warn!(order_id = %id, "invoice url for an unknown order");
        }
        Ok(())
    }

    /// Forgets idempotency keys older than `older_than` (24 h in production): after that a
    /// repeated request creates a new order.
    pub async fn purge_idempotency_keys(
        &self,
        older_than: chrono::Duration,
    ) -> Result<u64, StoreError> {
        let done =
            sqlx::query("DELETE FROM idempotency_keys WHERE created_at < now() - $1::interval")
                .bind(older_than)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected())
    }
}

async fn claim_key(
    tx: &mut Transaction<'static, Postgres>,
    idem: &IdempotencyRequest,
    response: &StoredResponse,
) -> Result<KeyCheck, StoreError> {
    // The response is known before anything is written, so the key and its response go in with
    // one statement; they become visible together at commit.
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (key, request_hash, response_status, response_body) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (key) DO NOTHING",
    )
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
    let existing = sqlx::query_as::<_, IdempotencyRow>(
        "SELECT request_hash, response_status, response_body FROM idempotency_keys WHERE key = $1",
    )
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

async fn insert_order(
    tx: &mut Transaction<'static, Postgres>,
    order: &NewOrder,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO orders (id, customer_id, customer_email, customer_name, account_created_at, \
                             currency, total, shipping_address, billing_country, payment, \
                             client_ip, status, fds, tasks) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    )
    .bind(order.id)
    .bind(&order.customer_id)
    .bind(&order.customer_email)
    .bind(&order.customer_name)
    .bind(order.account_created_at)
    .bind(&order.currency)
    .bind(order.total)
    .bind(&order.shipping_address)
    .bind(&order.billing_country)
    .bind(&order.payment)
    .bind(&order.client_ip)
    .bind(&order.status)
    .bind(&order.fds)
    .bind(&order.tasks)
    .execute(&mut **tx)
    .await?;

    if order.items.is_empty() {
        return Ok(());
    }
    let mut line_nos = Vec::with_capacity(order.items.len());
    let mut skus = Vec::with_capacity(order.items.len());
    let mut names = Vec::with_capacity(order.items.len());
    let mut quantities = Vec::with_capacity(order.items.len());
    let mut prices = Vec::with_capacity(order.items.len());
    for (line_no, item) in (0_i32..).zip(&order.items) {
        line_nos.push(line_no);
        skus.push(item.sku.as_str());
        names.push(item.name.as_str());
        quantities.push(item.quantity);
        prices.push(item.unit_price);
    }
    sqlx::query(
        "INSERT INTO order_items (order_id, line_no, sku, name, quantity, unit_price) \
         SELECT $1, i.line_no, i.sku, i.name, i.quantity, i.unit_price \
         FROM UNNEST($2::int4[], $3::text[], $4::text[], $5::int4[], $6::int8[]) \
              AS i (line_no, sku, name, quantity, unit_price)",
    )
    .bind(order.id)
    .bind(line_nos)
    .bind(skus)
    .bind(names)
    .bind(quantities)
    .bind(prices)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
