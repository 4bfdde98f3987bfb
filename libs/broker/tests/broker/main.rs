//! The worker runtime and publisher against a real RabbitMQ and PostgreSQL: hostile messages,
//! retries through the broker, acks late, ETA, chains, topology compatibility with a stock
//! Celery app, and publisher confirms.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod canvas;
mod cluster;
mod faults;
mod helpers;
mod messages;
mod metrics;
mod monitor;
mod quorum;
mod reconnecting_publisher;
mod runtime;
mod sessions;
mod tls;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use helpers::{QUEUE, WAIT, spawn_worker, start_worker, take_messages, wait_for_depth};
use serde_json::{Map, Value, json};
use shopfds_broker::{
    Outgoing, PublishError, QueueType, Registry, RetryPolicy, TaskError, TaskOptions, topology,
};
use shopfds_protocol::names::ORIGINAL_QUEUE_HEADER;
use shopfds_protocol::payloads::OrderTask;
use shopfds_protocol::{Signature, TaskMessage, TaskState};
use shopfds_testkit::celery::{CeleryWorker, SendTask, send_task_with};
use shopfds_testkit::rabbit::TestVhost;

/// What a handler saw, in the order attempts started.
#[derive(Debug, Clone)]
struct Attempt {
    task: String,
    id: String,
    retries: u32,
    parent_id: Option<String>,
    root_id: Option<String>,
    eta: Option<DateTime<Utc>>,
    at: DateTime<Utc>,
    mono: std::time::Instant,
}

type Log = Arc<Mutex<Vec<Attempt>>>;

fn log_attempt(log: &Log, ctx: &shopfds_broker::TaskContext) {
    log.lock().unwrap().push(Attempt {
        task: ctx.message.task().to_owned(),
        id: ctx.id().to_owned(),
        retries: ctx.message.headers.retries,
        parent_id: ctx.message.headers.parent_id.clone(),
        root_id: ctx.message.headers.root_id.clone(),
        eta: ctx.message.headers.eta,
        at: Utc::now(),
        mono: std::time::Instant::now(),
    });
}

fn attempts(log: &Log) -> Vec<Attempt> {
    log.lock().unwrap().clone()
}

/// Registers `name`: logs the attempt, then returns what `outcome` says for it (0-based).
fn register_logged(
    registry: &mut Registry,
    name: &str,
    options: TaskOptions,
    log: &Log,
    outcome: impl Fn(u32) -> Result<Value, TaskError> + Send + Sync + 'static,
) {
    let log = log.clone();
    let outcome = Arc::new(outcome);
    registry.register(name, options, move |ctx| {
        log_attempt(&log, &ctx);
        let result = outcome(ctx.message.headers.retries);
        async move { result }
    });
}

fn kwargs(value: Value) -> Map<String, Value> {
    value.as_object().cloned().unwrap()
}

fn fixed_retry(max_retries: u32) -> TaskOptions {
    TaskOptions {
        max_retries,
        retry: RetryPolicy::Fixed(Duration::from_secs(1)),
        ..TaskOptions::default()
    }
}

/// Protocol v2 headers of a well-formed message, plus `x-test-case` to tell dead letters apart.
fn v2_headers(task: &str, case: &str) -> Map<String, Value> {
    let id = uuid::Uuid::new_v4().to_string();
    kwargs(json!({
        "lang": "py", "task": task, "id": id, "root_id": id, "parent_id": null, "group": null,
        "retries": 0, "eta": null, "expires": null, "timelimit": [null, null],
        "argsrepr": "()", "kwargsrepr": "{}", "origin": "gen1@test", "x-test-case": case,
    }))
}

