//! `register_shipment` against a real HTTP server of the test playing the shipping partner: its
//! answers are scripted per call, and it records every request (idempotency key, token, time).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use shopfds_broker::Outgoing;
use shopfds_protocol::names::REASON_HEADER;
use shopfds_protocol::tasks::REGISTER_SHIPMENT;
use shopfds_protocol::{TaskMessage, TaskState};

use crate::helpers::{Options, TestApp, spawn_email_worker_with};

/// One scripted answer: status, `Retry-After` seconds, body.
type Answer = (u16, Option<u64>, &'static str);

/// What the partner saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    idempotency_key: Option<String>,
    authorization: Option<String>,
    body: Value,
}

#[derive(Clone, Default)]
struct Partner {
    script: Arc<Mutex<Vec<Answer>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Partner {
    /// Serves `script` in order (the last answer repeats) on a loopback port; returns its URL.
    async fn start(script: Vec<Answer>) -> (Partner, String) {
        let partner = Partner {
            script: Arc::new(Mutex::new(script)),
            seen: Arc::default(),
        };
        let app = Router::new()
            .route("/api/shipments", post(answer))
            .with_state(partner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/api", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (partner, url)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn answer(State(partner): State<Partner>, headers: HeaderMap, body: String) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    partner.seen.lock().unwrap().push(Seen {
        at: Instant::now(),
        idempotency_key: header("idempotency-key"),
        authorization: header("authorization"),
        body: serde_json::from_str(&body).unwrap_or(Value::Null),
    });
    let (status, retry_after, body) = {
        let mut script = partner.script.lock().unwrap();
        if script.len() > 1 {
            script.remove(0)
        } else {
            script[0]
        }
    };
    let mut response = (StatusCode::from_u16(status).unwrap(), body.to_owned()).into_response();
    if let Some(seconds) = retry_after {
        response
            .headers_mut()
            .insert("retry-after", seconds.to_string().parse().unwrap());
    }
    response
}

/// Publishes `register_shipment` for the test's order.
async fn register(app: &TestApp) -> TaskMessage {
    let msg = TaskMessage::new(REGISTER_SHIPMENT, app.order_kwargs());
    app.publish(&Outgoing::task(&msg, "default")).await;
    msg
}

const BOOKED: &str = r#"{"tracking_number": "SF0123456789", "carrier": "test-carrier"}"#;

#[tokio::test]
async fn two_partner_503s_then_a_booking_registers_the_shipment_once() {
    let (partner, url) = Partner::start(vec![
        (503, None, "down"),
        (503, None, "down"),
        (201, None, BOOKED),
    ])
    .await;
    let app = spawn_email_worker_with(Options {
        partner_url: Some(url),
        ..Options::default()
    })
    .await;
    let msg = register(&app).await;

    let record = app.wait_for_state(msg.id(), TaskState::Success).await;
    assert_eq!(record.retries, 2, "two retries, after the two 503s");
    let result = record.result.unwrap();
    assert_eq!(result["tracking_number"], "SF0123456789", "{result}");
    let order = app.store.orders().get(app.order_id).await.unwrap().unwrap();
    assert_eq!(order.tracking_number.as_deref(), Some("SF0123456789"));

    let seen = partner.seen();
    assert_eq!(seen.len(), 3, "{seen:#?}");
    let key = format!("shipment-{}", app.order_id);
    assert!(
        seen.iter()
            .all(|s| s.idempotency_key.as_deref() == Some(key.as_str())),
        "every try carries the order's idempotency key: {seen:#?}"
    );
    assert_eq!(
        seen[0].authorization.as_deref(),
        Some("Bearer partner-token")
    );
    assert_eq!(seen[0].body["order_id"], json!(app.order_id.to_string()));
    assert!(
        seen[0].body["items"]
            .as_array()
            .is_some_and(|i| !i.is_empty())
    );

    // The same task again (a replay, a duplicate publish): nothing booked a second time.
    let again = TaskMessage::new(REGISTER_SHIPMENT, app.order_kwargs());
    app.publish(&Outgoing::task(&again, "default")).await;
    let record = app.wait_for_state(again.id(), TaskState::Success).await;
    assert_eq!(record.result.unwrap()["status"], "already_registered");
    assert_eq!(partner.seen().len(), 3);
}

#[tokio::test]
async fn a_429_is_retried_after_its_retry_after() {
    let (partner, url) =
        Partner::start(vec![(429, Some(2), "slow down"), (201, None, BOOKED)]).await;
    let app = spawn_email_worker_with(Options {
        partner_url: Some(url),
        ..Options::default()
    })
    .await;
    let msg = register(&app).await;
    let record = app.wait_for_state(msg.id(), TaskState::Success).await;
    assert_eq!(record.retries, 1);
    let seen = partner.seen();
    assert_eq!(seen.len(), 2, "{seen:#?}");
    let waited = seen[1].at.duration_since(seen[0].at);
    assert!(
        waited >= Duration::from_secs(2),
        "the retry came {waited:?} after the 429, before its Retry-After of 2 s"
    );
}

#[tokio::test]
async fn a_partner_400_is_dead_lettered_with_the_partners_answer() {
    let (partner, url) =
        Partner::start(vec![(400, None, r#"{"error": "postal_code: invalid"}"#)]).await;
    let app = spawn_email_worker_with(Options {
        partner_url: Some(url),
        ..Options::default()
    })
    .await;
    let msg = register(&app).await;

    let record = app.wait_for_state(msg.id(), TaskState::Failure).await;
    assert_eq!(record.retries, 0, "a refusal is not retried");
    let dead = app.take("failed.default", 1).await;
    let reason = dead[0].0[REASON_HEADER].as_str().unwrap().to_owned();
    assert!(
        reason.contains("400") && reason.contains("postal_code: invalid"),
        "{reason}"
    );
    assert_eq!(partner.seen().len(), 1);
    let order = app.store.orders().get(app.order_id).await.unwrap().unwrap();
    assert_eq!(order.tracking_number, None);
}

#[tokio::test]
async fn calls_wait_their_turn_under_the_shared_rate_limit() {
    let (partner, url) = Partner::start(vec![(201, None, BOOKED)]).await;
    let app = spawn_email_worker_with(Options {
        partner_url: Some(url),
        partner_rate_limit: Some(2),
        concurrency: 6,
        ..Options::default()
    })
    .await;
    let mut messages = Vec::new();
    for _ in 0..6 {
        let order_id = app.add_order().await;
        let msg = TaskMessage::new(
            REGISTER_SHIPMENT,
            serde_json::Map::from_iter([("order_id".to_owned(), json!(order_id.to_string()))]),
        );
        app.publish(&Outgoing::task(&msg, "default")).await;
        messages.push(msg);
    }
    for msg in &messages {
        app.wait_for_state(msg.id(), TaskState::Success).await;
    }
    let seen = partner.seen();
    assert_eq!(seen.len(), 6);
    // Six calls at two per second of the database's clock fill at least three seconds, so the
    // last comes at least a second after the first (without the limit: milliseconds apart).
    let first = seen.iter().map(|s| s.at).min().unwrap();
    let last = seen.iter().map(|s| s.at).max().unwrap();
    assert!(
        last.duration_since(first) >= Duration::from_secs(1),
        "six calls within {:?}",
        last.duration_since(first)
    );
}

#[tokio::test]
async fn health_check_reports_what_the_worker_sees() {
    let app = spawn_email_worker_with(Options::default()).await;
    let msg = TaskMessage::new(
        shopfds_protocol::tasks::HEALTH_CHECK,
        serde_json::Map::new(),
    );
    app.publish(&Outgoing::task(&msg, "default")).await;
    let result = app
        .wait_for_state(msg.id(), TaskState::Success)
        .await
        .result
        .unwrap();
    assert_eq!(result["database"], "ok", "{result}");
    assert_eq!(result["smtp"], "ok", "{result}");
    assert_eq!(result["shipping_partner"], "not configured", "{result}");
    assert!(
        result["worker"]
            .as_str()
            .is_some_and(|w| w.starts_with("email-worker@")),
        "{result}"
    );
}
