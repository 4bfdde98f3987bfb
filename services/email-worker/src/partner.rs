//! The shipping partner's HTTP API: one shipment registered per order.
//!
//! `POST {SHIPPING_PARTNER_URL}/shipments` with the order's recipient and lines, an
//! `Idempotency-Key: shipment-<order id>` header (so a retried call, after a timeout whose
//! request did reach the partner, cannot book twice), and `Authorization: Bearer
//! <SHIPPING_PARTNER_TOKEN>` when a token is configured. The answer `{"tracking_number", "carrier"}`
//! is what the order keeps.
//!
//! What the partner answers decides what happens to the task ([`PartnerError`]): 5xx, 408,
//! timeouts and refused connections are worth another try; 429 too, after its `Retry-After`;
//! any other 4xx will fail the same way again and is dead-lettered with the partner's answer.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, RETRY_AFTER};
use serde::Deserialize;
use serde_json::{Value, json};
use shopfds_service::{ConfigError, Env, Secret, SecretUrl};
use shopfds_store::OrderRecord;
use tracing::Instrument as _;

/// Most of a partner's error body kept in a dead-letter reason.
const MAX_REASON: usize = 500;

/// Longest `Retry-After` honoured; a longer one is capped (the retry policy takes over later).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone)]
pub struct PartnerSettings {
    /// `SHIPPING_PARTNER_URL`: the API's base URL. Unset: `register_shipment` is dead-lettered
    /// with "SHIPPING_PARTNER_URL is not set".
    pub url: Option<SecretUrl>,
    /// `SHIPPING_PARTNER_TOKEN`: sent as `Authorization: Bearer`; unset: no header.
    pub token: Option<Secret>,
    /// `SHIPPING_PARTNER_TIMEOUT_SECS` (default 10): the whole request.
    pub timeout: Duration,
    /// `SHIPPING_PARTNER_RATE_LIMIT`: at most this many calls per second to the partner, over
    /// every replica together (counted in PostgreSQL). Unset or 0: no limit.
    pub rate_limit: Option<u32>,
}

impl PartnerSettings {
    pub fn read(env: &Env) -> Result<Self, ConfigError> {
        let url = env
            .get("SHIPPING_PARTNER_URL")
            .map(|url| {
                let parsed = reqwest::Url::parse(&url)
                    .ok()
                    .filter(|u| matches!(u.scheme(), "http" | "https"));
                match parsed {
                    Some(_) => Ok(SecretUrl::new(url)),
                    None => Err(ConfigError::new(
                        "SHIPPING_PARTNER_URL",
                        format!("{} is not an http(s) URL", SecretUrl::new(url.as_str())),
                    )),
                }
            })
            .transpose()?;
        Ok(PartnerSettings {
            url,
            token: env.secret("SHIPPING_PARTNER_TOKEN"),
            timeout: Duration::from_secs(env.positive("SHIPPING_PARTNER_TIMEOUT_SECS", 10)?),
            rate_limit: Some(env.parse("SHIPPING_PARTNER_RATE_LIMIT", 0u32)?).filter(|n| *n > 0),
        })
    }
}

/// A registered shipment.
#[derive(Debug, Clone, Deserialize)]
pub struct Shipment {
    pub tracking_number: String,
    #[serde(default)]
    pub carrier: Option<String>,
}

/// Why a registration did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartnerError {
    /// Another try may succeed; `after` is the partner's own `Retry-After`.
    Retry {
        message: String,
        after: Option<Duration>,
    },
    /// The partner refused the request itself: trying again would be refused again.
    Refused(String),
}

/// One shared HTTP client (connection pool) for every task.
#[derive(Clone)]
pub struct Partner {
    http: reqwest::Client,
    settings: PartnerSettings,
}

