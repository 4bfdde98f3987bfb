//! Chords under the Redis backend, built by a stock client (parts on Rust and stock workers) and
//! by our producer; and a stock client's chord refused at once under PostgreSQL.

use std::sync::Arc;
use std::time::Duration;

use lapin::options::BasicGetOptions;
use redis::AsyncCommands;
use serde_json::{Map, Value, json};
use shopfds_broker::amqp::table_to_json;
use shopfds_broker::{Outgoing, Publisher, ResultBackend};
use shopfds_protocol::canvas::{Apply, apply};
use shopfds_protocol::{Signature, TaskState};
use shopfds_results::{BatchSettings, PostgresBackend};
use shopfds_store::{DatabaseSettings, Store};
use shopfds_testkit::celery::CeleryWorker;
use shopfds_testkit::celery_results::{ResultsClient, chord_args};
use shopfds_testkit::pg::TestDatabase;

use crate::helpers::*;

/// The group's chord keys still in Redis.
async fn chord_keys(group: &str) -> Vec<String> {
    let mut conn = redis().await;
    let mut left = Vec::new();
    for suffix in [".j", ".t", ".s"] {
        let key = format!("celery-taskset-meta-{group}{suffix}");
        let exists: bool = conn.exists(&key).await.unwrap();
        if exists {
            left.push(key);
        }
    }
    left
}

/// Waits until the chord's keys are gone (they are deleted just after the body is published).
async fn keys_are_deleted(group: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = chord_keys(group).await;
        if left.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "chord keys left: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_stock_clients_chord_completes_on_rust_workers() {
    let mut worker = redis_worker().await;
    let parts: Vec<(&str, &str, Value)> = (1..=3).map(|n| (PART, QUEUE, json!({"n": n}))).collect();
    let args = chord_args(&parts, (BODY, QUEUE), WAIT);
    let mut client = ResultsClient::spawn(&worker.amqp_url(), REDIS_URL, &args)
        .await
        .unwrap();
    let sent = client.next(WAIT).await.unwrap();
    // The body ran on the Rust worker with the parts' results in header order…
    assert_eq!(next_body(&mut worker.tasks).await, json!([10, 20, 30]));
    // …and the stock client's AsyncResult of the chord gets the body's result.
    let done = client.next(WAIT).await.unwrap();
    assert_eq!(
        done["state"],
        "SUCCESS",
        "{done}; stderr: {}",
        client.stderr()
    );
    assert_eq!(done["result"], 60, "{done}");
    keys_are_deleted(sent["group"].as_str().unwrap()).await;
}

#[tokio::test]
async fn a_chord_with_parts_on_a_stock_worker_and_on_a_rust_worker_completes() {
    let mut worker = redis_worker().await;
    let celery = CeleryWorker::start_with_env(
        &worker.amqp_url(),
        &["reports"],
        &[("SHOPFDS_RESULT_BACKEND", REDIS_URL)],
    )
    .await
    .unwrap();
    let parts = vec![
        ("register_shipment", "reports", json!({"order_id": "o-1"})),
        (PART, QUEUE, json!({"n": 2})),
        ("register_shipment", "reports", json!({"order_id": "o-3"})),
        (PART, QUEUE, json!({"n": 4})),
    ];
    let args = chord_args(&parts, (BODY, QUEUE), WAIT);
    let mut client = ResultsClient::spawn(&worker.amqp_url(), REDIS_URL, &args)
        .await
        .unwrap();
    let sent = client.next(WAIT).await.unwrap();
    let body = next_body(&mut worker.tasks).await;
    assert_eq!(
        body,
        json!([
            {"order_id": "o-1", "tracking_number": "TRK-o-1"},
            20,
            {"order_id": "o-3", "tracking_number": "TRK-o-3"},
            40
        ]),
        "celery log:\n{}",
        celery.log()
    );
    assert_eq!(celery.executions().unwrap().len(), 2);
    let done = client.next(WAIT).await.unwrap();
    assert_eq!(done["result"], 60, "{done}");
    keys_are_deleted(sent["group"].as_str().unwrap()).await;
}

