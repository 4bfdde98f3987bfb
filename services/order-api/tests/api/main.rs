//! order-api against the real PostgreSQL, RabbitMQ and an SMTP server, with the email-worker
//! consuming: what a client and a customer observe.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod auth;
mod edge;
mod fds_tls;
mod helpers;
mod housekeeping;
mod reports;
mod scenario;

use std::time::Duration;

use helpers::{Options, sample_order, spawn_app, spawn_app_with};
use serde_json::{Value, json};

#[tokio::test]
async fn an_order_is_confirmed_by_email_end_to_end() {
    let app = spawn_app().await;

    let resp = app.post_order(&sample_order()).await;
    assert_eq!(resp.status(), 201);
    let body: Value = resp.json().await.unwrap();
    let order_id = body["order_id"].as_str().unwrap().to_owned();
    assert_eq!(body["status"], "accepted");
    assert_eq!(body["fds"]["decision"], "APPROVE");
    assert_eq!(body["fds"]["source"], "realtime");
    assert_eq!(body["total"], 90000);
    assert_eq!(body["currency"], "KRW");
    let task_id = body["tasks"]["send_order_confirmation_email"]
        .as_str()
        .unwrap()
        .to_owned();
    // The order's activity log line, written with the order (archived by archive_old_logs).
    let events: Vec<String> = shopfds_store::sqlx::query_scalar(
        "SELECT event FROM activity_logs WHERE order_id = $1::uuid ORDER BY id",
    )
    .bind(&order_id)
    .fetch_all(app.store.pool())
    .await
    .unwrap();
    assert_eq!(events, vec!["order.created".to_owned()]);

    let mail = app.wait_for_mail(1).await;
    let mail = &mail[0];
    assert_eq!(mail.to, vec!["minsu.kim@example.com".to_owned()]);
    assert!(
        mail.subject.contains("주문 확인") && mail.subject.contains(&order_id),
        "subject: {}",
        mail.subject
    );
    let text = mail.text.as_deref().unwrap();
    assert!(
        text.contains("무선 키보드") && text.contains("KB-101") && text.contains("₩90,000"),
        "text: {text}"
    );
    let html = mail.html.as_deref().unwrap();
    assert!(
        html.contains("무선 키보드") && html.contains("₩90,000"),
        "html: {html}"
    );

    let task = app
        .wait_for_task_state(&task_id, "SUCCESS", Duration::from_secs(10))
        .await;
    assert_eq!(task["name"], "send_order_confirmation_email");
    assert_eq!(task["queue"], "email");
    assert_eq!(task["result"]["status"], "sent");
    assert_eq!(task["retries"], 0);

    let order: Value = app.get_json(&format!("/v1/orders/{order_id}")).await;
    assert_eq!(order["items"][0]["sku"], "KB-101");
    assert_eq!(order["items"][0]["quantity"], 2);
    assert_eq!(order["customer"]["email"], "minsu.kim@example.com");
    assert_eq!(
        order["tasks"]["send_order_confirmation_email"],
        task_id.as_str()
    );
    assert_eq!(order["client_ip"], "203.0.113.7");
    assert_eq!(order["status"], "accepted");
    assert_eq!(order["fds"]["source"], "realtime");
    app.stop().await;
}

#[tokio::test]
async fn orders_are_accepted_while_the_broker_is_down_and_mailed_once_it_is_back() {
    let app = spawn_app_with(Options {
        broker_starts_down: true,
        ..Options::default()
    })
    .await;

    let resp = app.post_order(&sample_order()).await;
    assert_eq!(
        resp.status(),
        201,
        "an order never fails because RabbitMQ is down"
    );
    let body: Value = resp.json().await.unwrap();
    let task_id = body["tasks"]["send_order_confirmation_email"]
        .as_str()
        .unwrap()
        .to_owned();

    // The canvas' three first messages (confirmation, invoice PDF, shipment) wait in the
    // outbox, their tasks PENDING, and no mail goes out.
    let task: Value = app.get_json(&format!("/v1/tasks/{task_id}")).await;
    assert_eq!(task["state"], "PENDING");
    assert_eq!(app.store.outbox().pending().await.unwrap(), 3);
    assert!(app.smtp.messages().unwrap().is_empty());

    // RabbitMQ becomes reachable: the relay reconnects by itself and the mail goes out.
    app.broker_proxy.as_ref().unwrap().resume().await.unwrap();
    let mail = app.wait_for_mail(1).await;
    assert_eq!(mail[0].to, vec!["minsu.kim@example.com".to_owned()]);
    app.wait_for_task_state(&task_id, "SUCCESS", Duration::from_secs(10))
        .await;
    assert_eq!(app.store.outbox().pending().await.unwrap(), 0);
    app.stop().await;
}

