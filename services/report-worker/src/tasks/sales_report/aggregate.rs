//! Step 2, "Aggregating...": the figures a report shows, from the sums step 1 read. Pure, so
//! every rule below is a unit test.
//!
//! - **What sells.** Orders whose status is `accepted` (APPROVE) or `review` (REVIEW) count as
//!   sales: revenue, order count, average basket, top products. A review order was taken and
//!   confirmed; review is a second look, not a refusal. `blocked` (BLOCK) orders never shipped:
//!   they count in the FDS decisions and in `blocked_orders`, never in revenue.
//! - **FDS decisions** are the orders' current status, which follows their latest fraud
//!   decision (a batch re-evaluation of a fallback decision included).
//! - **Currencies.** Amounts are never converted (the shop keeps no exchange rates): revenue,
//!   average basket, revenue per day and top products are per currency, KRW (the shop's own)
//!   first, then the others alphabetically. The order count is over every currency.
//! - **Average basket** = revenue / orders of that currency, in minor units, rounded half up.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use serde_json::{Map, Value, json};
use shopfds_protocol::money::format_amount;
use shopfds_store::{ProductSales, SalesData};

use super::period::Period;

/// The shop's own currency, listed first.
pub const MAIN_CURRENCY: &str = "KRW";

/// The orders of one day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Day {
    pub day: NaiveDate,
    /// Orders that count as sales (not blocked), every currency.
    pub orders: i64,
    pub approve: i64,
    pub review: i64,
    pub block: i64,
}

/// The sales in one currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrencySales {
    pub currency: String,
    pub revenue: i64,
    pub orders: i64,
    pub average_basket: i64,
    /// Revenue of each day of the period, in the order of [`Summary::days`].
    pub revenue_by_day: Vec<i64>,
    /// The best products by revenue, at most `TOP_PRODUCTS`.
    pub top_products: Vec<ProductSales>,
}

/// Everything the PDF, the mail and the result show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub period: Period,
    /// Every day of the period, days without orders included.
    pub days: Vec<Day>,
    /// The currencies with sales, KRW first.
    pub currencies: Vec<CurrencySales>,
    /// Orders that count as sales, every currency.
    pub orders: i64,
    pub blocked_orders: i64,
}

impl Summary {
    pub fn new(period: Period, data: SalesData) -> Summary {
        let mut days: Vec<Day> = period
            .each_day()
            .map(|day| Day {
                day,
                orders: 0,
                approve: 0,
                review: 0,
                block: 0,
            })
            .collect();
        let index: BTreeMap<NaiveDate, usize> =
            days.iter().enumerate().map(|(i, d)| (d.day, i)).collect();
        let mut currencies: BTreeMap<String, CurrencySales> = BTreeMap::new();
        for row in &data.days {
            let Some(day) = index.get(&row.day).and_then(|&i| days.get_mut(i)) else {
                continue;
            };
            if row.status == "blocked" {
                day.block = day.block.saturating_add(row.orders);
                continue;
            }
            if row.status == "review" {
                day.review = day.review.saturating_add(row.orders);
            } else {
                day.approve = day.approve.saturating_add(row.orders);
            }
            day.orders = day.orders.saturating_add(row.orders);
            let sales = currencies
                .entry(row.currency.clone())
                .or_insert_with(|| CurrencySales {
                    currency: row.currency.clone(),
                    revenue: 0,
                    orders: 0,
                    average_basket: 0,
                    revenue_by_day: vec![0; index.len()],
                    top_products: Vec::new(),
                });
            sales.revenue = sales.revenue.saturating_add(row.amount);
            sales.orders = sales.orders.saturating_add(row.orders);
            if let Some(i) = index.get(&row.day)
                && let Some(amount) = sales.revenue_by_day.get_mut(*i)
            {
                *amount = amount.saturating_add(row.amount);
            }
        }
        for product in data.top_products {
            if let Some(sales) = currencies.get_mut(&product.currency) {
                sales.top_products.push(product);
            }
        }
        let mut currencies: Vec<CurrencySales> = currencies.into_values().collect();
        for sales in &mut currencies {
            sales.average_basket = average(sales.revenue, sales.orders);
        }
        // BTreeMap order is alphabetical; the shop's own currency goes first.
        currencies.sort_by_key(|c| c.currency != MAIN_CURRENCY);
        let orders = days.iter().map(|d| d.orders).fold(0, i64::saturating_add);
        let blocked_orders = days.iter().map(|d| d.block).fold(0, i64::saturating_add);
        Summary {
            period,
            days,
            currencies,
            orders,
            blocked_orders,
        }
    }

    /// The best-selling product of the first currency (KRW when there is any).
    pub fn top_product(&self) -> Option<&ProductSales> {
        self.currencies.first()?.top_products.first()
    }

    /// Orders per FDS decision over the period.
    pub fn decisions(&self) -> (i64, i64, i64) {
        self.days.iter().fold((0, 0, 0), |(a, r, b), d| {
            (
                a.saturating_add(d.approve),
                r.saturating_add(d.review),
                b.saturating_add(d.block),
            )
        })
    }

    /// `₩210,000 · $19.99`: one amount per currency (`-` without sales).
    pub fn per_currency(&self, amount: impl Fn(&CurrencySales) -> i64) -> String {
        if self.currencies.is_empty() {
            return "-".to_owned();
        }
        self.currencies
            .iter()
            .map(|c| format_amount(amount(c), &c.currency))
            .collect::<Vec<_>>()
            .join(" · ")
    }

