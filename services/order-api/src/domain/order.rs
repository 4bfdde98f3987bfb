//! `POST /v1/orders` body: its wire shape (`OrderRequest`) and the checked order (`ValidOrder`).
//! Every rejection names the field as a path (`items[0].quantity`), like the JSON it came in.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::text::{ClientIp, Country, Currency, Email, Line, Token, blank_is_none};
use crate::error::ApiError;

// Every struct refuses fields it does not know: a misspelt `line_2` is an error, not a value
// silently dropped. The string rules are those of `super::text`; the lengths are here.

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OrderRequest {
    pub customer: CustomerIn,
    pub items: Vec<ItemIn>,
    pub currency: Currency,
    pub shipping_address: AddressIn,
    pub billing_country: Country,
    pub payment: PaymentIn,
    #[serde(default, deserialize_with = "blank_is_none")]
    pub client_ip: Option<ClientIp>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CustomerIn {
    pub id: Line<64>,
    pub email: Email,
    pub name: Line<200>,
    #[serde(default)]
    pub account_created_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ItemIn {
    pub sku: Line<64>,
    pub name: Line<200>,
    pub quantity: i64,
    pub unit_price: i64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AddressIn {
    pub name: Line<200>,
    pub line1: Line<200>,
    #[serde(default, deserialize_with = "blank_is_none")]
    pub line2: Option<Line<200>>,
    pub city: Line<100>,
    pub postal_code: Line<20>,
    pub country: Country,
    #[serde(default, deserialize_with = "blank_is_none")]
    pub phone: Option<Line<32>>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentIn {
    pub method: Line<32>,
    #[serde(default, deserialize_with = "blank_is_none")]
    pub card_fingerprint: Option<Token<128>>,
    #[serde(default, deserialize_with = "blank_is_none")]
    pub payment_token: Option<Token<255>>,
}

/// A checked order: every field within its rules, positive quantities, a total that fits.
#[derive(Debug, Clone)]
pub struct ValidOrder {
    pub request: OrderRequest,
    pub total: i64,
    pub client_ip: Option<IpAddr>,
}

const MAX_ITEMS: usize = 100;
const MAX_QUANTITY: i64 = 10_000;

/// The largest amount a limit may be: 2⁵³ − 1, the largest integer a JSON consumer reading
/// numbers as IEEE doubles (JavaScript, many others) gets back exactly.
pub const MAX_SAFE_AMOUNT: i64 = (1 << 53) - 1;

/// The largest amounts an order may carry, in minor units of its currency
/// (`ORDER_MAX_LINE_AMOUNT`, `ORDER_MAX_TOTAL`). Both are at most [`MAX_SAFE_AMOUNT`], and with
/// at most 100 lines the running total is checked against the limit before it could overflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AmountLimits {
    /// One line: `unit_price × quantity`.
    pub max_line: i64,
    pub max_total: i64,
}

impl Default for AmountLimits {
    fn default() -> Self {
        AmountLimits {
            max_line: 100_000_000_000,
            max_total: 1_000_000_000_000,
        }
    }
}

impl ValidOrder {
    /// Parses the raw body: JSON syntax, types and the string rules first (serde, with the path
    /// of the field), then the rules that span fields. Nothing but whitespace may follow the
    /// JSON value.
    pub fn parse(body: &[u8], limits: &AmountLimits) -> Result<ValidOrder, ApiError> {
        let request: OrderRequest = super::json::from_body(body)?;
        request.validate(limits)
    }
}

impl OrderRequest {
    fn validate(self, limits: &AmountLimits) -> Result<ValidOrder, ApiError> {
        if self
            .customer
            .account_created_at
            .is_some_and(|t| t > Utc::now() + chrono::Duration::minutes(5))
        {
            return Err(ApiError::validation(
                "customer.account_created_at",
                "is in the future",
            ));
        }
        if self.items.is_empty() {
            return Err(ApiError::validation(
                "items",
                "must contain at least one item",
            ));
        }
        if self.items.len() > MAX_ITEMS {
            return Err(ApiError::validation(
                "items",
                format!("at most {MAX_ITEMS} items per order"),
            ));
        }
        let mut total: i64 = 0;
        for (i, item) in self.items.iter().enumerate() {
            if !(1..=MAX_QUANTITY).contains(&item.quantity) {
                return Err(ApiError::validation(
                    &format!("items[{i}].quantity"),
                    format!("must be between 1 and {MAX_QUANTITY}"),
                ));
            }
            if item.unit_price < 0 {
                return Err(ApiError::validation(
                    &format!("items[{i}].unit_price"),
                    "must not be negative (minor units)",
                ));
            }
            let line = item
                .unit_price
                .checked_mul(item.quantity)
                .filter(|line| *line <= limits.max_line)
                .ok_or_else(|| {
                    ApiError::validation(
                        &format!("items[{i}].unit_price"),
                        format!(
                            "unit_price × quantity must be at most {} (minor units)",
                            limits.max_line
                        ),
                    )
                })?;
            total = total
                .checked_add(line)
                .filter(|total| *total <= limits.max_total)
                .ok_or_else(|| {
                    ApiError::validation(
                        "items",
                        format!(
                            "the order total must be at most {} (minor units)",
                            limits.max_total
                        ),
                    )
                })?;
        }
        let client_ip = self.client_ip.map(|ip| ip.0);
        Ok(ValidOrder {
            request: self,
            total,
            client_ip,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    pub fn sample() -> Value {
        json!({
            "customer": {"id": "c-1001", "email": "minsu.kim@example.com", "name": "김민수", "account_created_at": "2025-03-01T00:00:00Z"},
            "items": [{"sku": "KB-101", "name": "무선 키보드", "quantity": 2, "unit_price": 45000}],
            "currency": "KRW",
            "shipping_address": {"name": "김민수", "line1": "세종대로 110", "line2": null, "city": "Seoul", "postal_code": "04524", "country": "KR", "phone": "+82-2-120"},
            "billing_country": "KR",
            "payment": {"method": "card", "card_fingerprint": "fp_9f8e7d"},
            "client_ip": "203.0.113.7"
        })
    }

    fn field_of(body: Value) -> String {
        match ValidOrder::parse(body.to_string().as_bytes(), &AmountLimits::default()) {
            Err(ApiError::Validation { field, .. }) => field,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn accepts_the_design_example_and_totals_it() {
        let order =
            ValidOrder::parse(sample().to_string().as_bytes(), &AmountLimits::default()).unwrap();
        assert_eq!(order.total, 90000);
        assert_eq!(order.client_ip, "203.0.113.7".parse().ok());
    }

    #[test]
    fn names_the_offending_field() {
        let mut b = sample();
        b["items"][0]["quantity"] = json!(0);
        assert_eq!(field_of(b), "items[0].quantity");
        let mut b = sample();
        b["items"][0]["quantity"] = json!("two");
        assert_eq!(field_of(b), "items[0].quantity");
        let mut b = sample();
        b["customer"]["email"] = json!("not-an-email");
        assert_eq!(field_of(b), "customer.email");
        let mut b = sample();
        b["customer"].as_object_mut().unwrap().remove("email");
        assert_eq!(field_of(b), "customer.email");
        let mut b = sample();
        b.as_object_mut().unwrap().remove("items");
        assert_eq!(field_of(b), "items");
        let mut b = sample();
        b["currency"] = json!("XYZ");
        assert_eq!(field_of(b), "currency");
        let mut b = sample();
        b["shipping_address"]["country"] = json!("Korea");
        assert_eq!(field_of(b), "shipping_address.country");
        let mut b = sample();
        b["items"] = json!([]);
        assert_eq!(field_of(b), "items");
        let mut b = sample();
        b["items"][0]["unit_price"] = json!(i64::MAX);
        assert_eq!(field_of(b), "items[0].unit_price");
        let mut b = sample();
        b["client_ip"] = json!("300.1.1.1");
        assert_eq!(field_of(b), "client_ip");
        assert!(
            matches!(ValidOrder::parse(b"{\"customer\": ", &AmountLimits::default()), Err(ApiError::Validation { field, .. }) if field == "body")
        );
    }

    #[test]
    fn unknown_and_duplicate_fields_and_trailing_data_are_named() {
        let mut b = sample();
        b["coupon"] = json!("FREE");
        assert_eq!(field_of(b), "coupon");
        let mut b = sample();
        b["shipping_address"]["line_2"] = json!("Apt 1");
        assert_eq!(field_of(b), "shipping_address.line_2");
        let mut b = sample();
        b["items"][0]["discount"] = json!(1);
        assert_eq!(field_of(b), "items[0].discount");
        let body = sample().to_string();
        let twice = body.replacen(
            "\"currency\":\"KRW\"",
            "\"currency\":\"KRW\",\"currency\":\"USD\"",
            1,
        );
        assert!(
            matches!(ValidOrder::parse(twice.as_bytes(), &AmountLimits::default()), Err(ApiError::Validation { field, .. }) if field == "currency"),
            "{twice}"
        );
        for trailing in [format!("{body}x"), format!("{body}{body}")] {
            assert!(matches!(
                ValidOrder::parse(trailing.as_bytes(), &AmountLimits::default()),
                Err(ApiError::Validation { field, .. }) if field == "body"
            ));
        }
        assert!(
            ValidOrder::parse(format!("{body} \n").as_bytes(), &AmountLimits::default()).is_ok()
        );
    }

    #[test]
    fn blank_optional_fields_are_absent_and_text_is_trimmed() {
        let mut b = sample();
        b["shipping_address"]["line2"] = json!("  ");
        b["payment"]["card_fingerprint"] = json!("");
        b["customer"]["name"] = json!("  김민수\n");
        let order = ValidOrder::parse(b.to_string().as_bytes(), &AmountLimits::default()).unwrap();
        assert!(order.request.shipping_address.line2.is_none());
        assert!(order.request.payment.card_fingerprint.is_none());
        assert_eq!(order.request.customer.name.as_str(), "김민수");
    }

    #[test]
    fn amounts_past_the_limits_name_the_line_or_the_items() {
        let limits = AmountLimits {
            max_line: 1_000,
            max_total: 2_500,
        };
        let order = |lines: &[(i64, i64)]| {
            let mut b = sample();
            b["items"] = Value::Array(
                lines
                    .iter()
                    .map(|(q, p)| json!({"sku": "S", "name": "N", "quantity": q, "unit_price": p}))
                    .collect(),
            );
            ValidOrder::parse(b.to_string().as_bytes(), &limits)
        };
        assert_eq!(
            order(&[(2, 500), (1, 1_000), (1, 500)]).unwrap().total,
            2_500
        );
        let field = |r: Result<ValidOrder, ApiError>| match r {
            Err(ApiError::Validation { field, .. }) => field,
            other => panic!("expected a validation error, got {other:?}"),
        };
        assert_eq!(
            field(order(&[(1, 10), (1, 10), (3, 334)])),
            "items[2].unit_price"
        );
        assert_eq!(field(order(&[(1, 1_000), (1, 1_000), (1, 501)])), "items");
        assert_eq!(
            field(order(&[(10_000, i64::MAX / 2)])),
            "items[0].unit_price"
        );
        // The defaults stay below 2⁵³ whatever the number of lines.
        let defaults = AmountLimits::default();
        assert!(defaults.max_line <= MAX_SAFE_AMOUNT && defaults.max_total <= MAX_SAFE_AMOUNT);
    }
}
