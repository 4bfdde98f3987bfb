//! The email-worker against real servers: a stock Python Celery client and worker on one side,
//! a real SMTP server (aiosmtpd) on the other, RabbitMQ and PostgreSQL in between.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod deep_header;
mod helpers;
mod invoice;
mod outages;
mod refused_topology;
mod shipment;

use std::process::Command;
use std::time::Duration;

use helpers::{Options, WAIT, spawn_email_worker, spawn_email_worker_with};
use serde_json::{Value, json};
use shopfds_broker::Outgoing;
use shopfds_protocol::names::REASON_HEADER;
use shopfds_protocol::tasks::SEND_ORDER_CONFIRMATION_EMAIL;
use shopfds_protocol::{TaskMessage, TaskState};
use shopfds_testkit::celery::{CeleryWorker, send_task};
use shopfds_testkit::pg::TestDatabase;
use shopfds_testkit::process::ChildGuard;
use shopfds_testkit::rabbit::TestVhost;
use shopfds_testkit::smtp::SmtpSink;

#[tokio::test]
async fn a_stock_celery_client_gets_the_order_confirmation_mailed_by_the_rust_worker() {
    let app = spawn_email_worker().await;
    let id = send_task(
        &app.vhost.amqp_url(),
        SEND_ORDER_CONFIRMATION_EMAIL,
        json!({"order_id": app.order_id.to_string()}),
        None,
    )
    .await
    .unwrap();

    let mails = app.smtp.wait_for(1, WAIT).await.unwrap();
    assert_eq!(mails.len(), 1);
    let mail = &mails[0];
    assert_eq!(mail.to, vec![app.customer_email.clone()]);
    assert!(mail.subject.contains("주문 확인"), "{}", mail.subject);
    assert!(
        mail.subject.contains(&app.order_id.to_string()),
        "{}",
        mail.subject
    );
    let text = mail.text.as_deref().expect("a text/plain part");
    let html = mail.html.as_deref().expect("a text/html part");
    for part in [text, html] {
        for needle in ["무선 키보드", "무선 마우스", "₩90,000", "김민수"] {
            assert!(part.contains(needle), "{needle:?} missing from:\n{part}");
        }
    }

    let record = app.wait_for_state(&id, TaskState::Success).await;
    assert_eq!(record.name, SEND_ORDER_CONFIRMATION_EMAIL);
    assert_eq!(record.queue, "email");
    let result = record.result.unwrap();
    assert_eq!(result["status"], "sent");
    assert_eq!(result["to"], app.customer_email);
    let mut app = app;
    app.stop().await.expect("a clean shutdown");
}

#[tokio::test]
async fn a_message_built_in_rust_runs_on_a_stock_celery_worker() {
    shopfds_testkit::init_tracing();
    let vhost = tokio::task::spawn_blocking(TestVhost::create)
        .await
        .unwrap()
        .unwrap();
    let celery = CeleryWorker::start(&vhost.amqp_url(), &["email"])
        .await
        .unwrap();

    let order_id = uuid::Uuid::new_v4().to_string();
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut msg = TaskMessage::new(
        SEND_ORDER_CONFIRMATION_EMAIL,
        json!({"order_id": order_id}).as_object().cloned().unwrap(),
    );
    msg.headers
        .extra
        .insert("traceparent".to_owned(), json!(traceparent));
    let broker = shopfds_broker::BrokerSettings::with_url(vhost.amqp_url(), "email-test");
    let conn = shopfds_broker::amqp::connect(&broker).await.unwrap();
    let publisher = shopfds_broker::Publisher::new(&conn).await.unwrap();
    publisher
        .publish(&Outgoing::task(&msg, "email"))
        .await
        .unwrap();

    let runs = celery.wait_for_executions(1, WAIT).await.unwrap();
    let run = &runs[0];
    assert_eq!(run["task"], SEND_ORDER_CONFIRMATION_EMAIL);
    assert_eq!(run["id"], msg.id());
    assert_eq!(run["kwargs"], json!({"order_id": order_id}));
    assert_eq!(run["args"], json!([]));
    assert_eq!(run["root_id"], msg.id());
    assert_eq!(run["retries"], 0);
    assert_eq!(run["traceparent"], traceparent);
    assert_eq!(run["delivery_info"]["routing_key"], "email");
}

#[tokio::test]
async fn the_same_order_is_mailed_once_however_often_its_task_arrives() {
    // One task at a time, so the messages run in the order they were published.
    let app = spawn_email_worker_with(Options {
        concurrency: 1,
        ..Options::default()
    })
    .await;
    let first = TaskMessage::new(SEND_ORDER_CONFIRMATION_EMAIL, app.order_kwargs());
    let out = Outgoing::task(&first, "email");
    app.publish(&out).await;
    app.publish(&out).await;
    let other = TaskMessage::new(SEND_ORDER_CONFIRMATION_EMAIL, app.order_kwargs());
    assert_ne!(other.id(), first.id());
    app.publish(&Outgoing::task(&other, "email")).await;

    let second = app.wait_for_state(other.id(), TaskState::Success).await;
    let result = second.result.unwrap();
    assert_eq!(result["status"], "already_sent", "{result}");
    let first_record = app.wait_for_state(first.id(), TaskState::Success).await;
    assert!(first_record.result.is_some());
    // All three deliveries have finished (the last one ran after the others): one mail only.
    let mails = app.smtp.messages().unwrap();
    assert_eq!(mails.len(), 1, "{mails:#?}");
    assert_eq!(mails[0].to, vec![app.customer_email.clone()]);
}