#[tokio::test]
async fn hostile_messages_are_dead_lettered_with_a_reason_and_the_worker_keeps_serving() {
    let log = Log::default();
    let mut registry = Registry::new();
    register_logged(&mut registry, "probe", TaskOptions::default(), &log, |_| {
        Ok(json!("ok"))
    });
    registry.register("typed_probe", TaskOptions::default(), |ctx| async move {
        let OrderTask { order_id } = ctx.bind()?;
        Ok(json!({ "order_id": order_id }))
    });
    let tw = spawn_worker(registry).await;

    let valid_body =
        br#"[[], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]"#;
    tw.publish_raw(
        "application/json",
        &v2_headers("probe", "malformed_json"),
        br#"[[], {"order_id": "#,
    )
    .await;
    let unknown = v2_headers("no_such_task", "unknown_task");
    tw.publish_raw("application/json", &unknown, valid_body)
        .await;
    // A pickle that would call a function when loaded; it must never be loaded.
    let pickle: &[u8] = b"\x80\x04\x95\x1d\x00\x00\x00\x00\x00\x00\x00\x8c\x08builtins\x94\x8c\x05print\x94\x93\x94\x8c\x05pwned\x94\x85\x94R\x94.";
    let pickled_headers = v2_headers("probe", "pickle");
    tw.publish_raw("application/x-python-serialize", &pickled_headers, pickle)
        .await;
    let mut no_task = v2_headers("probe", "no_task_header");
    no_task.remove("task");
    tw.publish_raw("application/json", &no_task, valid_body)
        .await;
    let mut no_id = v2_headers("probe", "no_id_header");
    no_id.remove("id");
    tw.publish_raw("application/json", &no_id, valid_body).await;
    tw.publish_raw(
        "application/json",
        &v2_headers("probe", "body_not_triple"),
        br#"{"order_id": "b1d3"}"#,
    )
    .await;
    let typed = TaskMessage::new("typed_probe", kwargs(json!({"order_id": 42})));
    let mut typed_out = Outgoing::task(&typed, QUEUE);
    typed_out
        .headers
        .insert("x-test-case".to_owned(), json!("bad_argument_type"));
    tw.publisher.publish(&typed_out).await.unwrap();

    let dead = tw.dead_letters(7).await;
    let reason_of = |case: &str| {
        let letter = dead
            .iter()
            .find(|d| d.header_str("x-test-case") == case)
            .unwrap_or_else(|| panic!("no dead letter for {case}: {dead:#?}"));
        assert_eq!(letter.header_str(ORIGINAL_QUEUE_HEADER), QUEUE, "{case}");
        letter.reason().to_owned()
    };
    let expect = |case: &str, needles: &[&str]| {
        let reason = reason_of(case);
        for needle in needles {
            assert!(
                reason.contains(needle),
                "{case}: reason {reason:?} should mention {needle:?}"
            );
        }
    };
    expect("malformed_json", &["not valid JSON"]);
    expect("unknown_task", &["unknown task", "no_such_task"]);
    expect(
        "pickle",
        &[
            "application/x-python-serialize",
            "refused",
            "only application/json",
        ],
    );
    expect("no_task_header", &["no `task` header"]);
    expect("no_id_header", &["`id`"]);
    expect("body_not_triple", &["[args, kwargs, embed]"]);
    // The reason names the argument, the bad value and the expected type.
    expect(
        "bad_argument_type",
        &["argument `order_id` is invalid", "42", "UUID"],
    );

    // The pickle is dead-lettered byte for byte, with its content type: nothing was decoded.
    let pickled = dead
        .iter()
        .find(|d| d.header_str("x-test-case") == "pickle")
        .unwrap();
    assert_eq!(pickled.body, pickle);
    assert_eq!(
        pickled.content_type.as_deref(),
        Some("application/x-python-serialize")
    );
    let typed_record = tw.wait_for_state(typed.id(), TaskState::Failure).await;
    assert_eq!(typed_record.error.unwrap()["exc_type"], "PermanentError");
    // A message refused before it ran leaves REJECTED under its id, not an unknown task: a
    // client polling its result learns it will never run, and why.
    let id_of = |headers: &Map<String, Value>| headers["id"].as_str().unwrap().to_owned();
    let unknown_record = tw
        .wait_for_state(&id_of(&unknown), TaskState::Rejected)
        .await;
    assert_eq!(unknown_record.name, "no_such_task");
    assert_eq!(unknown_record.error.unwrap()["exc_type"], "NotRegistered");
    let pickle_record = tw
        .wait_for_state(&id_of(&pickled_headers), TaskState::Rejected)
        .await;
    assert!(
        pickle_record.error.unwrap()["exc_message"]
            .as_str()
            .unwrap()
            .contains("application/x-python-serialize")
    );

    let valid = tw.send(TaskMessage::new("probe", Map::new())).await;
    let record = tw.wait_for_state(valid.id(), TaskState::Success).await;
    assert_eq!(record.result, Some(json!("ok")));
    // Only the valid message reached the handler of `probe`.
    let runs = attempts(&log);
    assert_eq!(runs.len(), 1, "{runs:#?}");
    assert_eq!(runs[0].id, valid.id());
}

