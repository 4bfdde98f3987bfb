//! Protocol v1 messages captured from a stock Celery 5.5.3 client configured with
//! `task_protocol=1` (`interop/python/protocol_v1.py capture`, published to RabbitMQ and read
//! back with `basic_get`): `send_task` with kwargs, with positional args and time limits, with
//! eta and expires, with a countdown, with link and link_error, a chain (v1 sends it as a link
//! callback) and a group member. They must decode into the same v2 `TaskMessage` a v2 message
//! would, and what is republished from them is v2.
//!
//! Regenerate (on a throwaway vhost: the script drains the work queues):
//!
//! ```sh
//! rabbitmqctl add_vhost capture-v1 && rabbitmqctl set_permissions -p capture-v1 guest '.*' '.*' '.*'
//! cd interop/python && BROKER_URL=amqp://guest:guest@127.0.0.1:5672/capture-v1 \
//!   ../../.venv/bin/python protocol_v1.py capture ../../libs/protocol/tests/fixtures/celery-5.5.3-protocol-v1.json
//! rabbitmqctl delete_vhost capture-v1
//! ```

#![allow(clippy::expect_used, clippy::unwrap_used)]

use chrono::{TimeZone, Utc};
use serde_json::{Map, Value, json};
use shopfds_protocol::payloads::{GenerateSalesReport, OrderTask, SendInvoiceEmail};
use shopfds_protocol::{ProtocolError, TaskMessage, tasks};

const ORDER_ID: &str = "5f0c6a52-7c0e-4d8a-9d0b-3a1c2b4e5f60";

fn fixture(name: &str) -> (Map<String, Value>, Value, String) {
    let all: Value = serde_json::from_str(include_str!("fixtures/celery-5.5.3-protocol-v1.json"))
        .expect("fixture is JSON");
    let m = &all[name];
    let headers = m["headers"].as_object().cloned().expect("headers object");
    let body = m["body"].as_str().expect("body string").to_owned();
    (headers, m["properties"].clone(), body)
}

fn decode(name: &str) -> TaskMessage {
    let (headers, props, body) = fixture(name);
    assert!(
        !headers.contains_key("task"),
        "{name}: a v1 message has no task header"
    );
    TaskMessage::decode(
        props["content_type"].as_str(),
        props["content_encoding"].as_str(),
        headers,
        body.as_bytes(),
    )
    .expect("a stock Celery v1 message decodes")
}

fn decode_raw(headers: Map<String, Value>, body: &[u8]) -> Result<TaskMessage, ProtocolError> {
    TaskMessage::decode(Some("application/json"), Some("utf-8"), headers, body)
}

/// What the runtime republishes (a retry, a delayed message) is v2 and reads back the same.
fn assert_republishes_as_v2(msg: &TaskMessage) {
    let headers = msg.headers_map();
    assert_eq!(headers.get("task"), Some(&json!(msg.task())));
    let body = msg.body();
    assert!(body.starts_with(b"["), "v2 body is an array");
    let again = decode_raw(headers, &body).expect("the v2 form decodes");
    assert_eq!(&again, msg);
}

#[test]
fn reads_send_task_with_kwargs_as_the_v2_message_celery_would_send() {
    let msg = decode("kwargs_only");
    assert_eq!(msg.task(), tasks::SEND_ORDER_CONFIRMATION_EMAIL);
    assert_eq!(msg.id(), "11111111-0000-4000-8000-000000000001");
    assert_eq!(msg.properties.correlation_id, msg.id());
    assert_eq!(msg.headers.lang, "py");
    assert_eq!(msg.headers.retries, 0);
    assert_eq!(msg.headers.root_id, None);
    assert_eq!(msg.headers.group, None);
    assert_eq!(msg.headers.eta, None);
    assert_eq!(msg.headers.timelimit.hard(), None);
    // Celery's worker computes these with saferepr(args), saferepr(kwargs).
    assert_eq!(msg.headers.argsrepr.as_deref(), Some("[]"));
    assert_eq!(
        msg.headers.kwargsrepr.as_deref(),
        Some("{'order_id': '5f0c6a52-7c0e-4d8a-9d0b-3a1c2b4e5f60'}")
    );
    // `utc` and `taskset` are consumed, not carried as headers.
    assert!(msg.headers.extra.is_empty(), "{:?}", msg.headers.extra);
    let args: OrderTask = msg.bind().expect("binds");
    assert_eq!(args.order_id.to_string(), ORDER_ID);

    // The body is the one a stock v2 client sends for the same call.
    let v2: Value = serde_json::from_str(include_str!("fixtures/celery-5.5.3-messages.json"))
        .expect("fixture is JSON");
    assert_eq!(
        String::from_utf8(msg.body()).expect("utf-8"),
        v2["kwargs_only"]["body"].as_str().expect("body")
    );
    assert_republishes_as_v2(&msg);
}