#[tokio::test]
async fn a_recipient_the_smtp_server_rejects_is_a_failure_in_the_dead_letter_queue() {
    let app = spawn_email_worker_with(Options {
        customer_email: "reject.minsu@example.com".to_owned(),
        ..Options::default()
    })
    .await;
    let msg = TaskMessage::new(SEND_ORDER_CONFIRMATION_EMAIL, app.order_kwargs());
    app.publish(&Outgoing::task(&msg, "email")).await;

    let record = app.wait_for_state(msg.id(), TaskState::Failure).await;
    assert_eq!(record.retries, 0, "a 5xx is not retried");
    let error = record.error.unwrap();
    assert_eq!(error["exc_type"], "PermanentError");
    let dead = app.take("failed.email", 1).await;
    let (headers, _) = &dead[0];
    assert_eq!(headers["id"], json!(msg.id()));
    let reason = headers[REASON_HEADER].as_str().unwrap();
    assert!(reason.contains("SMTP"), "{reason}");
    assert!(reason.contains("550"), "{reason}");
    assert!(app.smtp.messages().unwrap().is_empty());
}

#[tokio::test]
async fn a_temporary_smtp_failure_is_retried_then_dead_lettered() {
    let app = spawn_email_worker_with(Options {
        customer_email: "tempfail.minsu@example.com".to_owned(),
        ..Options::default()
    })
    .await;
    let msg = TaskMessage::new(SEND_ORDER_CONFIRMATION_EMAIL, app.order_kwargs());
    app.publish(&Outgoing::task(&msg, "email")).await;

    // The seed's policy: 3 retries with exponential backoff (1 s base, full jitter).
    let seen = app.watch_states(msg.id(), TaskState::Failure).await;
    let retries: Vec<i32> = seen
        .iter()
        .filter(|(s, _)| *s == TaskState::Retry)
        .map(|(_, r)| *r)
        .collect();
    assert_eq!(retries, vec![0, 1, 2], "{seen:?}");
    assert_eq!(seen.last(), Some(&(TaskState::Failure, 3)));
    let record = app.store.results().get(msg.id()).await.unwrap().unwrap();
    let message = record.error.unwrap()["exc_message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains("max retries (3) exceeded"), "{message}");
    assert!(message.contains("451"), "{message}");

    let dead = app.take("failed.email", 1).await;
    let (headers, _) = &dead[0];
    assert_eq!(headers["id"], json!(msg.id()));
    assert_eq!(headers["retries"], json!(3));
    let reason = headers[REASON_HEADER].as_str().unwrap();
    assert!(reason.contains("max retries"), "{reason}");
    assert!(app.smtp.messages().unwrap().is_empty());
}

#[tokio::test]
async fn the_binary_serves_health_and_readiness_and_exits_cleanly_on_sigterm() {
    shopfds_testkit::init_tracing();
    let smtp = SmtpSink::start().await.unwrap();
    let vhost = tokio::task::spawn_blocking(TestVhost::create)
        .await
        .unwrap()
        .unwrap();
    let db = TestDatabase::create().await.unwrap();
    let port = shopfds_testkit::free_port();
    let dir = std::env::temp_dir().join(format!("email-worker-smoke-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_email-worker"));
    cmd.env("BROKER_URL", vhost.amqp_url())
        .env("DATABASE_URL", db.url())
        .env("SMTP_URL", smtp.url())
        .env("OPS_ADDR", format!("127.0.0.1:{port}"))
        .env("SHUTDOWN_GRACE_SECS", "5")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("WORKER_QUEUES");
    let mut child = ChildGuard::spawn_logged(&mut cmd, &dir.join("email-worker.log")).unwrap();
    shopfds_testkit::wait_for_port(port, WAIT)
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", child.describe()));

    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let health = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    // Ready once the broker and the database answer.
    let deadline = tokio::time::Instant::now() + WAIT;
    let ready: Value = loop {
        let response = http.get(format!("{base}/readyz")).send().await.unwrap();
        if response.status() == 200 {
            break response.json().await.unwrap();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz: {} {}",
            response.status(),
            response.text().await.unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(ready["checks"]["broker"], "ok");
    assert_eq!(ready["checks"]["database"], "ok");

    let status = child
        .terminate(Duration::from_secs(15))
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(status.success(), "exit {status}: {}", child.describe());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_blocked_order_is_not_confirmed() {
    let app = spawn_email_worker().await;
    shopfds_store::sqlx::query("UPDATE orders SET status = 'blocked' WHERE id = $1")
        .bind(app.order_id)
        .execute(app.store.pool())
        .await
        .unwrap();
    let msg = TaskMessage::new(SEND_ORDER_CONFIRMATION_EMAIL, app.order_kwargs());
    app.publish(&Outgoing::task(&msg, "email")).await;

    let record = app.wait_for_state(msg.id(), TaskState::Success).await;
    assert_eq!(record.result.unwrap()["status"], "not_sent");
    assert!(app.smtp.messages().unwrap().is_empty());
}
