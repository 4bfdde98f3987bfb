//! The synchronous fraud score: one shared gRPC channel to fds-worker (balanced over every
//! fds-worker: [`crate::fds_targets`]), a deadline on every call,
//! and a configured fallback decision when fds-worker does not answer in time. An order is never
//! refused because scoring is down; it is flagged (`fds.source = "fallback"`) and an
//! `evaluate_transaction` task is queued, which fds-worker runs when it is back.
//!
//! Each call is a client span `fds.v1.FraudDetection/Score` whose W3C context travels in the
//! call's metadata (`traceparent`), so fds-worker's server span is its child.

use std::net::IpAddr;
use std::time::Duration;

use serde_json::{Value, json};
use shopfds_protocol::grpc::{Decision, FraudDetectionClient, Item, ScoreRequest};
use shopfds_service::{ConfigError, Env, Secret};
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::transport::Channel;
use tracing::Instrument as _;

use crate::domain::ValidOrder;
use crate::fds_tls::FdsClientTls;

/// The span name of a Score call, as OpenTelemetry's RPC conventions name it.
const SCORE_METHOD: &str = "fds.v1.FraudDetection/Score";

#[derive(Debug, Clone)]
pub struct FdsSettings {
    /// `FDS_GRPC_URL`, default `http://127.0.0.1:50051`.
    pub url: String,
    /// `FDS_TIMEOUT_MS`, default 100: the deadline of one Score call.
    pub timeout: Duration,
    /// `FDS_FALLBACK_DECISION`: `APPROVE`, `REVIEW` (default) or `BLOCK`.
    pub fallback: Decision,
    /// `FDS_GRPC_CA_FILE`, `FDS_GRPC_CERT_FILE`, `FDS_GRPC_KEY_FILE`, `FDS_GRPC_TLS_DOMAIN`: TLS
    /// of an `https://` URL (see [`crate::fds_tls`]).
    pub tls: FdsClientTls,
}

impl FdsSettings {
    /// `FDS_GRPC_URL`, `FDS_TIMEOUT_MS`, `FDS_FALLBACK_DECISION` and the TLS variables.
    pub fn read(env: &Env) -> Result<Self, ConfigError> {
        let url = env.string("FDS_GRPC_URL", "http://127.0.0.1:50051");
        let tls = FdsClientTls::read(env, &url)?;
        Ok(FdsSettings {
            url,
            tls,
            timeout: env.millis("FDS_TIMEOUT_MS", Duration::from_millis(100))?,
            fallback: env.choice(
                "FDS_FALLBACK_DECISION",
                Decision::Review,
                &[
                    ("APPROVE", Decision::Approve),
                    ("REVIEW", Decision::Review),
                    ("BLOCK", Decision::Block),
                ],
            )?,
        })
    }
}

/// The score of one order, as the API answers and stores it.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub decision: Decision,
    /// fds-worker did not answer: the configured fallback decided.
    pub fallback: bool,
    /// `{score, decision, reasons, rules_version, source}`.
    pub json: Value,
}

impl Verdict {
    /// The order status a decision gives.
    pub fn order_status(&self) -> &'static str {
        match self.decision {
            Decision::Block => "blocked",
            Decision::Review => "review",
            Decision::Approve | Decision::Unspecified => "accepted",
        }
    }
}

#[derive(Clone)]
pub struct FdsClient {
    client: FraudDetectionClient<Channel>,
    settings: FdsSettings,
    /// `authorization: Bearer <FDS_API_KEY>`, sent with every Score.
    authorization: Option<AsciiMetadataValue>,
}

impl FdsClient {
    /// A channel balanced over every fds-worker behind `FDS_GRPC_URL` ([`crate::fds_targets`]),
    /// shared by every request (HTTP/2 multiplexes the calls); TLS for `https://` URLs.
    pub fn new(settings: FdsSettings) -> anyhow::Result<FdsClient> {
        let targets = crate::fds_targets::parse(&settings.url)?;
        let channel = crate::fds_targets::balanced(&settings, targets)?;
        let client = FraudDetectionClient::new(channel);
        Ok(FdsClient {
            client,
            settings,
            authorization: None,
        })
    }

    /// Sends `key` (`FDS_API_KEY`) with every call; without one fds-worker refuses Score.
    pub fn with_api_key(mut self, key: Option<&Secret>) -> anyhow::Result<FdsClient> {
        self.authorization = match key {
            Some(key) => {
                let mut value: AsciiMetadataValue =
                    MetadataValue::try_from(format!("Bearer {}", key.expose()))
                        .map_err(|_| anyhow::anyhow!("FDS_API_KEY: not a valid header value"))?;
                value.set_sensitive(true);
                Some(value)
            }
            None => {
                tracing::warn!(
                    "FDS_API_KEY is not set: fds-worker will refuse Score and every order gets the fallback decision"
                );
                None
            }
        };
        Ok(self)
    }

