//! `POST /v1/orders` body: its wire shape (`OrderRequest`) and the checked order (`ValidOrder`).
//! Every rejection names the field as a path (`items[0].quantity`), like the JSON it came in.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shopfds_protocol::money;

use crate::error::ApiError;

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct OrderRequest {
    pub customer: CustomerIn,
    pub items: Vec<ItemIn>,
    pub currency: String,
    pub shipping_address: AddressIn,
    pub billing_country: String,
    pub payment: PaymentIn,
    #[serde(default)]
    pub client_ip: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct CustomerIn {
    pub id: String,
    pub email: String,
    pub name: String,
    #[serde(default)]
    pub account_created_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ItemIn {
    pub sku: String,
    pub name: String,
    pub quantity: i64,
    pub unit_price: i64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct AddressIn {
    pub name: String,
    pub line1: String,
    #[serde(default)]
    pub line2: Option<String>,
    pub city: String,
    pub postal_code: String,
    pub country: String,
    #[serde(default)]
    pub phone: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct PaymentIn {
    pub method: String,
    #[serde(default)]
    pub card_fingerprint: Option<String>,
    #[serde(default)]
    pub payment_token: Option<String>,
}

/// A checked order: trimmed text, known currency, positive quantities, a total that fits.
#[derive(Debug, Clone)]
pub struct ValidOrder {
    pub request: OrderRequest,
    pub total: i64,
    pub client_ip: Option<IpAddr>,
}

const MAX_ITEMS: usize = 100;
const MAX_QUANTITY: i64 = 10_000;

impl ValidOrder {
    /// Parses the raw body: JSON syntax and types first (serde, with the path of the field),
    /// then the rules types cannot say.
    pub fn parse(body: &[u8]) -> Result<ValidOrder, ApiError> {
        let de = &mut serde_json::Deserializer::from_slice(body);
        let request: OrderRequest = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if inner.is_syntax() || inner.is_eof() {
                ApiError::validation("body", format!("not valid JSON: {inner}"))
            } else {
                // "missing field `x`" is reported on the parent; name the field itself.
                let text = inner.to_string();
                let field = match missing_field(&text) {
                    Some(missing) if path == "." => missing.to_owned(),
                    Some(missing) => format!("{path}.{missing}"),
                    None if path == "." => "body".to_owned(),
                    None => path,
                };
                ApiError::validation(&field, strip_position(&text))
            }
        })?;
        request.validate()
    }
}

fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.split('`').next()
}

fn strip_position(message: &str) -> String {
    message
        .split(" at line ")
        .next()
        .unwrap_or(message)
        .to_owned()
}

impl OrderRequest {
    fn validate(mut self) -> Result<ValidOrder, ApiError> {
        let c = &mut self.customer;
        c.id = text("customer.id", &c.id, 64)?;
        c.name = text("customer.name", &c.name, 200)?;
        c.email = email("customer.email", &c.email)?;
        if c.account_created_at
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
        self.currency = self.currency.trim().to_ascii_uppercase();
        if money::minor_unit_digits(&self.currency).is_none() {
            let known: Vec<&str> = money::supported_currencies().collect();
            return Err(ApiError::validation(
                "currency",
                format!(
                    "{:?} is not accepted; use one of {}",
                    self.currency,
                    known.join(", ")
                ),
            ));
        }
        let mut total: i64 = 0;
        for (i, item) in self.items.iter_mut().enumerate() {
            item.sku = text(&format!("items[{i}].sku"), &item.sku, 64)?;
            item.name = text(&format!("items[{i}].name"), &item.name, 200)?;
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
            total = item
                .unit_price
                .checked_mul(item.quantity)
                .and_then(|line| total.checked_add(line))
                .ok_or_else(|| {
                    ApiError::validation(
                        &format!("items[{i}].unit_price"),
                        "the order total is too large",
                    )
                })?;
        }
        let a = &mut self.shipping_address;
        a.name = text("shipping_address.name", &a.name, 200)?;
        a.line1 = text("shipping_address.line1", &a.line1, 200)?;
        a.city = text("shipping_address.city", &a.city, 100)?;
        a.postal_code = text("shipping_address.postal_code", &a.postal_code, 20)?;
        a.country = country("shipping_address.country", &a.country)?;
        self.billing_country = country("billing_country", &self.billing_country)?;
        self.payment.method = text("payment.method", &self.payment.method, 32)?;
        let client_ip = match self
            .client_ip
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            None => None,
            Some(ip) => Some(ip.parse::<IpAddr>().map_err(|_| {
                ApiError::validation("client_ip", format!("{ip:?} is not an IP address"))
            })?),
        };
        Ok(ValidOrder {
            request: self,
            total,
            client_ip,
        })
    }
}

fn text(field: &str, value: &str, max: usize) -> Result<String, ApiError> {
    let v = value.trim();
    if v.is_empty() {
        return Err(ApiError::validation(field, "must not be empty"));
    }
    if v.chars().count() > max {
        return Err(ApiError::validation(
            field,
            format!("at most {max} characters"),
        ));
    }
    if v.chars().any(char::is_control) {
        return Err(ApiError::validation(
            field,
            "must not contain control characters",
        ));
    }
    Ok(v.to_owned())
}

fn email(field: &str, value: &str) -> Result<String, ApiError> {
    let v = value.trim();
    v.parse::<lettre::Address>()
        .map_err(|_| ApiError::validation(field, format!("{v:?} is not an email address")))?;
    Ok(v.to_owned())
}

fn country(field: &str, value: &str) -> Result<String, ApiError> {
    let v = value.trim().to_ascii_uppercase();
    if v.len() != 2 || !v.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(ApiError::validation(
            field,
            "must be an ISO 3166-1 alpha-2 country code such as \"KR\"",
        ));
    }
    Ok(v)
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
        match ValidOrder::parse(body.to_string().as_bytes()) {
            Err(ApiError::Validation { field, .. }) => field,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn accepts_the_design_example_and_totals_it() {
        let order = ValidOrder::parse(sample().to_string().as_bytes()).unwrap();
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
            matches!(ValidOrder::parse(b"{\"customer\": "), Err(ApiError::Validation { field, .. }) if field == "body")
        );
    }
}
