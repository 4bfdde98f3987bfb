//! The HTTP edge against hostile input: strings that broke the database (500s), bodies that are
//! not what the API describes, ids no record can have, and a client that sends its request head
//! one byte at a time.

use std::time::Duration;

use serde_json::{Value, json};
use shopfds_testkit::raw_http::RawHttp;

use crate::helpers::{Options, TestApp, sample_order, spawn_app_with};

/// No fds-worker: these tests are about the edge, and the fallback decides in no time.
async fn spawn_edge_app() -> TestApp {
    spawn_app_with(Options {
        fds_down: true,
        ..Options::default()
    })
    .await
}

/// `sample_order()` with the value at JSON pointer `pointer` replaced.
fn with(pointer: &str, value: Value) -> Value {
    let mut order = sample_order();
    *order.pointer_mut(pointer).unwrap() = value;
    order
}

/// Posts `body` and expects `status` with an error naming `field`.
async fn expect_refused(app: &TestApp, body: &str, status: u16, field: &str) {
    let resp = app.post_raw(body, None).await;
    let got = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    assert_eq!(got, status, "field {field}: {text}");
    let err: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(err["error"]["field"], field, "{text}");
}

#[tokio::test]
async fn the_reported_inputs_get_422_naming_the_field() {
    let app = spawn_edge_app().await;
    let cases = [
        (
            "/payment/card_fingerprint",
            json!(incompressible(8200)),
            "payment.card_fingerprint",
        ),
        (
            "/shipping_address/line2",
            json!("Apt 1\u{0}"),
            "shipping_address.line2",
        ),
        (
            "/shipping_address/phone",
            json!("+82\u{0}2-120"),
            "shipping_address.phone",
        ),
        (
            "/payment/card_fingerprint",
            json!("fp_\u{0}"),
            "payment.card_fingerprint",
        ),
    ];
    for (pointer, value, field) in cases {
        expect_refused(&app, &with(pointer, value).to_string(), 422, field).await;
    }
    let mut token = sample_order();
    token["payment"]["payment_token"] = json!("tok_\u{0}");
    expect_refused(&app, &token.to_string(), 422, "payment.payment_token").await;
    assert_eq!(app.order_count().await, 0);
    app.stop().await;
}

/// `len` hex digits that PostgreSQL cannot compress much (a repeated letter would fit in an
/// index row however long it is).
fn incompressible(len: usize) -> String {
    let mut hex = String::with_capacity(len + 32);
    while hex.len() < len {
        hex.push_str(&uuid::Uuid::new_v4().simple().to_string());
    }
    hex.truncate(len);
    hex
}

/// Every string field of the order body, with its maximum length in characters.
const STRING_FIELDS: [(&str, &str, usize); 17] = [
    ("/customer/id", "customer.id", 64),
    ("/customer/email", "customer.email", 254),
    ("/customer/name", "customer.name", 200),
    ("/items/0/sku", "items[0].sku", 64),
    ("/items/0/name", "items[0].name", 200),
    ("/currency", "currency", 3),
    ("/shipping_address/name", "shipping_address.name", 200),
    ("/shipping_address/line1", "shipping_address.line1", 200),
    ("/shipping_address/line2", "shipping_address.line2", 200),
    ("/shipping_address/city", "shipping_address.city", 100),
    (
        "/shipping_address/postal_code",
        "shipping_address.postal_code",
        20,
    ),
    ("/shipping_address/country", "shipping_address.country", 2),
    ("/shipping_address/phone", "shipping_address.phone", 32),
    ("/billing_country", "billing_country", 2),
    ("/payment/method", "payment.method", 32),
    ("/payment/card_fingerprint", "payment.card_fingerprint", 128),
    ("/client_ip", "client_ip", 45),
];

#[tokio::test]
async fn every_string_field_refuses_over_length_and_control_characters() {
    let app = spawn_edge_app().await;
    let mut fields = STRING_FIELDS.to_vec();
    fields.push(("/payment/payment_token", "payment.payment_token", 255));
    // A timestamp is a string on the wire too (RFC 3339 is at most 35 characters).
    fields.push((
        "/customer/account_created_at",
        "customer.account_created_at",
        35,
    ));
    for (pointer, field, max) in fields {
        let mut long = sample_order();
        // payment_token is not in the sample; `pointer_mut` needs the key to exist.
        long["payment"]["payment_token"] = json!("tok_1");
        *long.pointer_mut(pointer).unwrap() = json!("7".repeat(max + 1));
        expect_refused(&app, &long.to_string(), 422, field).await;
        for bad in ["a\u{0}b", "a\u{1b}b", "a\nb", "a\tb", "a\u{7f}b"] {
            let mut order = sample_order();
            order["payment"]["payment_token"] = json!("tok_1");
            *order.pointer_mut(pointer).unwrap() = json!(bad);
            expect_refused(&app, &order.to_string(), 422, field).await;
        }
    }
    assert_eq!(app.order_count().await, 0);
    app.stop().await;
}