    /// The result's `totals`.
    pub fn totals_json(&self) -> Value {
        let by_currency = |amount: fn(&CurrencySales) -> i64| -> Value {
            Value::Object(
                self.currencies
                    .iter()
                    .map(|c| (c.currency.clone(), json!(amount(c))))
                    .collect::<Map<String, Value>>(),
            )
        };
        let (approve, review, block) = self.decisions();
        json!({
            "orders": self.orders,
            "blocked_orders": self.blocked_orders,
            "revenue": by_currency(|c| c.revenue),
            "average_basket": by_currency(|c| c.average_basket),
            "top_product": self.top_product().map(|p| json!({
                "sku": p.sku,
                "name": p.name,
                "currency": p.currency,
                "quantity": p.quantity,
                "revenue": p.revenue,
            })),
            "fds_decisions": {"APPROVE": approve, "REVIEW": review, "BLOCK": block},
        })
    }
}

/// `revenue / orders` rounded half up; 0 without orders.
fn average(revenue: i64, orders: i64) -> i64 {
    if orders <= 0 {
        return 0;
    }
    let (revenue, orders) = (i128::from(revenue), i128::from(orders));
    i64::try_from((2 * revenue + orders).div_euclid(2 * orders)).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use shopfds_store::DailySales;

    use super::*;

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

    fn product(currency: &str, sku: &str, revenue: i64) -> ProductSales {
        ProductSales {
            currency: currency.to_owned(),
            sku: sku.to_owned(),
            name: format!("name {sku}"),
            quantity: 1,
            revenue,
        }
    }

    fn period(start: &str, end: &str) -> Period {
        Period {
            start: day(start),
            end: day(end),
            days: (day(end) - day(start)).num_days() + 1,
        }
    }

    #[test]
    fn blocked_orders_are_decisions_not_sales() {
        let data = SalesData {
            days: vec![
                row("2026-11-01", "KRW", "accepted", 2, 120_000),
                row("2026-11-01", "KRW", "blocked", 1, 2_000_000),
                row("2026-11-03", "KRW", "review", 1, 30_000),
                row("2026-11-03", "USD", "accepted", 1, 1999),
            ],
            top_products: vec![
                product("KRW", "KB-101", 90_000),
                product("KRW", "MS-202", 60_000),
                product("USD", "US-1", 1999),
            ],
        };
        let summary = Summary::new(period("2026-11-01", "2026-11-03"), data);
        assert_eq!(summary.days.len(), 3, "the empty 2nd is a day too");
        assert_eq!(summary.days[1].orders, 0);
        assert_eq!(
            (
                summary.days[0].approve,
                summary.days[0].block,
                summary.days[0].orders
            ),
            (2, 1, 2)
        );
        assert_eq!(summary.days[2].review, 1);
        assert_eq!(summary.orders, 4);
        assert_eq!(summary.blocked_orders, 1);
        assert_eq!(summary.decisions(), (3, 1, 1));

        let krw = &summary.currencies[0];
        assert_eq!(krw.currency, "KRW");
        assert_eq!(krw.revenue, 150_000);
        assert_eq!(krw.orders, 3);
        assert_eq!(krw.average_basket, 50_000);
        assert_eq!(krw.revenue_by_day, vec![120_000, 0, 30_000]);
        assert_eq!(summary.currencies[1].currency, "USD");
        assert_eq!(
            summary.top_product().map(|p| p.sku.as_str()),
            Some("KB-101")
        );
        assert_eq!(summary.per_currency(|c| c.revenue), "₩150,000 · $19.99");

        let totals = summary.totals_json();
        assert_eq!(totals["revenue"], json!({"KRW": 150_000, "USD": 1999}));
        assert_eq!(totals["average_basket"]["KRW"], 50_000);
        assert_eq!(totals["orders"], 4);
        assert_eq!(totals["blocked_orders"], 1);
        assert_eq!(totals["top_product"]["sku"], "KB-101");
        assert_eq!(
            totals["fds_decisions"],
            json!({"APPROVE": 3, "REVIEW": 1, "BLOCK": 1})
        );
    }

    #[test]
    fn krw_comes_first_whatever_the_alphabet_says() {
        let data = SalesData {
            days: vec![
                row("2026-11-01", "EUR", "accepted", 1, 1000),
                row("2026-11-01", "KRW", "accepted", 1, 1000),
                row("2026-11-01", "USD", "accepted", 1, 1000),
            ],
            top_products: Vec::new(),
        };
        let summary = Summary::new(period("2026-11-01", "2026-11-01"), data);
        let order: Vec<&str> = summary
            .currencies
            .iter()
            .map(|c| c.currency.as_str())
            .collect();
        assert_eq!(order, ["KRW", "EUR", "USD"]);
    }

    #[test]
    fn an_empty_period_has_days_and_no_sales() {
        let summary = Summary::new(period("2026-11-01", "2026-11-07"), SalesData::default());
        assert_eq!(summary.days.len(), 7);
        assert!(summary.currencies.is_empty());
        assert_eq!(summary.top_product(), None);
        assert_eq!(summary.per_currency(|c| c.revenue), "-");
        assert_eq!(summary.totals_json()["revenue"], json!({}));
    }

    #[test]
    fn the_average_basket_rounds_half_up() {
        assert_eq!(average(100, 3), 33);
        assert_eq!(average(200, 3), 67);
        assert_eq!(average(5, 2), 3);
        assert_eq!(average(0, 0), 0);
        assert_eq!(average(i64::MAX, 1), i64::MAX);
    }
}
