//! The confirmation mail through the worker's own outages (issue 9): its database unreachable,
//! its database connection lost between the SMTP server's `250` and the once-only record, the
//! shutdown grace period ending while SMTP holds the mail, and a database that stops answering
//! without closing its connections. Nothing is lost, nothing is mailed twice, the worker stops.

use std::collections::HashSet;
use std::time::Duration;

use lapin::options::BasicGetOptions;
use serde_json::{Map, json};
use shopfds_broker::Outgoing;
use shopfds_protocol::tasks::SEND_ORDER_CONFIRMATION_EMAIL;
use shopfds_protocol::{TaskMessage, TaskState};
use tokio::time::Instant;
use uuid::Uuid;

use crate::helpers::{Options, TestApp, WAIT, spawn_email_worker_with};

fn order_task(order_id: Uuid) -> TaskMessage {
    let mut kwargs = Map::new();
    kwargs.insert("order_id".to_owned(), json!(order_id.to_string()));
    TaskMessage::new(SEND_ORDER_CONFIRMATION_EMAIL, kwargs)
}

/// Polls until the worker reports its database down (`shopfds_worker_dependency_down`).
async fn wait_until_paused() {
    let gauge =
        shopfds_telemetry::metrics::worker_dependency_down().with_label_values(&["database"]);
    let deadline = Instant::now() + WAIT;
    while gauge.get() != 1 {
        assert!(
            Instant::now() < deadline,
            "the worker never stopped for its database"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How many messages wait in `queue` (taken off it).
async fn drain_count(app: &TestApp, queue: &str) -> usize {
    let channel = app.conn.create_channel().await.unwrap();
    let mut n = 0;
    while channel
        .basic_get(queue.into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .is_some()
    {
        n += 1;
    }
    n
}

#[tokio::test]
async fn a_database_outage_spends_no_retries_and_every_order_is_mailed_once() {
    let app = spawn_email_worker_with(Options {
        database_proxy: true,
        customer_email: "outage.minsu@example.com".to_owned(),
        ..Options::default()
    })
    .await;
    let mut orders = vec![app.order_id];
    for _ in 0..11 {
        orders.push(app.add_order().await);
    }
    app.database_proxy().cut().await;
    let tasks: Vec<TaskMessage> = orders.iter().map(|id| order_task(*id)).collect();
    for task in &tasks {
        app.publish(&Outgoing::task(task, "email")).await;
    }
    // The first tasks to meet the outage stop the worker (the others wait in the queue); then
    // the database comes back.
    wait_until_paused().await;
    app.database_proxy().resume().await.unwrap();

    for task in &tasks {
        let record = app.wait_for_state(task.id(), TaskState::Success).await;
        assert_eq!(
            record.retries,
            0,
            "the outage spent a retry of {}: {record:?}",
            task.id()
        );
    }
    let mails = app.smtp.wait_for(orders.len(), WAIT).await.unwrap();
    let subjects: HashSet<String> = mails.iter().map(|m| m.subject.clone()).collect();
    assert_eq!(mails.len(), orders.len(), "one mail per order");
    assert_eq!(subjects.len(), orders.len(), "no order mailed twice");
    assert_eq!(
        drain_count(&app, "failed.email").await,
        0,
        "nothing dead-lettered"
    );
}

#[tokio::test]
async fn a_database_connection_lost_after_smtp_accepted_the_mail_does_not_send_it_again() {
    let app = spawn_email_worker_with(Options {
        database_proxy: true,
        customer_email: "hold.minsu@example.com".to_owned(),
        ..Options::default()
    })
    .await;
    let task = order_task(app.order_id);
    app.publish(&Outgoing::task(&task, "email")).await;
    // The server has the mail and holds its `250`; the once-only record's connection dies.
    app.smtp.wait_for(1, WAIT).await.unwrap();
    app.database_proxy().cut().await;
    app.smtp.release_held().unwrap();
    app.database_proxy().resume().await.unwrap();

    let record = app.wait_for_state(task.id(), TaskState::Success).await;
    assert_eq!(record.retries, 0, "{record:?}");
    assert_eq!(record.result.unwrap()["status"], "sent");
    let once = app
        .store
        .once()
        .begin(&format!("order-confirmation:{}", app.order_id))
        .await
        .unwrap();
    assert_eq!(
        once.already_done().map(|r| r["status"].clone()),
        Some(json!("sent")),
        "the once-only record landed"
    );
    assert_eq!(app.smtp.messages().unwrap().len(), 1, "mailed once");
}

#[tokio::test]
async fn the_end_of_the_grace_period_does_not_cut_between_the_mail_and_its_record() {
    let mut app = spawn_email_worker_with(Options {
        customer_email: "hold.jiwoo@example.com".to_owned(),
        shutdown_grace: Duration::ZERO,
        ..Options::default()
    })
    .await;
    let task = order_task(app.order_id);
    app.publish(&Outgoing::task(&task, "email")).await;
    app.smtp.wait_for(1, WAIT).await.unwrap();
    // SIGTERM with no grace at all while the server holds the mail: the grace period is over
    // before the `250` arrives (the pause is the scenario, not a wait for an event).
    app.shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(500)).await;
    app.smtp.release_held().unwrap();
    app.stop().await.unwrap();

    let record = app.wait_for_state(task.id(), TaskState::Success).await;
    assert_eq!(record.result.unwrap()["status"], "sent");
    assert_eq!(
        drain_count(&app, "email").await,
        0,
        "the message was acked, not requeued to be mailed again"
    );
    assert_eq!(app.smtp.messages().unwrap().len(), 1);
}

#[tokio::test]
async fn a_database_that_stops_answering_does_not_hold_up_the_stop() {
    let mut app = spawn_email_worker_with(Options {
        database_proxy: true,
        customer_email: "hold.frozen@example.com".to_owned(),
        shutdown_grace: Duration::ZERO,
        effect_grace: Duration::from_secs(2),
        ..Options::default()
    })
    .await;
    // The task holds its once-only transaction while the server holds the mail; then the
    // network path to the database dies silently, and SIGTERM comes.
    let task = order_task(app.order_id);
    app.publish(&Outgoing::task(&task, "email")).await;
    app.smtp.wait_for(1, WAIT).await.unwrap();
    app.database_proxy().freeze();
    // `stop` fails the test unless the worker is done within WAIT.
    app.stop().await.unwrap();
    app.database_proxy().cut().await;
}