#[tokio::test]
async fn an_order_with_every_field_at_its_limit_is_accepted() {
    let app = spawn_edge_app().await;
    let mut order = sample_order();
    order["payment"]["payment_token"] = json!("t".repeat(255));
    order["payment"]["card_fingerprint"] = json!("f".repeat(128));
    order["shipping_address"]["phone"] = json!("+".repeat(32));
    // Multi-byte text counts in characters, not bytes; surrounding whitespace is trimmed.
    for (pointer, max) in [
        ("/customer/id", 64),
        ("/customer/name", 200),
        ("/items/0/sku", 64),
        ("/items/0/name", 200),
        ("/shipping_address/name", 200),
        ("/shipping_address/line1", 200),
        ("/shipping_address/line2", 200),
        ("/shipping_address/city", 100),
        ("/shipping_address/postal_code", 20),
        ("/payment/method", 32),
    ] {
        *order.pointer_mut(pointer).unwrap() = json!(format!(" {}\n", "가".repeat(max)));
    }
    let resp = app.post_order(&order).await;
    let status = resp.status();
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(status, 201, "{answer}");
    let stored = app
        .get_json(&format!(
            "/v1/orders/{}",
            answer["order_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(stored["shipping_address"]["line2"], json!("가".repeat(200)));
    app.stop().await;
}

#[tokio::test]
async fn unknown_fields_trailing_data_and_other_content_types_are_refused() {
    let app = spawn_edge_app().await;
    let mut unknown = sample_order();
    unknown["coupon"] = json!("FREE");
    expect_refused(&app, &unknown.to_string(), 422, "coupon").await;
    let mut misspelt = sample_order();
    misspelt["shipping_address"]["line_2"] = json!("Apt 1");
    expect_refused(&app, &misspelt.to_string(), 422, "shipping_address.line_2").await;
    let mut in_item = sample_order();
    in_item["items"][0]["discount"] = json!(10);
    expect_refused(&app, &in_item.to_string(), 422, "items[0].discount").await;

    let body = sample_order().to_string();
    for trailing in [
        format!("{body}garbage"),
        format!("{body}{body}"),
        format!("{body} 1"),
    ] {
        expect_refused(&app, &trailing, 422, "body").await;
    }

    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let resp = app.post_typed(&body, content_type, None).await;
        assert_eq!(resp.status(), 415, "{content_type:?}");
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["error"]["code"], "unsupported_media_type");
        assert_eq!(err["error"]["field"], "Content-Type");
    }
    assert_eq!(app.order_count().await, 0);

    // JSON declared with a charset, and trailing whitespace, are fine.
    let resp = app
        .post_typed(
            &format!("{body}\n"),
            Some("application/json; charset=utf-8"),
            None,
        )
        .await;
    assert_eq!(resp.status(), 201);
    app.stop().await;
}

#[tokio::test]
async fn ids_no_record_can_have_are_404() {
    let app = spawn_edge_app().await;
    for path in [
        "/v1/tasks/a%00b".to_owned(),
        "/v1/tasks/a%0Ab".to_owned(),
        format!("/v1/tasks/{}", "x".repeat(300)),
        "/v1/tasks/%FF".to_owned(),
        "/v1/orders/%FF".to_owned(),
        "/v1/orders/a%00b".to_owned(),
    ] {
        let resp = app.get(&path).await;
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert_eq!(status, 404, "{path}: {text}");
        let err: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(err["error"]["code"], "not_found", "{path}");
        assert!(text.len() < 300, "the id is not echoed in full: {text}");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_client_trickling_its_request_head_is_disconnected() {
    let app = spawn_app_with(Options {
        fds_down: true,
        header_read_timeout: Some(Duration::from_secs(1)),
        ..Options::default()
    })
    .await;
    let mut head = b"POST /v1/orders HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nX-Slow: "
        .to_vec();
    head.extend(std::iter::repeat_n(b'a', 300));
    let mut client = RawHttp::connect(app.socket).await.unwrap();
    // One byte every 100 ms: the head would take about 40 s; the timeout is 1 s.
    let open = client.trickle(&head, Duration::from_millis(100)).await;
    assert!(
        !open,
        "still connected after sending the whole head slowly; got {:?}",
        client.received()
    );
    let received = client.received();
    assert!(
        received.is_empty() || received.starts_with("HTTP/1.1 408"),
        "{received:?}"
    );
    assert_eq!(app.ops_get("/healthz").await.status(), 200);
    app.stop().await;
}
