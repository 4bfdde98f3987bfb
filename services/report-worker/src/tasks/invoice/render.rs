//! The invoice of an order as a PDF: who sells, who pays (the customer and the billing country),
//! where it goes (the shipping address), the lines, and the totals with the VAT they include.
//!
//! Prices are VAT-inclusive, as Korean shops quote them: the VAT is 10/110 of the total, rounded
//! to the currency's minor unit, and the supply value is the rest (₩90,000 → ₩81,818 + ₩8,182).
//! The same rule is applied to every currency; a shop selling where another rate applies needs a
//! tax table this does not have. Money is whole numbers in the minor unit throughout, in `i128`,
//! so no line can overflow or round.

use chrono::{DateTime, Utc};
use chrono_tz::Asia::Seoul;
use serde_json::Value;
use shopfds_documents::{Column, DocumentError, DocumentFont, Layout};
use shopfds_protocol::money::format_amount;
use shopfds_store::OrderRecord;

/// What the totals of an invoice are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub supply: i128,
    pub vat: i128,
    pub total: i128,
}

/// The VAT included in `total` (10/110, rounded half up) and the supply value.
pub fn totals(total: i128) -> Totals {
    let vat = (2 * total + 11).div_euclid(22);
    Totals {
        supply: total - vat,
        vat,
        total,
    }
}

/// The invoice number printed on it: `INV-` and the order id's first block, upper case.
pub fn invoice_number(order: &OrderRecord) -> String {
    let id = order.id.simple().to_string().to_uppercase();
    format!("INV-{}", &id[..8.min(id.len())])
}

/// The PDF of `order`'s invoice, issued at `issued`.
pub fn render(
    font: &DocumentFont,
    order: &OrderRecord,
    issued: DateTime<Utc>,
) -> Result<Vec<u8>, DocumentError> {
    let money = |amount: i128| match i64::try_from(amount) {
        Ok(amount) => format_amount(amount, &order.currency),
        Err(_) => format!("{amount} {}", order.currency),
    };
    let mut doc = Layout::new(font, format!("청구서 {}", order.id));
    doc.title("청구서 / Invoice");
    doc.key_values(&[
        ("청구서 번호 / Invoice no.", invoice_number(order)),
        ("주문번호 / Order", order.id.to_string()),
        ("주문일 / Ordered", seoul(order.created_at)),
        ("발행일 / Issued", seoul(issued)),
    ]);

    doc.heading("판매자 / Seller");
    doc.paragraph("ShopFDS");

    doc.heading("청구지 / Bill to");
    doc.key_values(&[
        ("이름 / Name", order.customer_name.clone()),
        ("이메일 / Email", order.customer_email.clone()),
        ("국가 / Country", order.billing_country.clone()),
    ]);

    doc.heading("배송지 / Ship to");
    let address = &order.shipping_address;
    let field = |key: &str| {
        address
            .get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .unwrap_or("")
            .to_owned()
    };
    let street = [field("line1"), field("line2")]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(", ");
    let city = [field("city"), field("postal_code"), field("country")]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    doc.key_values(&[
        ("받는 분 / Recipient", field("name")),
        ("주소 / Address", street),
        ("도시 / City", city),
        ("전화 / Phone", field("phone")),
    ]);

    doc.heading("품목 / Items");
    let rows: Vec<Vec<String>> = order
        .items
        .iter()
        .map(|item| {
            let line = i128::from(item.unit_price) * i128::from(item.quantity);
            vec![
                item.name.clone(),
                item.sku.clone(),
                item.quantity.to_string(),
                money(i128::from(item.unit_price)),
                money(line),
            ]
        })
        .collect();
    doc.table(
        &[
            Column::left("상품 / Item", 4.0),
            Column::left("SKU", 1.6),
            Column::right("수량 / Qty", 1.1),
            Column::right("단가 / Unit price", 1.8),
            Column::right("금액 / Amount", 1.8),
        ],
        &rows,
    );
    let t = totals(i128::from(order.total));
    doc.totals(&[
        ("공급가액 / Supply value", money(t.supply)),
        ("부가세 10% / VAT", money(t.vat)),
        ("합계 / Total", money(t.total)),
    ]);
    doc.note("가격은 부가세 포함 금액입니다. Prices include 10% VAT.");
    doc.finish()
}

fn seoul(at: DateTime<Utc>) -> String {
    at.with_timezone(&Seoul)
        .format("%Y-%m-%d %H:%M (KST)")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vat_is_a_tenth_of_the_supply_value_rounded_half_up() {
        assert_eq!(
            totals(90_000),
            Totals {
                supply: 81_818,
                vat: 8_182,
                total: 90_000
            }
        );
        assert_eq!(totals(110).vat, 10);
        assert_eq!(totals(11).vat, 1);
        assert_eq!(totals(5).vat, 0);
        assert_eq!(totals(6).vat, 1);
        assert_eq!(totals(0).vat, 0);
        let big = i128::from(i64::MAX);
        assert_eq!(totals(big).supply + totals(big).vat, big);
    }
}
