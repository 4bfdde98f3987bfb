//! Steps 3 and 4, "Creating charts..." and "Generating PDF...": the charts (plotters SVG, through
//! `shopfds_documents`) and the PDF that holds them, in Korean and English:
//!
//! 1. the title 매출 리포트 / Sales report, the period, and the totals: orders, revenue, average
//!    basket, blocked orders, the top product;
//! 2. revenue per day: a bar chart per currency;
//! 3. top products: a bar chart of the first currency's, and a table per currency (rank,
//!    product, SKU, units, revenue);
//! 4. FDS decisions per day: a line chart (APPROVE, REVIEW, BLOCK) and a table per day with the
//!    orders and the revenue of the first currency.
//!
//! Drawing cannot fail on data (an empty period gives empty charts), so an error here is a bug
//! or a broken font: permanent.

use chrono::Utc;
use shopfds_broker::TaskError;
use shopfds_documents::{BarChart, Column, DocumentFont, Layout, LineChart};
use shopfds_protocol::money::format_amount;

use super::aggregate::Summary;
use super::period::TIME_ZONE;

/// The charts' height on the page, in points.
const CHART_HEIGHT: f32 = 210.0;

/// The charts of step 3, as SVG.
pub struct Charts {
    /// One per currency, in the order of `Summary::currencies`.
    pub revenue_per_day: Vec<String>,
    /// The first currency's top products; `None` without sales.
    pub top_products: Option<String>,
    pub decisions_per_day: String,
}

