//! A header nested as deep as RabbitMQ's largest frame allows, published raw to the real binary
//! (started without `RUST_MIN_STACK`, so it sizes its own thread stack): the process survives
//! (lapin's I/O thread parses the header without overflowing its stack), dead-letters the message
//! with the reason, and goes on serving.

use std::time::Duration;

use lapin::BasicProperties;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString};
use shopfds_protocol::tasks::SEND_ORDER_CONFIRMATION_EMAIL;
use shopfds_testkit::service::{TestService, header, take_message};

const BIN: &str = env!("CARGO_BIN_EXE_email-worker");

/// Array levels in a header: 5 bytes each, about 130 KB, just within RabbitMQ's default
/// `frame_max` of 131072 bytes (the largest header it accepts). 200 levels aborted the worker.
const ARRAY_LEVELS: usize = 26_000;
/// Table levels (an empty key, 6 bytes each), as deep as the same frame allows.
const TABLE_LEVELS: usize = 21_700;

/// `levels` arrays (or tables), each holding the next, built without recursion.
fn nested(levels: usize, tables: bool) -> AMQPValue {
    let mut value = if tables {
        AMQPValue::FieldTable(FieldTable::default())
    } else {
        AMQPValue::FieldArray(FieldArray::default())
    };
    for _ in 1..levels {
        value = if tables {
            let mut outer = FieldTable::default();
            outer.insert("".into(), value);
            AMQPValue::FieldTable(outer)
        } else {
            let mut outer = FieldArray::default();
            outer.push(value);
            AMQPValue::FieldArray(outer)
        };
    }
    value
}

/// Publishes an email task whose header `name` is `value`, confirmed; returns its id.
async fn publish_nested(channel: &lapin::Channel, name: &str, value: AMQPValue) -> String {
    let id = uuid::Uuid::new_v4().to_string();
    let mut headers = FieldTable::default();
    for (k, v) in [
        ("lang", "py"),
        ("task", SEND_ORDER_CONFIRMATION_EMAIL),
        ("id", id.as_str()),
        ("root_id", id.as_str()),
    ] {
        headers.insert(k.into(), AMQPValue::LongString(LongString::from(v)));
    }
    headers.insert("retries".into(), AMQPValue::LongInt(0));
    headers.insert(name.into(), value);
    let props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_content_encoding("utf-8".into())
        .with_delivery_mode(2)
        .with_headers(headers);
    let body = br#"[[], {"order_id": "o-1"}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]"#;
    let confirm = channel
        .basic_publish(
            "email".into(),
            "email".into(),
            BasicPublishOptions::default(),
            body,
            props,
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(confirm.is_ack(), "the broker accepted the header");
    id
}

#[tokio::test]
async fn a_header_nested_as_deep_as_a_frame_allows_is_dead_lettered_and_the_worker_lives() {
    let mut service = TestService::spawn(BIN, &[]).await.unwrap();
    service.wait_ready(Duration::from_secs(30)).await.unwrap();

    let conn = service.vhost.connect().await.unwrap();
    let channel = conn.create_channel().await.unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for (name, value) in [
        ("stamps", nested(ARRAY_LEVELS, false)),
        ("x-tables", nested(TABLE_LEVELS, true)),
    ] {
        let id = publish_nested(&channel, name, value).await;
        let (properties, dead_body) = take_message(&conn, "failed.email").await.unwrap();
        assert_eq!(header(&properties, "id").as_deref(), Some(id.as_str()));
        let reason = header(&properties, "x-shopfds-reason").unwrap_or_default();
        assert!(
            reason.contains(&format!("header {name:?} is nested deeper than 64 levels")),
            "{reason}"
        );
        assert!(dead_body.is_array(), "the body is kept: {dead_body}");
    }
    assert!(
        service.child.try_wait().unwrap().is_none(),
        "the worker died: {}",
        service.child.describe()
    );
    // It still serves, and stops cleanly.
    service
        .assert_unknown_tasks_dead_lettered(&["email"])
        .await
        .unwrap();
    let _ = conn.close(200, "done".into()).await;
    service.assert_stops_cleanly().await.unwrap();
}
