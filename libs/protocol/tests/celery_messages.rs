//! Messages captured from a stock Celery 5.5.3 client (`send_task` and a chain, published to
//! RabbitMQ and read back with `basic_get`): we must read them, and write the same bytes.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use serde_json::{Map, Value, json};
use shopfds_protocol::payloads::OrderTask;
use shopfds_protocol::{ProtocolError, Signature, TaskMessage, tasks};

fn fixture(name: &str) -> (Map<String, Value>, Value, String) {
    let all: Value = serde_json::from_str(include_str!("fixtures/celery-5.5.3-messages.json"))
        .expect("fixture is JSON");
    let m = &all[name];
    let headers = m["headers"].as_object().cloned().expect("headers object");
    let body = m["body"].as_str().expect("body string").to_owned();
    (headers, m["properties"].clone(), body)
}

fn decode(name: &str) -> (TaskMessage, Map<String, Value>, String) {
    let (headers, props, body) = fixture(name);
    let msg = TaskMessage::decode(
        props["content_type"].as_str(),
        props["content_encoding"].as_str(),
        headers.clone(),
        body.as_bytes(),
    )
    .expect("a stock Celery message decodes");
    (msg, headers, body)
}

#[test]
fn reads_send_task_with_kwargs_and_writes_identical_bytes() {
    let (msg, headers, body) = decode("kwargs_only");
    assert_eq!(msg.task(), tasks::SEND_ORDER_CONFIRMATION_EMAIL);
    assert_eq!(msg.id(), "7d1e8e4b-2c3f-4a5b-8c6d-9e0f1a2b3c4d");
    assert_eq!(msg.headers.root_id.as_deref(), Some(msg.id()));
    let args: OrderTask = msg.bind().expect("binds");
    assert_eq!(
        args.order_id.to_string(),
        "5f0c6a52-7c0e-4d8a-9d0b-3a1c2b4e5f60"
    );
    // Unknown headers (stamps, replaced_task_nesting, …) survive a round trip unchanged.
    assert_eq!(msg.headers_map(), headers);
    assert_eq!(String::from_utf8(msg.body()).expect("utf-8"), body);
}

#[test]
fn builds_the_same_message_celery_builds() {
    let (captured, headers, body) = decode("kwargs_only");
    let kwargs = json!({"order_id": "5f0c6a52-7c0e-4d8a-9d0b-3a1c2b4e5f60"});
    let ours = TaskMessage::new(
        tasks::SEND_ORDER_CONFIRMATION_EMAIL,
        kwargs.as_object().cloned().expect("object"),
    )
    .with_id(captured.id());
    assert_eq!(String::from_utf8(ours.body()).expect("utf-8"), body);
    let ours_headers = ours.headers_map();
    for key in [
        "lang",
        "task",
        "id",
        "root_id",
        "parent_id",
        "group",
        "retries",
        "eta",
        "expires",
        "timelimit",
        "argsrepr",
        "kwargsrepr",
        "shadow",
        "ignore_result",
    ] {
        assert_eq!(ours_headers.get(key), headers.get(key), "header {key}");
    }
    assert_eq!(ours.properties.correlation_id, captured.id());
    assert_eq!(ours.properties.delivery_mode, 2);
}

#[test]
fn reads_positional_args_eta_expires_and_timelimit_in_code_order() {
    let (msg, headers, body) = decode("positional_eta_expires");
    assert_eq!(msg.args, vec![json!("2026-11-01"), json!("2026-11-21")]);
    assert_eq!(msg.kwargs.get("user_id"), Some(&json!("u-1")));
    let eta = msg.headers.eta.expect("eta");
    assert_eq!(eta.to_rfc3339(), "2026-11-23T00:00:00+00:00");
    assert!(msg.headers.expires.expect("expires") > eta);
    // Celery's code sends [hard, soft]: time_limit=300, soft_time_limit=240.
    assert_eq!(msg.headers.timelimit.hard(), Some(300.0));
    assert_eq!(msg.headers.timelimit.soft(), Some(240.0));
    assert_eq!(msg.headers_map(), headers);
    assert_eq!(String::from_utf8(msg.body()).expect("utf-8"), body);
}