    pub async fn score(&self, order_id: &str, order: &ValidOrder, client_ip: IpAddr) -> Verdict {
        let span = tracing::info_span!(
            "grpc",
            otel.name = SCORE_METHOD,
            otel.kind = "client",
            rpc.system = "grpc",
            rpc.service = shopfds_protocol::grpc::SERVICE_NAME,
            rpc.method = "Score",
            otel.status_code = tracing::field::Empty,
        );
        let verdict = self
            .score_call(order_id, order, client_ip)
            .instrument(span.clone())
            .await;
        if verdict.fallback {
            span.record("otel.status_code", "ERROR");
        }
        verdict
    }

    async fn score_call(&self, order_id: &str, order: &ValidOrder, client_ip: IpAddr) -> Verdict {
        let mut request = tonic::Request::new(score_request(order_id, order, client_ip));
        request.set_timeout(self.settings.timeout);
        shopfds_telemetry::propagation::inject_http(request.metadata_mut().as_mut());
        if let Some(authorization) = &self.authorization {
            request
                .metadata_mut()
                .insert("authorization", authorization.clone());
        }
        let mut client = self.client.clone();
        let call = tokio::time::timeout(self.settings.timeout, client.score(request)).await;
        match call {
            Ok(Ok(response)) => {
                let r = response.into_inner();
                let decision = r.decision();
                Verdict {
                    decision,
                    fallback: false,
                    json: json!({
                        "score": r.score,
                        "decision": decision_name(decision),
                        "reasons": r.reasons.iter().map(|x| json!({"rule_id": x.rule_id, "weight": x.weight, "message": x.message})).collect::<Vec<_>>(),
                        "rules_version": r.rules_version,
                        "source": "realtime",
                    }),
                }
            }
            Ok(Err(status)) => {
                if let Some(cause) = std::error::Error::source(&status) {
                    // "transport error" alone does not say that a TLS handshake failed, or why.
                    tracing::warn!(
                        error = %error_chain(cause),
                        "the Score call failed before fds-worker answered"
                    );
                }
                self.fallback(&format!(
                    "fds-worker answered {:?}: {}",
                    status.code(),
                    status.message()
                ))
            }
            Err(_) => self.fallback(&format!(
                "no answer from fds-worker within {} ms",
                self.settings.timeout.as_millis()
            )),
        }
    }

    fn fallback(&self, why: &str) -> Verdict {
        tracing::warn!(
            reason = why,
            decision = decision_name(self.settings.fallback),
            "fraud score unavailable; fallback decision applied"
        );
        Verdict {
            decision: self.settings.fallback,
            fallback: true,
            json: json!({
                "score": null,
                "decision": decision_name(self.settings.fallback),
                "reasons": [{"rule_id": "fds.unavailable", "weight": 0, "message": why}],
                "rules_version": null,
                "source": "fallback",
            }),
        }
    }
}

/// `error: cause: cause's cause…`.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        next = cause.source();
    }
    text
}

fn decision_name(d: Decision) -> &'static str {
    match d {
        Decision::Approve => "APPROVE",
        Decision::Review => "REVIEW",
        Decision::Block => "BLOCK",
        Decision::Unspecified => "UNSPECIFIED",
    }
}

fn score_request(order_id: &str, order: &ValidOrder, client_ip: IpAddr) -> ScoreRequest {
    let r = &order.request;
    ScoreRequest {
        order_id: order_id.to_owned(),
        customer_id: r.customer.id.as_str().to_owned(),
        email: r.customer.email.as_str().to_owned(),
        client_ip: client_ip.to_string(),
        amount: order.total,
        currency: r.currency.as_str().to_owned(),
        items: r
            .items
            .iter()
            .map(|i| Item {
                sku: i.sku.as_str().to_owned(),
                name: i.name.as_str().to_owned(),
                quantity: u32::try_from(i.quantity).unwrap_or(0),
                unit_price: i.unit_price,
            })
            .collect(),
        shipping_country: r.shipping_address.country.as_str().to_owned(),
        billing_country: r.billing_country.as_str().to_owned(),
        card_fingerprint: r
            .payment
            .card_fingerprint
            .as_ref()
            .map(|t| t.as_str().to_owned())
            .unwrap_or_default(),
        payment_token: r
            .payment
            .payment_token
            .as_ref()
            .map(|t| t.as_str().to_owned())
            .unwrap_or_default(),
        account_created_at: r
            .customer
            .account_created_at
            .map(|t| prost_types::Timestamp {
                seconds: t.timestamp(),
                nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
            }),
    }
}