#[tokio::test]
async fn invalid_bodies_get_422_naming_the_field_and_write_nothing() {
    let app = spawn_app().await;
    let mut zero = sample_order();
    zero["items"][0]["quantity"] = json!(0);
    let mut no_email = sample_order();
    no_email["customer"]
        .as_object_mut()
        .unwrap()
        .remove("email");
    let mut bad_price = sample_order();
    bad_price["items"][0]["unit_price"] = json!("45000");
    let cases = [
        (zero.to_string(), "items[0].quantity"),
        (no_email.to_string(), "customer.email"),
        (bad_price.to_string(), "items[0].unit_price"),
        ("{\"customer\": ".to_owned(), "body"),
        ("[]".to_owned(), "body"),
    ];
    for (body, field) in cases {
        let resp = app.post_raw(&body, None).await;
        assert_eq!(resp.status(), 422, "body {body}");
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["error"]["code"], "validation_failed");
        assert_eq!(err["error"]["field"], field, "body {body}: {err}");
        assert!(!err["error"]["message"].as_str().unwrap().is_empty());
    }
    assert_eq!(app.order_count().await, 0);
    assert_eq!(app.store.outbox().pending().await.unwrap(), 0);
    app.stop().await;
}

#[tokio::test]
async fn an_idempotency_key_replays_the_first_answer_and_refuses_another_body() {
    let app = spawn_app().await;
    let body = sample_order().to_string();

    let first = app.post_raw(&body, Some("checkout-42")).await;
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    let again = app.post_raw(&body, Some("checkout-42")).await;
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(
        again, first,
        "the replay is the first answer, same order and task ids"
    );
    assert_eq!(app.order_count().await, 1);

    let mut other = sample_order();
    other["items"][0]["quantity"] = json!(3);
    let conflict = app.post_raw(&other.to_string(), Some("checkout-42")).await;
    assert_eq!(conflict.status(), 409);
    let err: Value = conflict.json().await.unwrap();
    assert_eq!(err["error"]["code"], "idempotency_key_reused");

    // One order, one confirmation.
    app.wait_for_mail(1).await;
    let task_id = first["tasks"]["send_order_confirmation_email"]
        .as_str()
        .unwrap();
    app.wait_for_task_state(task_id, "SUCCESS", Duration::from_secs(10))
        .await;
    assert_eq!(app.smtp.messages().unwrap().len(), 1);
    assert_eq!(app.order_count().await, 1);
    app.stop().await;
}

#[tokio::test]
async fn unknown_ids_are_404() {
    let app = spawn_app().await;
    for path in [
        format!("/v1/orders/{}", uuid::Uuid::new_v4()),
        "/v1/orders/not-a-uuid".to_owned(),
        "/v1/tasks/no-such-task".to_owned(),
    ] {
        let resp = app.get(&path).await;
        assert_eq!(resp.status(), 404, "{path}");
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["error"]["code"], "not_found");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_database_outage_is_503_and_leaves_nothing_half_written() {
    let app = spawn_app_with(Options {
        database_behind_proxy: true,
        ..Options::default()
    })
    .await;
    let proxy = app.database_proxy.as_ref().unwrap();
    proxy.cut().await;

    let resp = app.post_order(&sample_order()).await;
    assert_eq!(resp.status(), 503);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["code"], "unavailable");
    let ready = app.ops_get("/readyz").await;
    assert_eq!(ready.status(), 503);

    proxy.resume().await.unwrap();
    assert_eq!(app.order_count().await, 0);
    assert_eq!(app.store.outbox().pending().await.unwrap(), 0);
    // And the API recovers by itself.
    let mut recovered = None;
    for _ in 0..50 {
        let resp = app.post_order(&sample_order()).await;
        if resp.status() == 201 {
            recovered = Some(resp);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        recovered.is_some(),
        "order-api accepts orders again once the database is back"
    );
    app.stop().await;
}

#[tokio::test]
async fn health_readiness_and_metrics_are_served_on_the_ops_port_only() {
    let app = spawn_app().await;
    assert_eq!(app.ops_get("/healthz").await.status(), 200);
    let ready = app.ops_get("/readyz").await;
    assert_eq!(ready.status(), 200);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["checks"]["database"], "ok");
    // Orders are taken while the broker is away (the outbox holds their tasks): readiness does
    // not ask RabbitMQ.
    assert!(ready["checks"].get("broker").is_none(), "{ready}");
    app.post_raw("{}", None).await;
    let metrics = app.ops_get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("shopfds_http_requests_total"), "{metrics}");
    assert!(metrics.contains("route=\"/v1/orders\""), "{metrics}");
    // Not on the public port: anonymous callers cannot probe dependencies or read metrics.
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(app.get(path).await.status(), 404, "{path} on the API port");
    }
    app.stop().await;
}