/// Records each distinct (state, retries) the result store shows for `task_id` until `last`.
async fn watch_states(
    store: &shopfds_store::Store,
    task_id: &str,
    last: TaskState,
) -> Vec<(TaskState, i32)> {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut seen: Vec<(TaskState, i32)> = Vec::new();
    loop {
        if let Some(r) = store.results().get(task_id).await.unwrap() {
            if seen.last() != Some(&(r.state, r.retries)) {
                seen.push((r.state, r.retries));
            }
            if r.state == last {
                return seen;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{task_id} did not reach {last}: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn transient_errors_retry_through_the_broker_with_the_same_id_until_success() {
    let log = Log::default();
    let mut registry = Registry::new();
    register_logged(&mut registry, "flaky", fixed_retry(3), &log, |retries| {
        if retries < 2 {
            Err(TaskError::transient("partner API timed out"))
        } else {
            Ok(json!({"attempt": retries + 1}))
        }
    });
    let tw = spawn_worker(registry).await;
    let msg = tw
        .send(TaskMessage::new(
            "flaky",
            kwargs(json!({"order_id": "o-1"})),
        ))
        .await;

    let seen = watch_states(&tw.store, msg.id(), TaskState::Success).await;
    let outcomes: Vec<(TaskState, i32)> = seen
        .into_iter()
        .filter(|(s, _)| matches!(s, TaskState::Retry | TaskState::Success))
        .collect();
    assert_eq!(
        outcomes,
        vec![
            (TaskState::Retry, 0),
            (TaskState::Retry, 1),
            (TaskState::Success, 2)
        ]
    );
    let record = tw.store.results().get(msg.id()).await.unwrap().unwrap();
    assert_eq!(record.result, Some(json!({"attempt": 3})));

    let runs = attempts(&log);
    assert_eq!(runs.len(), 3, "{runs:#?}");
    assert!(runs.iter().all(|a| a.id == msg.id()), "{runs:#?}");
    assert_eq!(
        runs.iter().map(|a| a.retries).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    for pair in runs.windows(2) {
        let gap = pair[1].mono - pair[0].mono;
        assert!(
            gap >= Duration::from_millis(900),
            "retry ran {gap:?} after the previous attempt; the policy says 1 s"
        );
    }
}

/// A retry of 1 s leaves RabbitMQ's `x-death` record of `celery_delayed_0` on the message; a
/// later retry of 3 s passes `celery_delayed_1` and then `celery_delayed_0` again. Carried over,
/// that record makes RabbitMQ see a dead-letter cycle and drop the message silently, so the
/// runtime must not forward it.
#[tokio::test]
async fn retries_whose_delays_revisit_a_delay_queue_are_not_dropped_as_a_cycle() {
    let log = Log::default();
    let mut registry = Registry::new();
    register_logged(&mut registry, "revisits", fixed_retry(3), &log, |retries| {
        let countdown = match retries {
            0 => Duration::from_secs(1),
            1 => Duration::from_secs(3),
            _ => return Ok(json!("done")),
        };
        Err(TaskError::Transient {
            message: "partner busy".into(),
            countdown: Some(countdown),
        })
    });
    let tw = spawn_worker(registry).await;
    let msg = tw.send(TaskMessage::new("revisits", Map::new())).await;
    tw.wait_for_state(msg.id(), TaskState::Success).await;
    let runs = attempts(&log);
    assert_eq!(
        runs.iter().map(|a| a.retries).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
}

#[tokio::test]
async fn a_sub_second_retry_countdown_is_rounded_up_to_one_second_not_two() {
    let log = Log::default();
    let mut registry = Registry::new();
    let options = TaskOptions {
        max_retries: 1,
        retry: RetryPolicy::Fixed(Duration::from_millis(500)),
        ..TaskOptions::default()
    };
    register_logged(&mut registry, "half_second", options, &log, |retries| {
        if retries == 0 {
            Err(TaskError::transient("busy"))
        } else {
            Ok(Value::Null)
        }
    });
    let tw = spawn_worker(registry).await;
    let msg = tw.send(TaskMessage::new("half_second", Map::new())).await;
    tw.wait_for_state(msg.id(), TaskState::Success).await;

    let runs = attempts(&log);
    assert_eq!(runs.len(), 2, "{runs:#?}");
    // The retry's `eta` header is when the runtime scheduled it: the policy's 500 ms rounded up
    // to the delay tree's whole seconds is 1 s after the failed attempt (which returned at once).
    let eta = runs[1].eta.expect("a retry carries its eta");
    let scheduled = eta - runs[0].at;
    assert!(
        scheduled >= chrono::Duration::milliseconds(500)
            && scheduled < chrono::Duration::milliseconds(1500),
        "retry scheduled {scheduled} after the failure; expected 1 s"
    );
}

#[tokio::test]
async fn exhausted_retries_end_in_failure_and_the_dead_letter_queue() {
    let log = Log::default();
    let mut registry = Registry::new();
    register_logged(&mut registry, "always_flaky", fixed_retry(2), &log, |_| {
        Err(TaskError::transient("SMTP 451 try later"))
    });
    let tw = spawn_worker(registry).await;
    let msg = tw.send(TaskMessage::new("always_flaky", Map::new())).await;

    let record = tw.wait_for_state(msg.id(), TaskState::Failure).await;
    let error = record.error.unwrap();
    let text = error["exc_message"].as_str().unwrap();
    assert!(text.contains("max retries (2) exceeded"), "{text}");
    assert!(text.contains("SMTP 451 try later"), "{text}");
    assert_eq!(record.retries, 2);

    let dead = tw.dead_letters(1).await;
    assert!(dead[0].reason().contains("max retries"), "{:?}", dead[0]);
    assert_eq!(dead[0].header_str("id"), msg.id());
    assert_eq!(dead[0].headers["retries"], json!(2));
    assert_eq!(attempts(&log).len(), 3);
}

#[tokio::test]
async fn a_permanent_error_goes_straight_to_the_dead_letter_queue() {
    let log = Log::default();
    let mut registry = Registry::new();
    // The default policy would retry a transient error in 60 s; a permanent one never.
    register_logged(
        &mut registry,
        "doomed",
        TaskOptions::default(),
        &log,
        |_| Err(TaskError::permanent("order o-404 not found")),
    );
    let tw = spawn_worker(registry).await;
    let msg = tw.send(TaskMessage::new("doomed", Map::new())).await;

    let record = tw.wait_for_state(msg.id(), TaskState::Failure).await;
    assert_eq!(record.retries, 0);
    let error = record.error.unwrap();
    assert_eq!(error["exc_type"], "PermanentError");
    assert_eq!(error["exc_message"], "order o-404 not found");
    let dead = tw.dead_letters(1).await;
    assert_eq!(dead[0].reason(), "order o-404 not found");
    assert_eq!(dead[0].header_str("id"), msg.id());
    assert_eq!(attempts(&log).len(), 1);
}

#[tokio::test]
async fn a_message_whose_worker_stopped_mid_task_is_redelivered_to_the_next_worker() {
    let (started_tx, mut started_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut stuck = Registry::new();
    stuck.register("slow", TaskOptions::default(), move |_ctx| {
        let _ = started_tx.send(());
        async move {
            // Never finishes: the worker must give up after its grace period without acking.
            std::future::pending::<()>().await;
            Ok(Value::Null)
        }
    });
    let tw = spawn_worker(stuck).await;
    let msg = tw.send(TaskMessage::new("slow", Map::new())).await;
    tokio::time::timeout(WAIT, started_rx.recv())
        .await
        .expect("the handler did not start")
        .unwrap();
    assert_eq!(
        tw.vhost.queue_depth(QUEUE).unwrap(),
        0,
        "message is in flight"
    );

    let mut tw = tw;
    tw.worker.stop().await.unwrap();
    wait_for_depth(&tw.vhost, QUEUE, |d| d >= 1).await;

    let mut healthy = Registry::new();
    healthy.register("slow", TaskOptions::default(), |ctx| async move {
        Ok(json!({ "redelivered": ctx.redelivered }))
    });
    let _second = start_worker(&tw.broker, &tw.store, healthy, helpers::worker_settings());
    let record = tw.wait_for_state(msg.id(), TaskState::Success).await;
    assert_eq!(record.result, Some(json!({"redelivered": true})));
}

#[tokio::test]
async fn a_task_with_an_eta_does_not_run_before_it() {
    let log = Log::default();
    let mut registry = Registry::new();
    register_logged(
        &mut registry,
        "at_eta",
        TaskOptions::default(),
        &log,
        |_| Ok(Value::Null),
    );
    let tw = spawn_worker(registry).await;

    let mut msg = TaskMessage::new("at_eta", Map::new());
    let eta = Utc::now() + chrono::Duration::seconds(2);
    msg.headers.eta = Some(eta);
    tw.publisher
        .publish(&Outgoing::task(&msg, QUEUE))
        .await
        .unwrap();
    tw.wait_for_state(msg.id(), TaskState::Success).await;

    let runs = attempts(&log);
    assert_eq!(runs.len(), 1);
    // The broker's delay tree works in whole seconds: a task may start up to 1 s early.
    assert!(
        runs[0].at >= eta - chrono::Duration::seconds(1),
        "ran at {}, eta {eta}",
        runs[0].at
    );
}

#[tokio::test]
async fn a_protocol_v1_message_from_the_stock_client_runs_and_retries_with_its_count() {
    let log = Log::default();
    let mut registry = Registry::new();
    register_logged(&mut registry, "flaky_v1", fixed_retry(3), &log, |retries| {
        if retries < 2 {
            Err(TaskError::transient("partner API timed out"))
        } else {
            Ok(json!({"attempt": retries + 1}))
        }
    });
    let tw = spawn_worker(registry).await;
    let task = SendTask {
        queue: Some(QUEUE.to_owned()),
        protocol: Some(1),
        ..SendTask::new("flaky_v1", json!({"order_id": "o-1"})).unwrap()
    };
    let id = send_task_with(&tw.vhost.amqp_url(), &task).await.unwrap();
    let record = tw.wait_for_state(&id, TaskState::Success).await;
    assert_eq!(record.result, Some(json!({"attempt": 3})));
    // Each retry is read with its own count: the copy is sent as the v2 message it was read as,
    // so the v1 body's `retries` cannot bring the count back to 0.
    let runs = attempts(&log);
    assert_eq!(
        runs.iter()
            .map(|a| (a.id.as_str(), a.retries))
            .collect::<Vec<_>>(),
        vec![(id.as_str(), 0), (id.as_str(), 1), (id.as_str(), 2)]
    );
    assert_eq!(tw.vhost.queue_depth("failed.default").unwrap(), 0);
}

#[tokio::test]
async fn a_countdown_from_the_stock_celery_client_is_honoured() {
    let log = Log::default();
    let mut registry = Registry::new();
    register_logged(
        &mut registry,
        "at_eta",
        TaskOptions::default(),
        &log,
        |_| Ok(json!("done")),
    );
    let tw = spawn_worker(registry).await;

    let before = Utc::now();
    let task = SendTask {
        queue: Some(QUEUE.to_owned()),
        countdown: Some(3.0),
        ..SendTask::new("at_eta", json!({"report": "daily"})).unwrap()
    };
    let id = send_task_with(&tw.vhost.amqp_url(), &task).await.unwrap();
    let record = tw.wait_for_state(&id, TaskState::Success).await;
    assert_eq!(record.result, Some(json!("done")));

    let runs = attempts(&log);
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].id, id);
    assert!(
        runs[0].at >= before + chrono::Duration::seconds(2),
        "countdown 3 s from {before}, but ran at {}",
        runs[0].at
    );
}

#[tokio::test]
async fn a_chain_of_immutable_signatures_runs_in_order_with_linked_ids() {
    let log = Log::default();
    let mut registry = Registry::new();
    for name in ["chain_a", "chain_b", "chain_c"] {
        register_logged(
            &mut registry,
            name,
            TaskOptions::default(),
            &log,
            move |_| Ok(json!(name)),
        );
    }
    let tw = spawn_worker(registry).await;

    let b_id = uuid::Uuid::new_v4().to_string();
    let c_id = uuid::Uuid::new_v4().to_string();
    let order = kwargs(json!({"order_id": "o-7"}));
    let mut msg = TaskMessage::new("chain_a", order.clone());
    // Reversed, as Celery sends it: the next task is the last element.
    msg.embed.chain = Some(vec![
        Signature::new("chain_c", order.clone())
            .immutable()
            .with_option("task_id", c_id.clone()),
        Signature::new("chain_b", order)
            .immutable()
            .with_option("task_id", b_id.clone()),
    ]);
    tw.publisher
        .publish(&Outgoing::task(&msg, QUEUE))
        .await
        .unwrap();
    tw.wait_for_state(&c_id, TaskState::Success).await;

    let runs = attempts(&log);
    let names: Vec<&str> = runs.iter().map(|a| a.task.as_str()).collect();
    assert_eq!(names, vec!["chain_a", "chain_b", "chain_c"]);
    let a_id = msg.id();
    assert_eq!(runs[0].id, a_id);
    assert_eq!(runs[1].id, b_id);
    assert_eq!(runs[2].id, c_id);
    assert_eq!(runs[0].parent_id, None);
    assert_eq!(runs[1].parent_id.as_deref(), Some(a_id));
    assert_eq!(runs[2].parent_id.as_deref(), Some(b_id.as_str()));
    assert!(
        runs.iter().all(|a| a.root_id.as_deref() == Some(a_id)),
        "{runs:#?}"
    );
    for id in [a_id, b_id.as_str()] {
        tw.wait_for_state(id, TaskState::Success).await;
    }
}

#[tokio::test]
async fn the_rust_topology_matches_what_a_stock_celery_worker_declared() {
    shopfds_testkit::init_tracing();
    let vhost = tokio::task::spawn_blocking(TestVhost::create)
        .await
        .unwrap()
        .unwrap();
    let celery = CeleryWorker::start(&vhost.amqp_url(), &["email"])
        .await
        .unwrap();
    let conn = vhost.connect().await.unwrap();
    let channel = conn.create_channel().await.unwrap();
    topology::declare(&channel, QueueType::Classic)
        .await
        .expect("declaring over the Celery app's topology must not fail");
    assert!(channel.status().connected());
    drop(celery);
}

#[tokio::test]
async fn a_stock_celery_worker_starts_on_the_topology_rust_declared_and_consumes_from_it() {
    shopfds_testkit::init_tracing();
    let vhost = tokio::task::spawn_blocking(TestVhost::create)
        .await
        .unwrap()
        .unwrap();
    let conn = vhost.connect().await.unwrap();
    let channel = conn.create_channel().await.unwrap();
    topology::declare(&channel, QueueType::Classic)
        .await
        .unwrap();
    let celery = CeleryWorker::start(&vhost.amqp_url(), &["email"])
        .await
        .expect("the Celery worker starts on the Rust topology");

    // It declared over ours without a channel error, and it consumes what we publish.
    let publisher = shopfds_broker::Publisher::new(&conn).await.unwrap();
    let msg = TaskMessage::new(
        "send_order_confirmation_email",
        kwargs(json!({"order_id": "o-42"})),
    );
    publisher
        .publish(&Outgoing::task(&msg, "email"))
        .await
        .unwrap();
    let runs = celery.wait_for_executions(1, WAIT).await.unwrap();
    assert_eq!(runs[0]["id"], msg.id());
    let log = celery.log();
    assert!(!log.contains("PRECONDITION_FAILED"), "{log}");
}

#[tokio::test]
async fn an_unroutable_publish_is_an_error_and_a_confirmed_batch_is_all_in_the_queue() {
    let tw = spawn_worker(Registry::new()).await;
    let msg = TaskMessage::new("probe", Map::new());
    let mut nowhere = Outgoing::task(&msg, QUEUE);
    nowhere.routing_key = "no-queue-bound-here".to_owned();
    match tw.publisher.publish(&nowhere).await {
        Err(PublishError::Unroutable {
            exchange,
            routing_key,
        }) => {
            assert_eq!(exchange, QUEUE);
            assert_eq!(routing_key, "no-queue-bound-here");
        }
        other => panic!("expected Unroutable, got {other:?}"),
    }

    // `reports` has no consumer in this test: what was confirmed must all be there.
    let batch: Vec<Outgoing> = (0..1000)
        .map(|i| {
            let msg = TaskMessage::new("generate_sales_report", kwargs(json!({"n": i})));
            Outgoing::task(&msg, "reports")
        })
        .collect();
    let results = tw.publisher.publish_batch(&batch).await;
    assert_eq!(results.len(), 1000);
    let failures: Vec<_> = results.iter().filter(|r| r.is_err()).collect();
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(tw.vhost.queue_depth("reports").unwrap(), 1000);
    let first = take_messages(&tw.conn, "reports", 1).await;
    assert_eq!(first[0].headers["kwargsrepr"], json!("{'n': 0}"));
}

#[tokio::test]
async fn a_worker_reconnects_by_itself_after_its_connection_is_cut() {
    let mut echo = Registry::new();
    echo.register("echo", TaskOptions::default(), |ctx| async move {
        Ok(json!({ "id": ctx.id() }))
    });
    let mut tw = spawn_worker(Registry::new()).await;
    tw.worker.stop().await.unwrap();

    // A second worker whose only path to RabbitMQ is a proxy the test can cut.
    let proxy = shopfds_testkit::net::TcpProxy::open(([127, 0, 0, 1], 5672).into())
        .await
        .unwrap();
    let mut via_proxy = tw.broker.clone();
    via_proxy.url = shopfds_config::SecretUrl::new(
        tw.vhost
            .amqp_url()
            .replace(":5672/", &format!(":{}/", proxy.port())),
    );
    let _worker = start_worker(&via_proxy, &tw.store, echo, helpers::worker_settings());

    let first = tw.send(TaskMessage::new("echo", Map::new())).await;
    tw.wait_for_state(first.id(), TaskState::Success).await;

    // The network drops every connection; a task published meanwhile waits in the queue.
    proxy.cut().await;
    let second = tw.send(TaskMessage::new("echo", Map::new())).await;
    wait_for_depth(&tw.vhost, QUEUE, |d| d >= 1).await;
    proxy.resume().await.unwrap();

    let record = tw.wait_for_state(second.id(), TaskState::Success).await;
    assert_eq!(record.result, Some(json!({ "id": second.id() })));
}
