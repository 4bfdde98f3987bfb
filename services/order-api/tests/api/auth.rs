//! Authentication and what a key may see: 401 and 403 on every `/v1` route, revoked keys, the
//! fraud reasons for `admin` only, whose client address the fraud rules see, amount limits.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shopfds_auth::Scope;
use shopfds_store::NewApiKey;
use shopfds_testkit::keys::TestKey;

use crate::helpers::{Options, TestApp, sample_order, spawn_app, spawn_app_with};

/// An order id and a task id that exist, placed with the admin key.
async fn an_order(app: &TestApp) -> (String, String) {
    let body: Value = app.post_order_json(&sample_order()).await;
    (
        body["order_id"].as_str().unwrap().to_owned(),
        body["tasks"]["send_order_confirmation_email"]
            .as_str()
            .unwrap()
            .to_owned(),
    )
}

#[tokio::test]
async fn every_v1_route_needs_a_key_and_its_scope() {
    let app = spawn_app().await;
    let (order_id, task_id) = an_order(&app).await;
    let reads = [
        format!("/v1/orders/{order_id}"),
        format!("/v1/tasks/{task_id}"),
    ];
    let stranger = TestKey::new(&[Scope::Admin]);
    let before = app.order_count().await;

    // No key, a key nobody issued: 401 with a challenge and no secret in the answer.
    for key in [None, Some(&stranger)] {
        let resp = app.post_order_as(key, &sample_order(), None).await;
        assert_eq!(resp.status(), 401, "{key:?}");
        assert_eq!(resp.headers()["www-authenticate"], "Bearer");
        let text = resp.text().await.unwrap();
        let err: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(err["error"]["code"], "unauthenticated", "{text}");
        assert!(!text.contains(&stranger.key[4..]), "{text}");
        for path in &reads {
            let resp = app.get_as(key, path).await;
            assert_eq!(resp.status(), 401, "{path} {key:?}");
            assert_eq!(resp.headers()["www-authenticate"], "Bearer");
        }
    }
    // Not a bearer key at all.
    let basic = reqwest::Client::new()
        .get(format!("{}{}", app.address, reads[0]))
        .header("authorization", "Basic dXNlcjpwYXNz")
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 401);

    // A valid key without the scope: 403 naming it.
    let resp = app
        .post_order_as(Some(&app.keys.reader), &sample_order(), None)
        .await;
    assert_eq!(resp.status(), 403);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["code"], "insufficient_scope");
    assert_eq!(err["error"]["scope"], "orders:write");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("orders:write")
    );
    for path in &reads {
        for key in [&app.keys.writer, &app.keys.fds] {
            let resp = app.get_as(Some(key), path).await;
            assert_eq!(resp.status(), 403, "{path} {key:?}");
            let err: Value = resp.json().await.unwrap();
            assert_eq!(err["error"]["scope"], "orders:read");
        }
    }
    assert_eq!(
        app.order_count().await,
        before,
        "nothing refused was written"
    );

    // The allowed calls.
    let resp = app
        .post_order_as(Some(&app.keys.writer), &sample_order(), None)
        .await;
    assert_eq!(resp.status(), 201);
    for path in &reads {
        assert_eq!(
            app.get_as(Some(&app.keys.reader), path).await.status(),
            200,
            "{path}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn a_key_from_the_table_works_until_revoked() {
    let app = spawn_app_with(Options {
        key_cache: Some(Duration::from_secs(1)),
        ..Options::default()
    })
    .await;
    let key = TestKey::new(&[Scope::OrdersWrite, Scope::OrdersRead]);
    app.store
        .api_keys()
        .insert(&NewApiKey {
            id: key.id.clone(),
            name: "storefront".into(),
            scopes: vec!["orders:write".into(), "orders:read".into()],
            hash: key.entry.rsplit(':').next().unwrap().to_owned(),
        })
        .await
        .unwrap();
    let resp = app.post_order_as(Some(&key), &sample_order(), None).await;
    assert_eq!(resp.status(), 201);

    assert!(app.store.api_keys().revoke(&key.id).await.unwrap());
    // Refused once the cached answer (API_KEYS_CACHE_SECS = 1 here) has expired.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let resp = app
            .get_as(Some(&key), &format!("/v1/orders/{}", uuid::Uuid::new_v4()))
            .await;
        if resp.status() == 401 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still {} after revoke",
            resp.status()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let resp = app.post_order_as(Some(&key), &sample_order(), None).await;
    assert_eq!(resp.status(), 401);
    app.stop().await;
}

#[tokio::test]
async fn only_admin_sees_the_fraud_check_and_sets_the_client_ip() {
    let app = spawn_app().await;

    // A storefront: the customer-facing status, no score, decision or reasons.
    let resp = app
        .post_order_as(Some(&app.keys.shop), &sample_order(), Some("shop-1"))
        .await;
    assert_eq!(resp.status(), 201);
    let shop: Value = resp.json().await.unwrap();
    assert_eq!(shop["status"], "accepted");
    assert!(shop.get("fds").is_none(), "{shop}");
    let order_id = shop["order_id"].as_str().unwrap().to_owned();
    let path = format!("/v1/orders/{order_id}");
    let read: Value = app
        .get_as(Some(&app.keys.shop), &path)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(read["status"], "accepted");
    assert!(read.get("fds").is_none(), "{read}");
    // Its replay is filtered the same way.
    let replay: Value = app
        .post_order_as(Some(&app.keys.shop), &sample_order(), Some("shop-1"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(replay, shop);

    // What is stored is unchanged, and admin sees it all.
    let admin: Value = app.get_json(&path).await;
    assert_eq!(admin["fds"]["decision"], "APPROVE");
    assert_eq!(admin["fds"]["source"], "realtime");
    // The body's client_ip (203.0.113.7) was ignored for the storefront: the TCP peer counted.
    assert_eq!(admin["client_ip"], "127.0.0.1");

    let body: Value = app.post_order_json(&sample_order()).await;
    assert_eq!(body["fds"]["decision"], "APPROVE");
    let stored: Value = app
        .get_json(&format!(
            "/v1/orders/{}",
            body["order_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(stored["client_ip"], "203.0.113.7", "admin may name it");
    app.stop().await;
}

/// `POST /v1/orders` as the storefront with an `X-Forwarded-For`; the address stored.
async fn client_seen(app: &TestApp, forwarded_for: &str) -> Value {
    let mut body = sample_order();
    body.as_object_mut().unwrap().remove("client_ip");
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/orders", app.address))
        .header("authorization", app.keys.shop.bearer())
        .header("x-forwarded-for", forwarded_for)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let answer: Value = resp.json().await.unwrap();
    let order: Value = app
        .get_json(&format!(
            "/v1/orders/{}",
            answer["order_id"].as_str().unwrap()
        ))
        .await;
    order["client_ip"].clone()
}

#[tokio::test]
async fn forwarded_for_counts_only_from_a_trusted_proxy() {
    // The test talks from 127.0.0.1: a trusted proxy here.
    let trusted = spawn_app_with(Options {
        trusted_proxies: Some("127.0.0.0/8, 10.0.0.0/8"),
        ..Options::default()
    })
    .await;
    // The left-most entry is whatever the client wrote; the right-most untrusted one is a fact.
    assert_eq!(
        client_seen(&trusted, "192.0.2.1, 198.51.100.7, 10.1.1.1").await,
        json!("198.51.100.7")
    );
    trusted.stop().await;

    let untrusted = spawn_app().await;
    assert_eq!(
        client_seen(&untrusted, "192.0.2.1, 198.51.100.7").await,
        json!("127.0.0.1")
    );
    untrusted.stop().await;
}

#[tokio::test]
async fn amounts_past_the_limits_are_422_naming_the_field() {
    let app = spawn_app_with(Options {
        fds_down: true,
        limits: Some(order_api::domain::AmountLimits {
            max_line: 100_000,
            max_total: 200_000,
        }),
        ..Options::default()
    })
    .await;
    let item = |quantity: i64, unit_price: i64| json!({"sku": "KB-101", "name": "키보드", "quantity": quantity, "unit_price": unit_price});
    for (items, field) in [
        (
            vec![item(1, 10), item(1, 10), item(3, 40_000)],
            "items[2].unit_price",
        ),
        (
            vec![item(1, 100_000), item(1, 100_000), item(1, 1)],
            "items",
        ),
        (vec![item(10_000, i64::MAX / 2)], "items[0].unit_price"),
    ] {
        let mut body = sample_order();
        body["items"] = Value::Array(items);
        let resp = app.post_order(&body).await;
        assert_eq!(resp.status(), 422);
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["error"]["field"], field, "{err}");
    }
    assert_eq!(app.order_count().await, 0);
    let mut body = sample_order();
    body["items"] = json!([item(1, 100_000), item(2, 50_000)]);
    let resp = app.post_order(&body).await;
    assert_eq!(resp.status(), 201);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["total"], 200_000);
    app.stop().await;
}

#[tokio::test]
async fn an_idempotency_key_belongs_to_the_api_key_that_sent_it() {
    let app = spawn_app().await;
    let body = sample_order();
    let first = app
        .post_order_as(Some(&app.keys.shop), &body, Some("checkout-1"))
        .await;
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();

    // Another key, the same Idempotency-Key and body: its own order, not the first one's replay.
    let other = app
        .post_order_as(Some(&app.keys.writer), &body, Some("checkout-1"))
        .await;
    assert_eq!(other.status(), 201);
    assert!(other.headers().get("idempotent-replayed").is_none());
    let other: Value = other.json().await.unwrap();
    assert_ne!(other["order_id"], first["order_id"]);
    // Nor can another key block it with a different body under that Idempotency-Key.
    let mut changed = sample_order();
    changed["items"][0]["quantity"] = json!(3);
    let claimed = app
        .post_order_as(Some(&app.keys.admin), &changed, Some("checkout-2"))
        .await;
    assert_eq!(claimed.status(), 201);
    let victim = app
        .post_order_as(Some(&app.keys.shop), &body, Some("checkout-2"))
        .await;
    assert_eq!(victim.status(), 201);

    // Within one key the replay still works.
    let again = app
        .post_order_as(Some(&app.keys.shop), &body, Some("checkout-1"))
        .await;
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again, first);
    assert_eq!(app.order_count().await, 4);
    app.stop().await;
}