#[tokio::test]
async fn fds_worker_scores_orders_approve_review_and_block_with_their_reasons() {
    let app = spawn_app().await;

    // The design's example: a small domestic order from an established account.
    let resp = app.post_order(&sample_order()).await;
    assert_eq!(resp.status(), 201);
    let approve: Value = resp.json().await.unwrap();
    assert_eq!(approve["status"], "accepted", "{approve}");
    assert_eq!(approve["fds"]["decision"], "APPROVE");
    assert_eq!(approve["fds"]["source"], "realtime");
    assert!(approve["tasks"]["send_order_confirmation_email"].is_string());

    // ₩6,000,000: over the high-amount threshold alone → REVIEW.
    let mut large = sample_order();
    large["customer"]["id"] = json!("c-2002");
    large["items"] =
        json!([{"sku": "TV-77", "name": "OLED TV", "quantity": 1, "unit_price": 6_000_000}]);
    let review: Value = app.post_order_json(&large).await;
    assert_eq!(review["status"], "review", "{review}");
    assert_eq!(review["fds"]["decision"], "REVIEW");
    let rules = |v: &Value| -> Vec<String> {
        v["fds"]["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["rule_id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert!(
        rules(&review).iter().any(|r| r.starts_with("amount.")),
        "{review}"
    );

    // The same amount from a day-old account, billed abroad → BLOCK, and no task starts.
    let mut risky = large.clone();
    risky["customer"]["id"] = json!("c-3003");
    risky["customer"]["account_created_at"] =
        json!((chrono::Utc::now() - chrono::Duration::days(1)).to_rfc3339());
    risky["billing_country"] = json!("US");
    let block: Value = app.post_order_json(&risky).await;
    assert_eq!(block["status"], "blocked", "{block}");
    assert_eq!(block["fds"]["decision"], "BLOCK");
    let fired = rules(&block);
    assert!(fired.contains(&"country.mismatch".to_owned()), "{block}");
    assert!(
        fired.contains(&"account.new_large_order".to_owned()),
        "{block}"
    );
    assert_eq!(block["tasks"], json!({}));
    let order_id = block["order_id"].as_str().unwrap();
    let stored: Value = app.get_json(&format!("/v1/orders/{order_id}")).await;
    assert_eq!(stored["status"], "blocked");
    assert_eq!(stored["fds"]["score"], block["fds"]["score"]);

    // Only the approved and the reviewed order were mailed.
    app.wait_for_mail(2).await;
    app.stop().await;
}

#[tokio::test]
async fn with_fds_worker_down_the_fallback_applies_and_the_order_is_evaluated_then_confirmed_once_it_is_back()
 {
    let mut app = spawn_app_with(Options {
        fds_down: true,
        ..Options::default()
    })
    .await;

    let body: Value = app.post_order_json(&sample_order()).await;
    assert_eq!(body["status"], "review", "{body}");
    assert_eq!(body["fds"]["decision"], "REVIEW");
    assert_eq!(body["fds"]["source"], "fallback");
    assert_eq!(body["fds"]["reasons"][0]["rule_id"], "fds.unavailable");
    let order_id = body["order_id"].as_str().unwrap().to_owned();
    let evaluation = body["tasks"]["evaluate_transaction"]
        .as_str()
        .unwrap()
        .to_owned();
    let confirmation = body["tasks"]["send_order_confirmation_email"]
        .as_str()
        .unwrap()
        .to_owned();
    let task: Value = app.get_json(&format!("/v1/tasks/{evaluation}")).await;
    assert_eq!(task["queue"], "fds");

    // fds-worker comes up and takes the queued evaluation: the order gets its real decision,
    // and only then is the customer mailed (the next link of the chain).
    // The relay has published the evaluation; the confirmation waits behind it, unsent.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while app.store.outbox().pending().await.unwrap() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the relay did not publish the evaluation"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let waiting: Value = app.get_json(&format!("/v1/tasks/{confirmation}")).await;
    assert_eq!(waiting["state"], "PENDING");
    assert!(
        app.smtp.messages().unwrap().is_empty(),
        "no mail before the order is scored"
    );
    app.start_fds_worker().await;
    let task = app
        .wait_for_task_state(&evaluation, "SUCCESS", Duration::from_secs(30))
        .await;
    assert_eq!(task["result"]["decision"], "APPROVE", "{task}");
    let order: Value = app.get_json(&format!("/v1/orders/{order_id}")).await;
    assert_eq!(order["status"], "accepted", "{order}");
    assert_eq!(order["fds"]["source"], "batch");
    assert_eq!(order["fds"]["decision"], "APPROVE");
    app.wait_for_task_state(&confirmation, "SUCCESS", Duration::from_secs(30))
        .await;
    assert_eq!(
        app.wait_for_mail(1).await[0].to,
        vec!["minsu.kim@example.com".to_owned()]
    );
    app.stop().await;
}