/// Step 3.
pub fn charts(summary: &Summary, font: &DocumentFont) -> Result<Charts, TaskError> {
    let labels: Vec<String> = summary
        .days
        .iter()
        .map(|d| d.day.format("%m-%d").to_string())
        .collect();
    let revenue_per_day = summary
        .currencies
        .iter()
        .map(|c| {
            BarChart {
                title: format!("일별 매출 / Revenue per day ({})", c.currency),
                labels: labels.clone(),
                values: c
                    .revenue_by_day
                    .iter()
                    .map(|v| major(*v, &c.currency))
                    .collect(),
            }
            .svg(font)
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(failed)?;
    let top_products = summary
        .currencies
        .first()
        .filter(|c| !c.top_products.is_empty())
        .map(|c| {
            BarChart {
                title: format!("상위 상품 / Top products ({})", c.currency),
                labels: c.top_products.iter().map(|p| p.sku.clone()).collect(),
                values: c
                    .top_products
                    .iter()
                    .map(|p| major(p.revenue, &c.currency))
                    .collect(),
            }
            .svg(font)
        })
        .transpose()
        .map_err(failed)?;
    let count = |f: fn(&super::aggregate::Day) -> i64| -> Vec<f64> {
        summary.days.iter().map(|d| f(d) as f64).collect()
    };
    let decisions_per_day = LineChart {
        title: "일별 FDS 결정 / FDS decisions per day".to_owned(),
        labels,
        series: vec![
            ("APPROVE".to_owned(), count(|d| d.approve)),
            ("REVIEW".to_owned(), count(|d| d.review)),
            ("BLOCK".to_owned(), count(|d| d.block)),
        ],
    }
    .svg(font)
    .map_err(failed)?;
    Ok(Charts {
        revenue_per_day,
        top_products,
        decisions_per_day,
    })
}

/// Step 4: the PDF's bytes.
pub fn pdf(
    summary: &Summary,
    charts: &Charts,
    font: &DocumentFont,
    task_id: &str,
) -> Result<Vec<u8>, TaskError> {
    let period = &summary.period;
    let mut doc = Layout::new(font, format!("매출 리포트 {}", period.label()));
    doc.title("매출 리포트 / Sales report");
    let (approve, review, block) = summary.decisions();
    let top = summary.top_product().map_or_else(
        || "-".to_owned(),
        |p| {
            format!(
                "{} ({}) {}",
                p.name,
                p.sku,
                format_amount(p.revenue, &p.currency)
            )
        },
    );
    doc.key_values(&[
        (
            "기간 / Period",
            format!("{} ({TIME_ZONE}, {}일 / days)", period.label(), period.days),
        ),
        ("주문 수 / Orders", summary.orders.to_string()),
        ("매출 / Revenue", summary.per_currency(|c| c.revenue)),
        (
            "평균 객단가 / Average basket",
            summary.per_currency(|c| c.average_basket),
        ),
        (
            "차단된 주문 / Blocked orders",
            summary.blocked_orders.to_string(),
        ),
        (
            "FDS 결정 / FDS decisions",
            format!("APPROVE {approve} · REVIEW {review} · BLOCK {block}"),
        ),
        ("최고 매출 상품 / Top product", top),
    ]);
    doc.note(
        "매출은 승인(APPROVE)과 검토(REVIEW) 주문의 합계이며, 차단(BLOCK) 주문은 FDS 결정에만 \
         집계됩니다. 통화별로 집계하며 환산하지 않습니다. / Revenue sums approved and review \
         orders; blocked orders count in the FDS decisions only. Each currency on its own, \
         never converted.",
    );

    doc.heading("일별 매출 / Revenue per day");
    if charts.revenue_per_day.is_empty() {
        doc.paragraph("이 기간에는 매출이 없습니다. / No sales in this period.");
    }
    for svg in &charts.revenue_per_day {
        doc.chart(svg, CHART_HEIGHT).map_err(failed)?;
    }

    doc.heading("상위 상품 / Top products");
    if let Some(svg) = &charts.top_products {
        doc.chart(svg, CHART_HEIGHT).map_err(failed)?;
    }
    for currency in &summary.currencies {
        let columns = [
            Column::right("#", 0.5),
            Column::left(format!("상품 / Product ({})", currency.currency), 4.0),
            Column::left("SKU", 1.8),
            Column::right("수량 / Units", 1.3),
            Column::right("매출 / Revenue", 2.0),
        ];
        let rows: Vec<Vec<String>> = currency
            .top_products
            .iter()
            .enumerate()
            .map(|(i, p)| {
                vec![
                    (i + 1).to_string(),
                    p.name.clone(),
                    p.sku.clone(),
                    p.quantity.to_string(),
                    format_amount(p.revenue, &p.currency),
                ]
            })
            .collect();
        doc.table(&columns, &rows);
    }

    doc.heading("일별 FDS 결정 / FDS decisions per day");
    doc.chart(&charts.decisions_per_day, CHART_HEIGHT)
        .map_err(failed)?;
    let first = summary.currencies.first();
    let revenue_title = first.map_or_else(
        || "매출 / Revenue".to_owned(),
        |c| format!("매출 / Revenue ({})", c.currency),
    );
    let columns = [
        Column::left("날짜 / Day", 2.0),
        Column::right("주문 / Orders", 1.5),
        Column::right(revenue_title, 2.4),
        Column::right("APPROVE", 1.4),
        Column::right("REVIEW", 1.4),
        Column::right("BLOCK", 1.4),
    ];
    let rows: Vec<Vec<String>> = summary
        .days
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let revenue = first.map_or_else(
                || "-".to_owned(),
                |c| format_amount(c.revenue_by_day.get(i).copied().unwrap_or(0), &c.currency),
            );
            vec![
                d.day.to_string(),
                d.orders.to_string(),
                revenue,
                d.approve.to_string(),
                d.review.to_string(),
                d.block.to_string(),
            ]
        })
        .collect();
    doc.table(&columns, &rows);
    doc.note(&format!(
        "생성 / Generated {} UTC · task {task_id}",
        Utc::now().format("%Y-%m-%d %H:%M")
    ));
    doc.finish().map_err(failed)
}

/// An amount in the currency's major unit, for a chart's axis (`1999` USD → `19.99`).
fn major(minor: i64, currency: &str) -> f64 {
    let digits = shopfds_protocol::money::minor_unit_digits(currency).unwrap_or(2);
    minor as f64 / 10f64.powi(i32::try_from(digits).unwrap_or(2))
}

fn failed(e: shopfds_documents::DocumentError) -> TaskError {
    TaskError::permanent(format!("sales report: {e}"))
}
