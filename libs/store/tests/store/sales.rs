//! Sales figures of a period: orders fall on their day in the report's time zone (an order at
//! 23:30 UTC is the next day in Seoul), blocked orders are counted per status but left out of
//! the top products, and the top products are ranked by revenue within each currency.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::json;
use shopfds_store::{DailySales, NewOrder, Store, StoredResponse};

use crate::helpers::{item, order, spawn_store};

const SEOUL: &str = "Asia/Seoul";

async fn insert(store: &Store, mut order: NewOrder, status: &str, currency: &str, at: &str) {
    order.status = status.to_owned();
    order.currency = currency.to_owned();
    let at: DateTime<Utc> = at.parse().unwrap();
    let answer = StoredResponse {
        status: 201,
        body: json!({}),
    };
    store
        .orders()
        .create(None, &order, &[], &[], &answer)
        .await
        .unwrap();
    sqlx::query("UPDATE orders SET created_at = $2 WHERE id = $1")
        .bind(order.id)
        .bind(at)
        .execute(store.pool())
        .await
        .unwrap();
}

fn day(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

fn row(d: &str, currency: &str, status: &str, orders: i64, amount: i64) -> DailySales {
    DailySales {
        day: day(d),
        currency: currency.to_owned(),
        status: status.to_owned(),
        orders,
        amount,
    }
}

#[tokio::test]
async fn orders_fall_on_their_day_in_seoul_and_blocked_ones_sell_nothing() {
    let test = spawn_store().await;
    let store = &test.store;
    let keyboard = || item("KB-101", 2, 45_000);
    // 2026-10-31 14:59 UTC is 23:59 in Seoul: before the period.
    insert(
        store,
        order(vec![keyboard()]),
        "accepted",
        "KRW",
        "2026-10-31T14:59:00Z",
    )
    .await;
    // 2026-10-31 15:00 UTC is 2026-11-01 00:00 in Seoul: the first day.
    insert(
        store,
        order(vec![keyboard()]),
        "accepted",
        "KRW",
        "2026-10-31T15:00:00Z",
    )
    .await;
    insert(
        store,
        order(vec![item("MS-202", 1, 30_000)]),
        "review",
        "KRW",
        "2026-11-01T03:00:00Z",
    )
    .await;
    insert(
        store,
        order(vec![item("TV-900", 1, 2_000_000)]),
        "blocked",
        "KRW",
        "2026-11-01T04:00:00Z",
    )
    .await;
    insert(
        store,
        order(vec![item("MS-202", 3, 30_000)]),
        "accepted",
        "KRW",
        "2026-11-02T14:59:59Z",
    )
    .await;
    insert(
        store,
        order(vec![item("US-1", 1, 1999)]),
        "accepted",
        "USD",
        "2026-11-02T01:00:00Z",
    )
    .await;
    // 2026-11-02 15:00 UTC is 2026-11-03 in Seoul: after the period.
    insert(
        store,
        order(vec![keyboard()]),
        "accepted",
        "KRW",
        "2026-11-02T15:00:00Z",
    )
    .await;

    let data = store
        .sales()
        .period(day("2026-11-01"), day("2026-11-02"), SEOUL, 10)
        .await
        .unwrap();
    assert_eq!(
        data.days,
        vec![
            row("2026-11-01", "KRW", "accepted", 1, 90_000),
            row("2026-11-01", "KRW", "blocked", 1, 2_000_000),
            row("2026-11-01", "KRW", "review", 1, 30_000),
            row("2026-11-02", "KRW", "accepted", 1, 90_000),
            row("2026-11-02", "USD", "accepted", 1, 1999),
        ]
    );
    let top: Vec<(&str, &str, i64, i64)> = data
        .top_products
        .iter()
        .map(|p| (p.currency.as_str(), p.sku.as_str(), p.quantity, p.revenue))
        .collect();
    // MS-202: 1 + 3 units, ₩120,000, ahead of KB-101's ₩90,000; the blocked TV-900 is absent.
    assert_eq!(
        top,
        vec![
            ("KRW", "MS-202", 4, 120_000),
            ("KRW", "KB-101", 2, 90_000),
            ("USD", "US-1", 1, 1999),
        ]
    );
    assert_eq!(data.top_products[0].name, "item MS-202");

    let one = store
        .sales()
        .period(day("2026-11-01"), day("2026-11-02"), SEOUL, 1)
        .await
        .unwrap();
    assert_eq!(one.top_products.len(), 2, "one per currency");

    let empty = store
        .sales()
        .period(day("2026-12-01"), day("2026-12-31"), SEOUL, 10)
        .await
        .unwrap();
    assert!(empty.days.is_empty() && empty.top_products.is_empty());
    test.cleanup().await;
}