impl Partner {
    pub fn new(settings: PartnerSettings) -> anyhow::Result<Partner> {
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .user_agent(concat!("shopfds-email-worker/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Partner { http, settings })
    }

    /// Whether `SHIPPING_PARTNER_URL` is set.
    pub fn is_configured(&self) -> bool {
        self.settings.url.is_some()
    }

    /// Calls per second allowed over all replicas (`SHIPPING_PARTNER_RATE_LIMIT`).
    pub fn rate_limit(&self) -> Option<u32> {
        self.settings.rate_limit
    }

    /// Registers `order`'s shipment (idempotent at the partner by the order id), in a client
    /// span `POST /shipments` whose W3C context goes with the request (`traceparent`), so a
    /// partner that traces continues the order's trace.
    pub async fn register(&self, order: &OrderRecord) -> Result<Shipment, PartnerError> {
        let span = tracing::info_span!(
            "partner",
            otel.name = "POST /shipments",
            otel.kind = "client",
            http.request.method = "POST",
            http.response.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        let registered = self.call(order).instrument(span.clone()).await;
        if registered.is_err() {
            span.record("otel.status_code", "ERROR");
        }
        registered
    }

    async fn call(&self, order: &OrderRecord) -> Result<Shipment, PartnerError> {
        let Some(base) = &self.settings.url else {
            return Err(PartnerError::Refused(
                "SHIPPING_PARTNER_URL is not set: no partner to register the shipment with"
                    .to_owned(),
            ));
        };
        let url = format!("{}/shipments", base.expose().trim_end_matches('/'));
        let mut request = self
            .http
            .post(&url)
            .header("Idempotency-Key", format!("shipment-{}", order.id))
            .json(&shipment_request(order));
        if let Some(token) = &self.settings.token {
            request = request.header(AUTHORIZATION, format!("Bearer {}", token.expose()));
        }
        let mut trace = reqwest::header::HeaderMap::new();
        shopfds_telemetry::propagation::inject_http(&mut trace);
        request = request.headers(trace);
        let shown = base.redacted();
        let response = request.send().await.map_err(|e| PartnerError::Retry {
            // Without the URL: reqwest's message would show it, with any credentials in it.
            message: format!("shipping partner {shown}: {}", e.without_url()),
            after: None,
        })?;
        let status = response.status();
        tracing::Span::current().record("http.response.status_code", status.as_u16());
        let retry_after = retry_after(response.headers());
        let body = response.text().await.unwrap_or_default();
        decide(status, retry_after, &body, &shown)
    }
}

/// What the partner's answer means for the task.
fn decide(
    status: StatusCode,
    retry_after: Option<Duration>,
    body: &str,
    shown: &str,
) -> Result<Shipment, PartnerError> {
    let reason = || {
        let mut text: String = body.trim().chars().take(MAX_REASON).collect();
        if body.trim().chars().count() > MAX_REASON {
            text.push('…');
        }
        format!("shipping partner {shown} answered {status}: {text}")
    };
    if status.is_success() {
        return serde_json::from_str::<Shipment>(body)
            .ok()
            .filter(|s| !s.tracking_number.trim().is_empty())
            .ok_or_else(|| PartnerError::Retry {
                message: format!("{} (no tracking_number in it)", reason()),
                after: None,
            });
    }
    if status == StatusCode::TOO_MANY_REQUESTS {
        return Err(PartnerError::Retry {
            message: reason(),
            after: Some(retry_after.unwrap_or(Duration::from_secs(1))),
        });
    }
    if status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT {
        return Err(PartnerError::Retry {
            message: reason(),
            after: retry_after,
        });
    }
    Err(PartnerError::Refused(reason()))
}

/// `Retry-After` in seconds (the HTTP-date form is not used by the partners we know: ignored).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let seconds: u64 = headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds).min(MAX_RETRY_AFTER))
}

/// The body of `POST /shipments`.
fn shipment_request(order: &OrderRecord) -> Value {
    let items: Vec<Value> = order
        .items
        .iter()
        .map(|item| json!({"sku": item.sku, "name": item.name, "quantity": item.quantity}))
        .collect();
    json!({
        "order_id": order.id,
        "recipient": {
            "name": order.shipping_address.get("name").cloned().unwrap_or(json!(order.customer_name)),
            "email": order.customer_email,
        },
        "address": order.shipping_address,
        "items": items,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_partners_answer_decides() {
        let ok = decide(
            StatusCode::CREATED,
            None,
            r#"{"tracking_number":"SF1","carrier":"x"}"#,
            "p",
        );
        assert_eq!(ok.map(|s| s.tracking_number), Ok("SF1".to_owned()));
        assert!(matches!(
            decide(StatusCode::SERVICE_UNAVAILABLE, None, "down", "p"),
            Err(PartnerError::Retry { after: None, .. })
        ));
        assert_eq!(
            decide(
                StatusCode::TOO_MANY_REQUESTS,
                Some(Duration::from_secs(2)),
                "",
                "p"
            )
            .unwrap_err(),
            PartnerError::Retry {
                message: "shipping partner p answered 429 Too Many Requests: ".to_owned(),
                after: Some(Duration::from_secs(2)),
            }
        );
        match decide(StatusCode::BAD_REQUEST, None, "postal_code: invalid", "p") {
            Err(PartnerError::Refused(reason)) => {
                assert!(reason.contains("400") && reason.contains("postal_code: invalid"))
            }
            other => panic!("{other:?}"),
        }
        // A success without a tracking number is not a registration.
        assert!(matches!(
            decide(StatusCode::OK, None, "{}", "p"),
            Err(PartnerError::Retry { .. })
        ));
    }

    #[test]
    fn a_long_partner_answer_is_cut_in_the_reason() {
        let body = "x".repeat(5000);
        match decide(StatusCode::UNPROCESSABLE_ENTITY, None, &body, "p") {
            Err(PartnerError::Refused(reason)) => assert!(reason.len() < 700, "{}", reason.len()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn settings_name_a_bad_url_without_its_password() {
        let env = Env::from_pairs([("SHIPPING_PARTNER_URL", "ftp://u:hunter2@partner/")]);
        let error = PartnerSettings::read(&env).unwrap_err();
        assert_eq!(error.variable, "SHIPPING_PARTNER_URL");
        assert!(!error.message.contains("hunter2"), "{error}");
        let env = Env::from_pairs([("SHIPPING_PARTNER_TIMEOUT_SECS", "0")]);
        assert!(PartnerSettings::read(&env).is_err());
    }
}
