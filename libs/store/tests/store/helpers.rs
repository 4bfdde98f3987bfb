//! Test fixtures: a fresh, migrated database per test (created by `Store::connect` itself) and
//! builders for orders and outbox messages.

// Fixtures fail the test loudly; clippy's in-test allowance only covers `#[test]` bodies.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use chrono::{TimeZone, Utc};
use serde_json::json;
use shopfds_store::{
    DatabaseSettings, IdempotencyRequest, NewOrder, NewOrderItem, OutboxMessage, PendingTask,
    Store, StoredResponse,
};
use sqlx::Connection;
use sqlx::postgres::PgConnection;
use uuid::Uuid;

/// Server URL without a database; `SHOPFDS_TEST_POSTGRES` overrides it.
pub fn server_url() -> String {
    std::env::var("SHOPFDS_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

pub fn unique_db_name() -> String {
    format!("shopfds_test_{}", Uuid::new_v4().simple())
}

pub fn settings_for(db_name: &str) -> DatabaseSettings {
    DatabaseSettings::with_url(format!("{}/{db_name}", server_url()))
}

pub struct TestStore {
    pub store: Store,
    pub db_name: String,
}

/// A store on a database of its own, created and migrated by `Store::connect`.
pub async fn spawn_store() -> TestStore {
    let db_name = unique_db_name();
    let store = Store::connect(&settings_for(&db_name))
        .await
        .expect("connect to a fresh test database");
    TestStore { store, db_name }
}

impl TestStore {
    /// Closes the pool and drops the database. Not a `Drop` impl (it is async); a test that
    /// panics leaves its database behind, named `shopfds_test_*`.
    pub async fn cleanup(self) {
        self.store.close().await;
        drop_database(&self.db_name).await;
    }
}

pub async fn maintenance_connection() -> PgConnection {
    PgConnection::connect(&format!("{}/postgres", server_url()))
        .await
        .expect("connect to the maintenance database")
}

pub async fn drop_database(name: &str) {
    let mut conn = maintenance_connection().await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
    )))
    .execute(&mut conn)
    .await
    .expect("drop test database");
    let _ = conn.close().await;
}

pub async fn database_exists(name: &str) -> bool {
    let mut conn = maintenance_connection().await;
    let exists = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(name)
        .fetch_one(&mut conn)
        .await
        .expect("query pg_database");
    let _ = conn.close().await;
    exists
}

pub fn order(items: Vec<NewOrderItem>) -> NewOrder {
    let total = items
        .iter()
        .map(|i| i64::from(i.quantity) * i.unit_price)
        .sum();
    let id = Uuid::new_v4();
    NewOrder {
        id,
        customer_id: "c-1001".to_owned(),
        customer_email: "minsu.kim@example.com".to_owned(),
        customer_name: "김민수".to_owned(),
        account_created_at: Utc.with_ymd_and_hms(2025, 3, 1, 0, 0, 0).single(),
        currency: "KRW".to_owned(),
        total,
        items,
        shipping_address: json!({ "name": "김민수", "line1": "세종대로 110", "line2": null,
                                  "city": "Seoul", "postal_code": "04524", "country": "KR",
                                  "phone": "+82-2-120" }),
        billing_country: "KR".to_owned(),
        payment: json!({ "method": "card", "card_fingerprint": "fp_9f8e7d" }),
        client_ip: Some("203.0.113.7".to_owned()),
        status: "accepted".to_owned(),
        fds: json!({ "score": 12, "decision": "APPROVE", "reasons": [] }),
        tasks: json!({ "send_order_confirmation_email": format!("{id}-email") }),
    }
}

pub fn item(sku: &str, quantity: i32, unit_price: i64) -> NewOrderItem {
    NewOrderItem {
        sku: sku.to_owned(),
        name: format!("item {sku}"),
        quantity,
        unit_price,
    }
}

pub fn simple_order() -> NewOrder {
    order(vec![item("KB-101", 2, 45000)])
}

pub fn message(task_id: &str) -> OutboxMessage {
    OutboxMessage {
        task_id: task_id.to_owned(),
        exchange: "email".to_owned(),
        routing_key: "email".to_owned(),
        headers: json!({ "lang": "py", "task": "send_order_confirmation_email", "id": task_id }),
        properties: json!({ "correlation_id": task_id, "content_type": "application/json",
                            "content_encoding": "utf-8", "delivery_mode": 2, "priority": 0 }),
        body: format!(r#"[[], {{"order_id": "{task_id}"}}, {{}}]"#).into_bytes(),
    }
}

pub fn pending(task_id: &str) -> PendingTask {
    PendingTask {
        task_id: task_id.to_owned(),
        name: "send_order_confirmation_email".to_owned(),
        queue: "email".to_owned(),
    }
}

pub fn idem(key: &str, hash: &str) -> IdempotencyRequest {
    idem_in("", key, hash)
}

/// A key in the scope of API key id `scope` (empty: anonymous).
pub fn idem_in(scope: &str, key: &str, hash: &str) -> IdempotencyRequest {
    IdempotencyRequest {
        scope: scope.to_owned(),
        key: key.to_owned(),
        request_hash: hash.to_owned(),
    }
}

pub fn response_for(order: &NewOrder) -> StoredResponse {
    StoredResponse {
        status: 201,
        body: json!({ "order_id": order.id, "status": order.status }),
    }
}

pub async fn count(store: &Store, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(store.pool())
        .await
        .expect("count query")
}

/// Polls `cond` every 20 ms for up to 10 s.
pub async fn eventually<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
