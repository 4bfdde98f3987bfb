//! Sales figures for reports (`store.sales()`), summed in SQL over `orders` and `order_items`.
//!
//! A period is a range of calendar days in a time zone (the reports use Asia/Seoul): an order
//! belongs to the day its `created_at` falls on there, and the range is turned into two
//! instants so the filter is a plain range on `created_at`. Both reads of [`Sales::period`]
//! run in one read-only REPEATABLE READ transaction, so the daily figures and the top products
//! describe the same orders even while new ones are written.
//!
//! Amounts are in each order's currency, never converted: every figure is per currency.
//! What counts as revenue (which statuses) is the caller's decision; the daily figures are
//! returned per status so it can decide.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::StoreError;

/// Orders of one day, currency and status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct DailySales {
    /// The calendar day in the period's time zone.
    pub day: NaiveDate,
    pub currency: String,
    /// The order's status: `accepted`, `review` or `blocked` (its current fraud decision).
    pub status: String,
    pub orders: i64,
    /// The sum of the orders' totals, minor units of `currency`.
    pub amount: i64,
}

/// One product's sales in one currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct ProductSales {
    pub currency: String,
    pub sku: String,
    /// The name on the product's most recent order line.
    pub name: String,
    /// Units sold.
    pub quantity: i64,
    /// `quantity × unit_price` summed over its lines, minor units of `currency`.
    pub revenue: i64,
}

/// What [`Sales::period`] read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SalesData {
    /// Ordered by day, currency, status; days without orders are absent.
    pub days: Vec<DailySales>,
    /// Per currency (alphabetically), the best products by revenue (ties by SKU).
    pub top_products: Vec<ProductSales>,
}

repository! {
    /// Read-only sums over `orders` and `order_items`.
    Sales
}

/// `created_at` within the days `$1` to `$2` (dates) in time zone `$3`: a range on the column,
/// so an index on `created_at` would serve it.
macro_rules! in_period {
    () => {
        "o.created_at >= ($1::date)::timestamp AT TIME ZONE $3 \
         AND o.created_at < ($2::date + 1)::timestamp AT TIME ZONE $3"
    };
}

impl Sales {
    /// The orders of the days `first` to `last` (both included) in `time_zone` (an IANA name,
    /// e.g. `Asia/Seoul`): counts and totals per day, currency and status, and per currency the
    /// `top` products by revenue among the orders whose status is not `blocked`.
    pub async fn period(
        &self,
        first: NaiveDate,
        last: NaiveDate,
        time_zone: &str,
        top: i64,
    ) -> Result<SalesData, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *tx)
            .await?;
        let days = sqlx::query_as::<_, DailySales>(concat!(
            "SELECT (o.created_at AT TIME ZONE $3)::date AS day, o.currency, o.status, \
                    count(*)::int8 AS orders, sum(o.total)::int8 AS amount \
             FROM orders o WHERE ",
            in_period!(),
            " GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
        ))
        .bind(first)
        .bind(last)
        .bind(time_zone)
        .fetch_all(&mut *tx)
        .await?;
        let top_products = sqlx::query_as::<_, ProductSales>(concat!(
            "SELECT currency, sku, name, quantity, revenue FROM ( \
               SELECT o.currency, i.sku, \
                      (array_agg(i.name ORDER BY o.created_at DESC, i.line_no))[1] AS name, \
                      sum(i.quantity)::int8 AS quantity, \
                      sum(i.quantity::int8 * i.unit_price)::int8 AS revenue, \
                      row_number() OVER (PARTITION BY o.currency \
                                         ORDER BY sum(i.quantity::int8 * i.unit_price) DESC, \
                                                  i.sku) AS rank \
               FROM order_items i JOIN orders o ON o.id = i.order_id \
               WHERE ",
            in_period!(),
            " AND o.status <> 'blocked' \
               GROUP BY o.currency, i.sku \
             ) ranked WHERE rank <= $4 ORDER BY currency, rank"
        ))
        .bind(first)
        .bind(last)
        .bind(time_zone)
        .bind(top)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(SalesData { days, top_products })
    }
}