#[test]
fn reads_a_chain_with_the_next_task_last() {
    let (msg, _, body) = decode("chain");
    let chain = msg.embed.chain.clone().expect("chain");
    let next: &Signature = chain.last().expect("next link");
    assert_eq!(next.task, tasks::SEND_INVOICE_EMAIL);
    assert!(next.immutable);
    assert_eq!(next.task_id(), Some("aaaaaaaa-0000-4000-8000-000000000001"));
    let child = TaskMessage::from_signature(next, Some(&msg.headers));
    assert_eq!(child.id(), "aaaaaaaa-0000-4000-8000-000000000001");
    assert_eq!(child.headers.parent_id.as_deref(), Some(msg.id()));
    assert_eq!(child.headers.root_id.as_deref(), Some(msg.id()));
    assert_eq!(String::from_utf8(msg.body()).expect("utf-8"), body);
}

#[test]
fn refuses_what_it_must_not_read() {
    let (headers, _, body) = fixture("kwargs_only");
    let pickle = TaskMessage::decode(
        Some("application/x-python-serialize"),
        Some("binary"),
        headers.clone(),
        b"\x80\x04K\x01.",
    );
    assert_eq!(
        pickle,
        Err(ProtocolError::UnsupportedContentType(
            "application/x-python-serialize".into()
        ))
    );

    let mut v1 = headers.clone();
    v1.remove("task");
    assert_eq!(
        TaskMessage::decode(Some("application/json"), Some("utf-8"), v1, body.as_bytes()),
        Err(ProtocolError::NotProtocolV2)
    );

    let bad_json = TaskMessage::decode(
        Some("application/json"),
        Some("utf-8"),
        headers.clone(),
        b"[[], {",
    );
    assert!(matches!(bad_json, Err(ProtocolError::InvalidJson(_))));

    let two = TaskMessage::decode(
        Some("application/json"),
        Some("utf-8"),
        headers.clone(),
        b"[[], {}]",
    );
    assert!(matches!(two, Err(ProtocolError::InvalidBody(_))));

    let mut bad_eta = headers.clone();
    bad_eta.insert("eta".into(), json!("tomorrow"));
    let err = TaskMessage::decode(
        Some("application/json"),
        Some("utf-8"),
        bad_eta,
        body.as_bytes(),
    );
    assert!(
        matches!(err, Err(ProtocolError::InvalidHeader { header: "eta", .. })),
        "{err:?}"
    );
}

#[test]
fn binds_arguments_like_python() {
    let (headers, _, _) = fixture("kwargs_only");
    let decode_body = |body: &str| {
        TaskMessage::decode(
            Some("application/json"),
            None,
            headers.clone(),
            body.as_bytes(),
        )
        .expect("decodes")
    };
    let positional = decode_body(r#"[["5f0c6a52-7c0e-4d8a-9d0b-3a1c2b4e5f60"], {}, null]"#);
    assert!(positional.bind::<OrderTask>().is_ok());
    let twice = decode_body(
        r#"[["5f0c6a52-7c0e-4d8a-9d0b-3a1c2b4e5f60"], {"order_id": "5f0c6a52-7c0e-4d8a-9d0b-3a1c2b4e5f60"}, null]"#,
    );
    assert!(
        matches!(twice.bind::<OrderTask>(), Err(ProtocolError::InvalidArgument { name, .. }) if name == "order_id")
    );
    let unknown = decode_body(r#"[[], {"order": "x"}, null]"#);
    assert!(
        matches!(unknown.bind::<OrderTask>(), Err(ProtocolError::InvalidArgument { name, .. }) if name == "order")
    );
    let not_uuid = decode_body(r#"[[], {"order_id": "nope"}, null]"#);
    assert!(matches!(
        not_uuid.bind::<OrderTask>(),
        Err(ProtocolError::InvalidArgument { .. })
    ));
}

#[test]
fn names_the_argument_whose_type_is_wrong_or_that_is_missing() {
    let (headers, _, _) = fixture("kwargs_only");
    let decode_body = |body: &str| {
        TaskMessage::decode(
            Some("application/json"),
            None,
            headers.clone(),
            body.as_bytes(),
        )
        .expect("decodes")
    };
    let wrong_type = decode_body(r#"[[], {"order_id": 42}, null]"#);
    assert!(
        matches!(wrong_type.bind::<OrderTask>(), Err(ProtocolError::InvalidArgument { name, .. }) if name == "order_id")
    );
    let missing = decode_body(r#"[[], {}, null]"#);
    assert!(
        matches!(missing.bind::<OrderTask>(), Err(ProtocolError::InvalidArgument { name, .. }) if name == "order_id")
    );
}
