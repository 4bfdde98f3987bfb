//! Orders: written in ONE transaction with their outgoing task messages (the transactional
//! outbox), the PENDING rows of their tasks and the HTTP `Idempotency-Key`, so an order either
//! exists with all its work queued or does not exist at all. The idempotency key is claimed
//! first (`idempotency::claim`); a replayed or conflicting key writes nothing else.
//! Afterwards only the tasks that ship and invoice an order fill in its tracking number and
//! invoice URL, and the batch evaluation replaces a fallback decision and its status
//! ([`crate::fds_batch::set_unscored_order_fds`]).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::StoreError;
use crate::idempotency::{self, CreateOutcome, IdempotencyRequest, KeyCheck, StoredResponse};
use crate::outbox::{OutboxMessage, PendingTask};

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

repository! {
    /// The `orders` and `order_items` tables.
    Orders
}

impl Orders {
    /// Writes an order in ONE transaction:
    /// 1. with `idem`, claims the key in its scope (`INSERT … ON CONFLICT DO NOTHING`). A key
    ///    already used in that scope with the same request hash replays its stored response,
    ///    with another hash it is a conflict; in both cases nothing else is written. A
    ///    concurrent request with the same scope and key waits on the unique index until the
    ///    first one commits, then sees its row and replays it.
    /// 2. inserts the order, its items, one outbox row per message and a PENDING `task_results`
    ///    row per task (existing rows are left alone);
    /// 3. stores `response` with the key;
    /// 4. `pg_notify('outbox_new')`, delivered to relays when the transaction commits.
    pub async fn create(
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
                match idempotency::claim(&mut tx, idem, response).await? {
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
            crate::outbox::insert(&mut tx, outbox, pending).await?;
            crate::activity_logs::record(
                &mut tx,
                Some(order.id),
                "order.created",
                &serde_json::json!({"status": order.status, "total": order.total, "currency": order.currency}),
            )
            .await?;
            tx.commit().await?;
            return Ok(CreateOutcome::Created);
        }
    }

    pub async fn get(&self, id: Uuid) -> Result<Option<OrderRecord>, StoreError> {
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
    pub async fn set_tracking_number(&self, id: Uuid, tracking: &str) -> Result<(), StoreError> {
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
    pub async fn set_invoice_url(&self, id: Uuid, url: &str) -> Result<(), StoreError> {
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