#[test]
fn reads_positional_args_and_time_limits_in_code_order() {
    let msg = decode("positional_timelimit");
    assert_eq!(msg.task(), tasks::GENERATE_SALES_REPORT);
    assert_eq!(msg.args, vec![json!("2026-11-01"), json!("2026-11-21")]);
    assert_eq!(msg.kwargs.get("user_id"), Some(&json!("u-1")));
    // as_task_v1 sends (time_limit, soft_time_limit), like v2: [hard, soft].
    assert_eq!(msg.headers.timelimit.hard(), Some(300.0));
    assert_eq!(msg.headers.timelimit.soft(), Some(240.0));
    assert_eq!(
        msg.headers.argsrepr.as_deref(),
        Some("['2026-11-01', '2026-11-21']")
    );
    let args: GenerateSalesReport = msg.bind().expect("binds");
    assert_eq!(args.user_id.as_deref(), Some("u-1"));
    assert_eq!(args.end_date.to_string(), "2026-11-21");
    assert_republishes_as_v2(&msg);
}

#[test]
fn reads_eta_and_expires() {
    let msg = decode("eta_expires");
    assert_eq!(
        msg.headers.eta,
        Some(Utc.with_ymd_and_hms(2030, 1, 15, 9, 30, 0).unwrap())
    );
    assert_eq!(
        msg.headers.expires,
        Some(Utc.with_ymd_and_hms(2030, 1, 15, 10, 30, 0).unwrap())
    );
    let headers = msg.headers_map();
    assert_eq!(headers["eta"], json!("2030-01-15T09:30:00+00:00"));
    assert_republishes_as_v2(&msg);
}

#[test]
fn reads_a_countdown_as_the_eta_the_client_computed() {
    let (_, _, body) = fixture("countdown");
    let sent: Value = serde_json::from_str(&body).expect("JSON");
    let msg = decode("countdown");
    let eta = msg.headers.eta.expect("a countdown travels as an eta");
    assert_eq!(
        Some(eta),
        shopfds_protocol::message::parse_celery_time(sent["eta"].as_str().expect("eta"))
    );
    // Microseconds survive, as in Python's isoformat().
    assert_eq!(msg.headers_map()["eta"], sent["eta"]);
    assert_eq!(msg.task(), tasks::REGISTER_SHIPMENT);
    assert_republishes_as_v2(&msg);
}

#[test]
fn reads_link_and_link_error_as_callbacks_and_errbacks() {
    let msg = decode("link_and_link_error");
    let callbacks = msg.embed.callbacks.clone().expect("callbacks");
    assert_eq!(callbacks.len(), 1);
    assert_eq!(callbacks[0].task, tasks::SEND_INVOICE_EMAIL);
    assert!(!callbacks[0].immutable);
    let errbacks = msg.embed.errbacks.clone().expect("errbacks");
    assert_eq!(errbacks[0].task, tasks::SEND_INVOICE_EMAIL);
    assert!(errbacks[0].immutable);
    assert_eq!(msg.embed.chain, None);
    assert_eq!(msg.embed.chord, None);
    assert_republishes_as_v2(&msg);
}

#[test]
fn reads_a_v1_chain_as_a_link_callback_that_gets_the_result() {
    let msg = decode("chain");
    assert_eq!(msg.task(), tasks::GENERATE_INVOICE_PDF);
    assert_eq!(msg.embed.chain, None);
    let next = &msg.embed.callbacks.as_ref().expect("callbacks")[0];
    assert_eq!(next.task, tasks::SEND_INVOICE_EMAIL);
    let next_id = next.task_id().expect("the client froze the next task's id");
    let mut child = TaskMessage::from_signature(next, Some(&msg.headers));
    assert_eq!(child.id(), next_id);
    assert_eq!(child.headers.parent_id.as_deref(), Some(msg.id()));
    assert_eq!(child.headers.root_id.as_deref(), Some(msg.id()));
    // Not immutable: the parent's result comes first, and send_invoice_email binds it.
    child.args.insert(0, json!({"invoice": "invoices/o.pdf"}));
    let args: SendInvoiceEmail = child.bind().expect("binds");
    assert_eq!(args.invoice, Some(json!({"invoice": "invoices/o.pdf"})));
    assert_eq!(args.order_id.to_string(), ORDER_ID);
}

