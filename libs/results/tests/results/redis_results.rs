//! Redis in Celery's format: what a stock client's `AsyncResult` observes of Rust tasks.

use std::time::Duration;

use chrono::Utc;
use redis::AsyncCommands;
use serde_json::{Value, json};
use shopfds_broker::StateChange;
use shopfds_protocol::TaskState;
use shopfds_protocol::result::TaskStateUpdate;
use shopfds_testkit::celery_results::{self, ResultsClient, task_args};

use crate::helpers::*;

#[tokio::test]
async fn a_stock_client_gets_the_result_of_a_rust_task() {
    let worker = redis_worker().await;
    let got = celery_results::send_and_get(
        &worker.amqp_url(),
        REDIS_URL,
        ADD,
        &json!({"x": 2, "y": 3}),
        Some(QUEUE),
        WAIT,
    )
    .await
    .unwrap();
    assert_eq!(got["state"], "SUCCESS", "{got}");
    assert_eq!(got["result"], 5, "{got}");

    // GET /v1/tasks/{id} reads the same key.
    let id = got["id"].as_str().unwrap();
    let record = worker.backend.get(id).await.unwrap().expect("stored");
    assert_eq!(record.state, TaskState::Success);
    assert_eq!(record.result, Some(json!(5)));
    assert_eq!((record.name.as_str(), record.queue.as_str()), (ADD, QUEUE));
    assert!(record.expires_at.is_some_and(|at| at > Utc::now()));
}

#[tokio::test]
async fn a_permanent_failure_raises_in_the_stock_client_with_its_message() {
    let worker = redis_worker().await;
    let got = celery_results::send_and_get(
        &worker.amqp_url(),
        REDIS_URL,
        FAIL,
        &json!({}),
        Some(QUEUE),
        WAIT,
    )
    .await
    .unwrap();
    assert_eq!(got["state"], "FAILURE", "{got}");
    assert_eq!(got["raised"], "PermanentError", "{got}");
    assert_eq!(got["message"], DECLINED, "{got}");
}

#[tokio::test]
async fn an_unknown_task_raises_not_registered_in_the_stock_client() {
    let worker = redis_worker().await;
    let got = celery_results::send_and_get(
        &worker.amqp_url(),
        REDIS_URL,
        "results.no_such_task",
        &json!({}),
        Some(QUEUE),
        WAIT,
    )
    .await
    .unwrap();
    // Dead-lettered as REJECTED here; FAILURE to Celery, so get() does not wait forever.
    assert_eq!(got["state"], "FAILURE", "{got}");
    assert_eq!(got["raised"], "NotRegistered", "{got}");
    assert_eq!(got["raised_module"], "celery.exceptions", "{got}");
    let id = got["id"].as_str().unwrap();
    let record = worker.backend.get(id).await.unwrap().expect("stored");
    assert_eq!(record.state, TaskState::Rejected);
}

#[tokio::test]
async fn progress_meta_is_read_by_info_while_the_task_runs() {
    let worker = redis_worker().await;
    progress_is_seen(&worker, REDIS_URL).await;
}

/// The client sees PROGRESS with its meta while the task is held, then the result.
pub async fn progress_is_seen(worker: &TestWorker, backend: &str) {
    let args = task_args("progress", PROGRESS, &json!({}), Some(QUEUE), WAIT);
    let mut client = ResultsClient::spawn(&worker.amqp_url(), backend, &args)
        .await
        .unwrap();
    let sent = client.next(WAIT).await.unwrap();
    assert!(sent["id"].is_string(), "{sent}");
    let seen = client.next(WAIT).await.unwrap();
    assert_eq!(seen["state"], "PROGRESS", "{seen}");
    assert_eq!(
        seen["info"],
        json!({"current": 1, "total": 2, "message": "half way"}),
        "{seen}"
    );
    // Only now may the task finish.
    worker.tasks.release.add_permits(1);
    let done = client.next(WAIT).await.unwrap();
    assert_eq!(done["state"], "SUCCESS", "{done}");
    assert_eq!(done["result"], "done", "{done}");
}

#[tokio::test]
async fn a_late_started_does_not_overwrite_success() {
    let backend = redis_backend().await;
    let id = uuid::Uuid::new_v4().to_string();
    let update = |state, result| TaskStateUpdate {
        task_id: id.clone(),
        name: ADD.to_owned(),
        queue: QUEUE.to_owned(),
        state,
        retries: 0,
        progress: None,
        result,
        error: None,
        expires_at: None,
    };
    backend
        .record(StateChange::new(update(
            TaskState::Success,
            Some(json!(42)),
        )))
        .await
        .unwrap();
    // A redelivered copy starts late and reports progress.
    backend
        .record(StateChange::new(update(TaskState::Started, None)))
        .await
        .unwrap();
    let mut progress = update(TaskState::Progress, None);
    progress.progress = Some(json!({"current": 0, "total": 1, "message": "again"}));
    backend.record(StateChange::new(progress)).await.unwrap();

    let stored: String = redis()
        .await
        .get(format!("celery-task-meta-{id}"))
        .await
        .unwrap();
    let stored: Value = serde_json::from_str(&stored).unwrap();
    assert_eq!(stored["status"], "SUCCESS", "{stored}");
    assert_eq!(stored["result"], 42, "{stored}");
    let record = backend.get(&id).await.unwrap().unwrap();
    assert_eq!(record.state, TaskState::Success);

    // And what a stock client reads.
    let mut client = ResultsClient::spawn(
        "amqp://guest:guest@127.0.0.1:5672//",
        REDIS_URL,
        &[
            "read".to_owned(),
            id.clone(),
            "--timeout".to_owned(),
            "5".to_owned(),
        ],
    )
    .await
    .unwrap();
    let read = client.next(WAIT).await.unwrap();
    assert_eq!(read["result"], 42, "{read}");
    let _ = client.wait(Duration::from_secs(10)).await;
}

/// `cargo test -p shopfds-results --release --test results -- --ignored --nocapture`: how many
/// final states per second one backend value writes to Redis with many tasks finishing at once.
#[tokio::test]
#[ignore = "a measurement, not a check"]
async fn redis_record_throughput() {
    use futures::StreamExt;
    let backend = redis_backend().await;
    let n = 20_000;
    let started = std::time::Instant::now();
    futures::stream::iter(0..n)
        .map(|i| {
            let backend = backend.clone();
            async move {
                let mut change = StateChange::new(TaskStateUpdate {
                    task_id: format!("bench-{}-{i}", std::process::id()),
                    name: ADD.to_owned(),
                    queue: QUEUE.to_owned(),
                    state: TaskState::Success,
                    retries: 0,
                    progress: None,
                    result: Some(json!({"order_id": i, "sent": true})),
                    error: None,
                    expires_at: Some(Utc::now() + chrono::Duration::seconds(60)),
                });
                let mut kwargs = serde_json::Map::new();
                kwargs.insert("order_id".to_owned(), json!(i));
                change.message = Some(std::sync::Arc::new(shopfds_protocol::TaskMessage::new(
                    ADD, kwargs,
                )));
                backend.record(change).await.unwrap();
            }
        })
        .buffer_unordered(256)
        .collect::<Vec<()>>()
        .await;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "redis: {n} SUCCESS records in {secs:.2} s = {:.0}/s",
        f64::from(n) / secs
    );
}