#[tokio::test]
async fn a_chord_from_our_producer_completes_under_redis() {
    let mut worker = redis_worker().await;
    let header: Vec<Signature> = (1..=3)
        .map(|n| {
            let mut kwargs = Map::new();
            kwargs.insert("n".into(), json!(n));
            Signature::new(PART, kwargs).with_option("queue", QUEUE)
        })
        .collect();
    let body_id = uuid::Uuid::new_v4().to_string();
    let body = Signature::new(BODY, Map::new())
        .with_option("queue", QUEUE)
        .with_option("task_id", body_id.clone());
    let planned = apply(&Signature::chord(header, body), Apply::root()).unwrap();
    assert_eq!(planned.len(), 3);
    let conn = shopfds_broker::amqp::connect(&worker.broker).await.unwrap();
    let publisher = Publisher::new(&conn).await.unwrap();
    for p in &planned {
        publisher
            .publish(&Outgoing::task(&p.message, &p.queue))
            .await
            .unwrap();
    }
    assert_eq!(next_body(&mut worker.tasks).await, json!([10, 20, 30]));
    let record = wait_for_state(worker.backend.as_ref(), &body_id, TaskState::Success).await;
    assert_eq!(record.result, Some(json!(60)));
}

/// `AsyncResult(id).get()` in a stock client, through Redis.
async fn read_result(worker: &TestWorker, id: &str) -> Value {
    let args = vec![
        "read".to_owned(),
        id.to_owned(),
        "--timeout".to_owned(),
        "10".to_owned(),
    ];
    let mut reader = ResultsClient::spawn(&worker.amqp_url(), REDIS_URL, &args)
        .await
        .unwrap();
    reader.next(WAIT).await.unwrap()
}