#[test]
fn reads_the_taskset_as_the_group() {
    let msg = decode("group");
    assert_eq!(
        msg.headers.group.as_deref(),
        Some("22222222-0000-4000-8000-000000000001")
    );
    assert_eq!(msg.headers.group_index, Some(0));
    assert!(!msg.headers.extra.contains_key("taskset"));
    assert_republishes_as_v2(&msg);
}

#[test]
fn keeps_the_amqp_headers_of_a_v1_delivery() {
    let (mut headers, _, body) = fixture("kwargs_only");
    headers.insert(
        "traceparent".into(),
        json!("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
    );
    headers.insert("x-shopfds-reason".into(), json!("replayed"));
    let msg = decode_raw(headers, body.as_bytes()).expect("decodes");
    assert_eq!(
        msg.headers.extra.get("traceparent"),
        Some(&json!(
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        ))
    );
    assert_eq!(
        msg.headers.extra.get("x-shopfds-reason"),
        Some(&json!("replayed"))
    );
}

#[test]
fn a_malformed_v1_body_is_a_clear_error() {
    let (headers, _, body) = fixture("eta_expires");
    let sent: Map<String, Value> = serde_json::from_str(&body).expect("JSON object");
    let with = |field: &str, value: Value| {
        let mut broken = sent.clone();
        broken.insert(field.to_owned(), value);
        decode_raw(
            headers.clone(),
            Value::Object(broken).to_string().as_bytes(),
        )
    };
    let field_of = |result: Result<TaskMessage, ProtocolError>| match result {
        Err(ProtocolError::InvalidV1Field { field, .. }) => field,
        other => panic!("expected InvalidV1Field, got {other:?}"),
    };
    assert_eq!(field_of(with("id", json!(7))), "id");
    assert_eq!(field_of(with("args", json!("2026-11-01"))), "args");
    assert_eq!(field_of(with("kwargs", json!(["u-1"]))), "kwargs");
    assert_eq!(field_of(with("eta", json!("next tuesday"))), "eta");
    assert_eq!(field_of(with("timelimit", json!({"hard": 1}))), "timelimit");
    assert_eq!(field_of(with("callbacks", json!([1, 2]))), "callbacks");

    let err = with("eta", json!("next tuesday")).unwrap_err().to_string();
    assert!(
        err.contains("protocol v1") && err.contains("`eta`"),
        "the dead-letter reason says what is wrong: {err}"
    );

    let no_task = {
        let mut broken = sent.clone();
        broken.remove("task");
        decode_raw(
            headers.clone(),
            Value::Object(broken).to_string().as_bytes(),
        )
    };
    assert_eq!(no_task, Err(ProtocolError::NotProtocolV2));
}

#[test]
fn never_panics_on_a_truncated_or_mangled_v1_body() {
    for name in ["kwargs_only", "link_and_link_error", "chain", "eta_expires"] {
        let (headers, _, body) = fixture(name);
        let bytes = body.as_bytes();
        for end in 0..bytes.len() {
            // Every prefix is invalid JSON: an error, never a panic.
            assert!(decode_raw(headers.clone(), &bytes[..end]).is_err());
        }
        let sent: Map<String, Value> = serde_json::from_str(&body).expect("JSON object");
        let odd = [
            Value::Null,
            json!(true),
            json!(-1),
            json!(1e300),
            json!(""),
            json!([]),
            json!({}),
            json!([null]),
            json!({"task": 1}),
        ];
        for field in sent.keys() {
            for value in &odd {
                let mut mangled = sent.clone();
                mangled.insert(field.clone(), value.clone());
                let _ = decode_raw(
                    headers.clone(),
                    Value::Object(mangled).to_string().as_bytes(),
                );
            }
        }
    }
}