async fn wait_for_state(
    backend: &dyn ResultBackend,
    id: &str,
    state: TaskState,
) -> shopfds_protocol::result::TaskRecord {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(record) = backend.get(id).await.unwrap()
            && record.state == state
        {
            return record;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{id} never reached {state}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_stock_clients_chord_is_refused_at_once_under_postgres() {
    let db = TestDatabase::create().await.unwrap();
    let store = Store::connect(&DatabaseSettings::with_url(db.url()))
        .await
        .unwrap();
    let mut worker = spawn_worker(|_| async move {
        Arc::new(PostgresBackend::new(store, BatchSettings::default())) as Arc<dyn ResultBackend>
    })
    .await;
    // The stock client needs a backend that does chords to build one at all.
    let args = chord_args(
        &[(PART, QUEUE, json!({"n": 1}))],
        (BODY, QUEUE),
        Duration::from_secs(60),
    );
    let mut client = ResultsClient::spawn(&worker.amqp_url(), REDIS_URL, &args)
        .await
        .unwrap();
    let sent = client.next(WAIT).await.unwrap();
    let part_id = sent["parts"][0].as_str().unwrap().to_owned();

    let conn = worker.vhost.connect().await.unwrap();
    let channel = conn.create_channel().await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    let dead = loop {
        if let Some(msg) = channel
            .basic_get("failed.default".into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            break msg;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the part was not dead-lettered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let headers = dead
        .properties
        .headers()
        .as_ref()
        .map(table_to_json)
        .unwrap_or_default();
    assert_eq!(headers["id"], part_id.as_str());
    let reason = headers
        .get(shopfds_protocol::names::REASON_HEADER)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    assert!(reason.contains("postgres result backend"), "{reason}");
    let record = wait_for_state(worker.backend.as_ref(), &part_id, TaskState::Failure).await;
    assert!(
        record.error.unwrap()["exc_message"]
            .as_str()
            .unwrap()
            .contains("postgres"),
    );
    assert!(
        worker.tasks.bodies.try_recv().is_err(),
        "the body must not run"
    );
}

#[tokio::test]
async fn a_failed_part_fails_a_stock_clients_chord_once_and_the_body_never_runs() {
    let mut worker = redis_worker().await;
    let parts = vec![
        (PART, QUEUE, json!({"n": 1})),
        (FAIL, QUEUE, json!({})),
        (PART, QUEUE, json!({"n": 3})),
    ];
    let args = chord_args(&parts, (BODY, QUEUE), WAIT);
    let mut client = ResultsClient::spawn(&worker.amqp_url(), REDIS_URL, &args)
        .await
        .unwrap();
    let sent = client.next(WAIT).await.unwrap();
    // The stock client's AsyncResult of the chord raises the failed part's error (Celery's
    // get() re-raises a failed parent first)…
    let done = client.next(WAIT).await.unwrap();
    assert_eq!(done["raised"], "PermanentError", "{done}");
    assert_eq!(done["message"], DECLINED, "{done}");
    // …and the body's own result is Celery's ChordError, read by a stock client.
    let body_id = sent["body"].as_str().unwrap();
    let body = wait_for_state(worker.backend.as_ref(), body_id, TaskState::Failure).await;
    let error = body.error.unwrap();
    assert_eq!(error["exc_type"], "ChordError", "{error}");
    assert!(
        error["exc_message"].as_str().unwrap().contains(DECLINED),
        "{error}"
    );
    let read = read_result(&worker, body_id).await;
    assert_eq!(read["raised"], "ChordError", "{read}");
    assert_eq!(read["raised_module"], "celery.exceptions", "{read}");
    // Every part has been counted once all three are final; the body never ran.
    let parts_ids: Vec<String> = sent["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    for id in &parts_ids {
        let record = loop {
            match worker.backend.get(id).await.unwrap() {
                Some(r) if r.state.is_ready() => break r,
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        assert!(matches!(
            record.state,
            TaskState::Success | TaskState::Failure
        ));
    }
    keys_are_deleted(sent["group"].as_str().unwrap()).await;
    assert!(
        worker.tasks.bodies.try_recv().is_err(),
        "the body must not run"
    );
}

#[tokio::test]
async fn a_part_failed_on_a_stock_worker_fails_the_chord_a_rust_worker_completes() {
    let mut worker = redis_worker().await;
    let celery = CeleryWorker::start_with_env(
        &worker.amqp_url(),
        &["reports"],
        &[("SHOPFDS_RESULT_BACKEND", REDIS_URL)],
    )
    .await
    .unwrap();
    // The Rust part holds until the stock part has failed, so the Rust worker completes the
    // chord and finds the stock worker's FAILURE among the results.
    let parts = vec![
        (
            "interop.fail_permanently",
            "reports",
            json!({"reason": "address unknown"}),
        ),
        (PROGRESS, QUEUE, json!({})),
    ];
    let args = chord_args(&parts, (BODY, QUEUE), WAIT);
    let mut client = ResultsClient::spawn(&worker.amqp_url(), REDIS_URL, &args)
        .await
        .unwrap();
    let sent = client.next(WAIT).await.unwrap();
    let failed_id = sent["parts"][0].as_str().unwrap();
    wait_for_state(worker.backend.as_ref(), failed_id, TaskState::Failure).await;
    worker.tasks.release.add_permits(1);

    // The client's get() re-raises the failed part's error at once (Celery follows parents).
    let done = client.next(WAIT).await.unwrap();
    assert_eq!(done["raised"], "ValueError", "{done}");
    let body = wait_for_state(
        worker.backend.as_ref(),
        sent["body"].as_str().unwrap(),
        TaskState::Failure,
    )
    .await;
    let error = body.error.unwrap();
    assert_eq!(error["exc_type"], "ChordError", "{error}");
    assert!(
        error["exc_message"]
            .as_str()
            .unwrap()
            .contains("address unknown"),
        "{error}; celery log:\n{}",
        celery.log()
    );
    // Read on its own, the body's result raises Celery's ChordError in a stock client.
    let read = read_result(&worker, sent["body"].as_str().unwrap()).await;
    assert_eq!(read["state"], "FAILURE", "{read}");
    assert_eq!(read["raised"], "ChordError", "{read}");
    assert_eq!(read["raised_module"], "celery.exceptions", "{read}");
    keys_are_deleted(sent["group"].as_str().unwrap()).await;
    assert!(
        worker.tasks.bodies.try_recv().is_err(),
        "the body must not run"
    );
}
