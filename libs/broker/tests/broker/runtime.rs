//! Per-task and per-worker options of the runtime: ignored results, priority, rate limits,
//! hooks, time limits, expiry and the shutdown grace period. Each test asserts what a user
//! would observe, and fails when its feature is taken out.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use shopfds_broker::{Hook, RateLimit, Registry, TaskError, TaskFailure, TaskOptions};
use shopfds_protocol::{Signature, TaskMessage, TaskState};

use super::helpers::{
    self, QUEUE, WAIT, spawn_worker, spawn_worker_on, spawn_worker_with, start_worker,
    wait_for_depth,
};
use super::{Log, attempts, fixed_retry, register_logged};

fn one_at_a_time() -> shopfds_broker::WorkerSettings {
    let mut settings = helpers::worker_settings();
    settings.concurrency = 1;
    settings
}

#[tokio::test]
async fn a_task_with_ignored_results_runs_but_writes_no_state() {
    let log = Log::default();
    let mut registry = Registry::new();
    let quiet = TaskOptions {
        ignore_result: true,
        ..TaskOptions::default()
    };
    register_logged(&mut registry, "fire_and_forget", quiet, &log, |_| {
        Ok(json!("done"))
    });
    register_logged(
        &mut registry,
        "recorded",
        TaskOptions::default(),
        &log,
        |_| Ok(json!("done")),
    );
    let tw = spawn_worker_with(registry, one_at_a_time()).await;

    // By the option, and by the header a Celery client sends (`ignore_result=True`).
    let by_option = tw
        .send(TaskMessage::new("fire_and_forget", Map::new()))
        .await;
    let mut by_header = TaskMessage::new("recorded", Map::new());
    by_header.headers.ignore_result = true;
    let by_header = tw.send(by_header).await;
    // One task at a time, in order: once this one succeeded, the two before it have run.
    let marker = tw.send(TaskMessage::new("recorded", Map::new())).await;
    tw.wait_for_state(marker.id(), TaskState::Success).await;

    let ran: Vec<String> = attempts(&log).into_iter().map(|a| a.id).collect();
    assert_eq!(ran, vec![by_option.id(), by_header.id(), marker.id()]);
    for id in [by_option.id(), by_header.id()] {
        assert_eq!(
            tw.store.results().get(id).await.unwrap().map(|r| r.state),
            None,
            "no state is written for {id}"
        );
    }
}

#[tokio::test]
async fn states_go_started_progress_success_in_the_result_store() {
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let go_rx = Arc::new(tokio::sync::Mutex::new(Some(go_rx)));
    let mut registry = Registry::new();
    registry.register("report", TaskOptions::default(), move |ctx| {
        let go_rx = go_rx.clone();
        async move {
            ctx.progress(3, 10, "rendering").await;
            if let Some(rx) = go_rx.lock().await.take() {
                let _ = rx.await;
            }
            Ok(json!({"pages": 10}))
        }
    });
    let tw = spawn_worker(registry).await;
    let msg = tw.send(TaskMessage::new("report", Map::new())).await;

    let progress = tw.wait_for_state(msg.id(), TaskState::Progress).await;
    assert_eq!(
        progress.progress,
        Some(json!({"current": 3, "total": 10, "message": "rendering"}))
    );
    go_tx.send(()).unwrap();
    let done = tw.wait_for_state(msg.id(), TaskState::Success).await;
    assert_eq!(done.result, Some(json!({"pages": 10})));
    assert!(
        done.expires_at.is_some(),
        "a result expires (RESULT_EXPIRES_SECS)"
    );
}

/// A handler that panics fails its task for good (FAILURE, dead-lettered with the panic's text);
/// the worker keeps serving and the message is settled like any other.
#[tokio::test]
async fn a_panicking_task_fails_and_the_worker_keeps_serving() {
    let mut registry = Registry::new();
    registry.register("explodes", TaskOptions::default(), |_ctx| async move {
        if true {
            panic!("boom in the handler");
        }
        Ok(Value::Null)
    });
    registry.register("fine", TaskOptions::default(), |_ctx| async move {
        Ok(json!("ok"))
    });
    let tw = spawn_worker(registry).await;
    let bad = tw.send(TaskMessage::new("explodes", Map::new())).await;
    let record = tw.wait_for_state(bad.id(), TaskState::Failure).await;
    let message = record.error.unwrap()["exc_message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains("boom in the handler"), "{message}");
    let dead = tw.dead_letters(1).await;
    assert!(
        dead[0].reason().contains("panicked"),
        "{:?}",
        dead[0].reason()
    );
    let good = tw.send(TaskMessage::new("fine", Map::new())).await;
    tw.wait_for_state(good.id(), TaskState::Success).await;
    wait_for_depth(&tw.vhost, QUEUE, |d| d == 0).await;
}

/// A time limit of `1e300` seconds (valid JSON, and what Python sends for "practically none") is
/// capped, not a panic: the task runs and its message is acked.
#[tokio::test]
async fn an_absurd_time_limit_header_is_capped_and_the_task_runs() {
    let mut registry = Registry::new();
    registry.register("unlimited", TaskOptions::default(), |_ctx| async move {
        Ok(json!("ran"))
    });
    let tw = spawn_worker(registry).await;
    let mut msg = TaskMessage::new("unlimited", Map::new());
    msg.headers.timelimit = serde_json::from_value(json!([1e300, null])).unwrap();
    let msg = tw.send(msg).await;
    let record = tw.wait_for_state(msg.id(), TaskState::Success).await;
    assert_eq!(record.result, Some(json!("ran")));
    wait_for_depth(&tw.vhost, QUEUE, |d| d == 0).await;
}

/// A follow-up addressed to an exchange that does not exist makes RabbitMQ close the worker's
/// publishing channel. The worker notices and reconnects, so later retries and deferrals still
/// go out (before, a retry's copy could never be published: the task ran again and again).
#[tokio::test]
async fn a_follow_up_to_a_missing_exchange_does_not_break_later_publishes() {
    let log = Log::default();
    let mut registry = Registry::new();
    register_logged(&mut registry, "first", TaskOptions::default(), &log, |_| {
        Ok(json!("first"))
    });
    register_logged(&mut registry, "later", fixed_retry(3), &log, |retries| {
        if retries == 0 {
            Err(TaskError::transient("partner API timed out"))
        } else {
            Ok(json!("later"))
        }
    });
    let tw = spawn_worker(registry).await;
    let mut first = TaskMessage::new("first", Map::new());
    first.embed.callbacks = Some(vec![
        Signature::new("ghost", Map::new()).with_option("queue", "nowhere"),
    ]);
    let first = tw.send(first).await;
    tw.wait_for_state(first.id(), TaskState::Success).await;

    // Its retry needs the publishing channel: the copy goes through the delay tree.
    let later = tw.send(TaskMessage::new("later", Map::new())).await;
    let record = tw.wait_for_state(later.id(), TaskState::Success).await;
    assert_eq!(record.result, Some(json!("later")));
    let runs: Vec<(String, u32)> = attempts(&log)
        .into_iter()
        .map(|a| (a.task, a.retries))
        .collect();
    assert_eq!(
        runs,
        vec![
            ("first".to_owned(), 0),
            ("later".to_owned(), 0),
            ("later".to_owned(), 1)
        ],
        "no attempt ran twice"
    );
}

/// `track_started` (off by default, as in Celery): STARTED is written before the handler runs
/// only for a task that asks for it, so a plain task costs one write, its final state.
#[tokio::test]
async fn started_is_recorded_only_for_tasks_with_track_started() {
    let (running_tx, mut running_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let gate = Arc::new(tokio::sync::Notify::new());
    let mut registry = Registry::new();
    for (name, track_started) in [("plain", false), ("tracked", true)] {
        let (running_tx, gate) = (running_tx.clone(), gate.clone());
        let options = TaskOptions {
            track_started,
            ..TaskOptions::default()
        };
        registry.register(name, options, move |ctx| {
            let (running_tx, gate) = (running_tx.clone(), gate.clone());
            async move {
                let _ = running_tx.send(ctx.message.task().to_owned());
                gate.notified().await;
                Ok(Value::Null)
            }
        });
    }
    let tw = spawn_worker(registry).await;
    for name in ["plain", "tracked"] {
        let msg = tw.send(TaskMessage::new(name, Map::new())).await;
        let running = tokio::time::timeout(WAIT, running_rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(running, name);
        // STARTED, when written, is durable before the handler runs: what is stored now is all
        // there will be until the task ends.
        let state = tw
            .store
            .results()
            .get(msg.id())
            .await
            .unwrap()
            .map(|r| r.state);
        let expected = (name == "tracked").then_some(TaskState::Started);
        assert_eq!(state, expected, "{name} while running");
        gate.notify_one();
        tw.wait_for_state(msg.id(), TaskState::Success).await;
    }
}

#[tokio::test]
async fn higher_priority_messages_run_first() {
    let log = Log::default();
    let mut registry = Registry::new();
    register_logged(
        &mut registry,
        "ranked",
        TaskOptions::default(),
        &log,
        |_| Ok(Value::Null),
    );
    let mut tw = spawn_worker_on(Registry::new(), one_at_a_time(), Some(10)).await;
    tw.worker.stop().await.unwrap();

    // Low ones first, then high ones, all waiting in the queue before a worker consumes.
    let mut low = Vec::new();
    let mut high = Vec::new();
    for (priority, ids) in [(1u8, &mut low), (9u8, &mut high)] {
        for _ in 0..5 {
            let mut msg = TaskMessage::new("ranked", Map::new());
            msg.properties.priority = Some(priority);
            ids.push(tw.send(msg).await.id().to_owned());
        }
    }
    wait_for_depth(&tw.vhost, QUEUE, |d| d == 10).await;

    let mut settings = one_at_a_time();
    settings.queues[0].prefetch_multiplier = 1;
    let _worker = start_worker(&tw.broker, &tw.store, registry, settings);
    for id in low.iter().chain(&high) {
        tw.wait_for_state(id, TaskState::Success).await;
    }
    let order: Vec<String> = attempts(&log).into_iter().map(|a| a.id).collect();
    assert_eq!(
        &order[..5],
        &high[..],
        "priority 9 before priority 1: {order:?}"
    );
    assert_eq!(&order[5..], &low[..]);
}

#[test]
fn rate_limits_parse_celery_syntax_and_say_what_is_wrong() {
    let per_second: RateLimit = "10/s".parse().unwrap();
    assert_eq!(per_second.interval(), Duration::from_millis(100));
    let per_minute: RateLimit = "100/m".parse().unwrap();
    assert_eq!(per_minute.interval(), Duration::from_millis(600));
    let per_hour: RateLimit = "1000/h".parse().unwrap();
    assert_eq!(per_hour.interval(), Duration::from_millis(3600));
    assert_eq!(
        "5".parse::<RateLimit>().unwrap().per,
        Duration::from_secs(1)
    );
    let bad_unit = "10/d".parse::<RateLimit>().unwrap_err();
    assert!(bad_unit.contains("unknown unit \"d\""), "{bad_unit}");
    let zero = "0/s".parse::<RateLimit>().unwrap_err();
    assert!(zero.contains("at least 1"), "{zero}");
    let garbage = "fast".parse::<RateLimit>().unwrap_err();
    assert!(garbage.contains("expected <tasks>/<s|m|h>"), "{garbage}");
}

#[tokio::test]
async fn a_rate_limited_task_starts_no_faster_than_its_limit() {
    let log = Log::default();
    let mut registry = Registry::new();
    let limited = TaskOptions {
        rate_limit: Some("2/s".parse().unwrap()),
        ..TaskOptions::default()
    };
    register_logged(&mut registry, "throttled", limited, &log, |_| {
        Ok(Value::Null)
    });
    // Four slots: without the limit all five would start within a few milliseconds.
    let tw = spawn_worker(registry).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(
            tw.send(TaskMessage::new("throttled", Map::new()))
                .await
                .id()
                .to_owned(),
        );
    }
    for id in &ids {
        tw.wait_for_state(id, TaskState::Success).await;
    }
    let mut starts: Vec<Instant> = attempts(&log).into_iter().map(|a| a.mono).collect();
    starts.sort();
    for pair in starts.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= Duration::from_millis(450),
            "two starts {gap:?} apart; 2/s means 500 ms"
        );
    }
    assert!(starts[4] - starts[0] >= Duration::from_millis(1900));
}

#[tokio::test]
async fn retry_and_failure_hooks_fire_with_the_task_and_its_error() {
    let seen: Arc<Mutex<Vec<(&'static str, TaskFailure)>>> = Arc::default();
    let (on_retry, on_failure) = {
        let (a, b) = (seen.clone(), seen.clone());
        (
            Hook::new(move |f| a.lock().unwrap().push(("retry", f.clone()))),
            Hook::new(move |f| b.lock().unwrap().push(("failure", f.clone()))),
        )
    };
    let log = Log::default();
    let mut registry = Registry::new();
    let options = TaskOptions {
        on_retry: Some(on_retry),
        on_failure: Some(on_failure),
        ..fixed_retry(3)
    };
    register_logged(&mut registry, "partner_call", options, &log, |retries| {
        if retries == 0 {
            Err(TaskError::transient("partner 503"))
        } else {
            Err(TaskError::permanent("partner 400: bad address"))
        }
    });
    let tw = spawn_worker(registry).await;
    let msg = tw.send(TaskMessage::new("partner_call", Map::new())).await;
    tw.wait_for_state(msg.id(), TaskState::Failure).await;
    tw.dead_letters(1).await;

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:#?}");
    let (kind, retry) = &seen[0];
    assert_eq!(*kind, "retry");
    assert_eq!(retry.task_id, msg.id());
    assert_eq!(retry.task, "partner_call");
    assert_eq!(retry.queue, QUEUE);
    assert_eq!(retry.retries, 0);
    assert_eq!(retry.error, TaskError::transient("partner 503"));
    assert_eq!(retry.retry_in, Some(Duration::from_secs(1)));
    let (kind, failure) = &seen[1];
    assert_eq!(*kind, "failure");
    assert_eq!(failure.task_id, msg.id());
    assert_eq!(failure.retries, 1);
    assert_eq!(
        failure.error,
        TaskError::permanent("partner 400: bad address")
    );
    assert_eq!(failure.reason, "partner 400: bad address");
    assert_eq!(failure.retry_in, None);
}

#[tokio::test]
async fn the_soft_time_limit_reaches_the_task_which_cleans_up_and_returns() {
    let mut registry = Registry::new();
    let options = TaskOptions {
        soft_time_limit: Some(Duration::from_millis(500)),
        time_limit: Some(Duration::from_secs(20)),
        ..TaskOptions::default()
    };
    registry.register("long_report", options, |ctx| async move {
        let started = Instant::now();
        // Works until told to stop, then cleans up and returns what it has.
        ctx.soft_limit.cancelled().await;
        Ok(json!({"partial": true, "after_ms": started.elapsed().as_millis() as u64}))
    });
    let tw = spawn_worker(registry).await;
    let msg = tw.send(TaskMessage::new("long_report", Map::new())).await;
    let record = tw.wait_for_state(msg.id(), TaskState::Success).await;
    let result = record.result.unwrap();
    assert_eq!(result["partial"], json!(true));
    let after = result["after_ms"].as_u64().unwrap();
    assert!(
        (450..10_000).contains(&after),
        "soft limit seen after {after} ms"
    );
}

#[tokio::test]
async fn at_the_hard_time_limit_the_task_is_abandoned_and_dead_lettered() {
    let finished = Arc::new(Mutex::new(false));
    let mut registry = Registry::new();
    let options = TaskOptions {
        time_limit: Some(Duration::from_millis(700)),
        ..TaskOptions::default()
    };
    let flag = finished.clone();
    registry.register("stuck", options, move |_ctx| {
        let flag = flag.clone();
        async move {
            // Ignores the soft limit, as a blocked call would.
            tokio::time::sleep(Duration::from_secs(3)).await;
            *flag.lock().unwrap() = true;
            Ok(Value::Null)
        }
    });
    let tw = spawn_worker(registry).await;
    let msg = tw.send(TaskMessage::new("stuck", Map::new())).await;
    let record = tw.wait_for_state(msg.id(), TaskState::Failure).await;
    let error = record.error.unwrap();
    assert!(
        error["exc_message"]
            .as_str()
            .unwrap()
            .contains("TimeLimitExceeded"),
        "{error}"
    );
    let dead = tw.dead_letters(1).await;
    assert!(dead[0].reason().contains("hard time limit"), "{dead:?}");
    assert_eq!(dead[0].header_str("id"), msg.id());
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!*finished.lock().unwrap(), "the abandoned task went on");
}

#[tokio::test]
async fn an_expired_message_is_revoked_without_running() {
    let log = Log::default();
    let mut registry = Registry::new();
    register_logged(
        &mut registry,
        "too_late",
        TaskOptions::default(),
        &log,
        |_| Ok(Value::Null),
    );
    let tw = spawn_worker(registry).await;
    let mut msg = TaskMessage::new("too_late", Map::new());
    msg.headers.expires = Some(chrono::Utc::now() - chrono::Duration::seconds(5));
    let msg = tw.send(msg).await;
    let record = tw.wait_for_state(msg.id(), TaskState::Revoked).await;
    assert_eq!(record.error.unwrap()["exc_type"], "TaskRevokedError");
    assert!(attempts(&log).is_empty(), "an expired task must not run");
    assert_eq!(tw.vhost.queue_depth(QUEUE).unwrap(), 0, "and it is acked");
}

/// A handler that reports its start, sleeps `work`, then reports its end.
fn timed_registry(
    work: Duration,
) -> (
    Registry,
    tokio::sync::mpsc::UnboundedReceiver<()>,
    Arc<Mutex<bool>>,
) {
    let (started_tx, started_rx) = tokio::sync::mpsc::unbounded_channel();
    let finished = Arc::new(Mutex::new(false));
    let flag = finished.clone();
    let mut registry = Registry::new();
    let options = TaskOptions {
        track_started: true,
        ..TaskOptions::default()
    };
    registry.register("shutdown_probe", options, move |_ctx| {
        let _ = started_tx.send(());
        let flag = flag.clone();
        async move {
            tokio::time::sleep(work).await;
            *flag.lock().unwrap() = true;
            Ok(json!("finished"))
        }
    });
    (registry, started_rx, finished)
}

#[tokio::test]
async fn on_shutdown_a_task_shorter_than_the_grace_period_finishes_and_is_acked() {
    let (registry, mut started, _finished) = timed_registry(Duration::from_millis(1500));
    let mut settings = helpers::worker_settings();
    settings.shutdown_grace = Duration::from_secs(10);
    let mut tw = spawn_worker_with(registry, settings).await;
    let msg = tw
        .send(TaskMessage::new("shutdown_probe", Map::new()))
        .await;
    tokio::time::timeout(WAIT, started.recv()).await.unwrap();

    // SIGTERM: the worker stops taking messages but lets the running task finish.
    tw.worker.stop().await.unwrap();
    let record = tw.store.results().get(msg.id()).await.unwrap().unwrap();
    assert_eq!(
        record.state,
        TaskState::Success,
        "finished before the worker returned"
    );
    assert_eq!(record.result, Some(json!("finished")));
    // Acked, not requeued: nothing is left for the next worker.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(tw.vhost.queue_depth(QUEUE).unwrap(), 0);
}

#[tokio::test]
async fn on_shutdown_a_task_longer_than_the_grace_period_is_requeued_and_abandoned() {
    let (registry, mut started, finished) = timed_registry(Duration::from_secs(3));
    let mut settings = helpers::worker_settings();
    settings.shutdown_grace = Duration::from_millis(500);
    let mut tw = spawn_worker_with(registry, settings).await;
    let msg = tw
        .send(TaskMessage::new("shutdown_probe", Map::new()))
        .await;
    tokio::time::timeout(WAIT, started.recv()).await.unwrap();

    let stopping = Instant::now();
    tw.worker.stop().await.unwrap();
    let took = stopping.elapsed();
    assert!(
        took < Duration::from_millis(2500),
        "the worker returned {took:?} after SIGTERM; the grace period is 500 ms"
    );
    // The message is back in the queue for another worker...
    wait_for_depth(&tw.vhost, QUEUE, |d| d == 1).await;
    // ...and the old attempt does not go on in the background.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !*finished.lock().unwrap(),
        "the unfinished task kept running after the worker stopped"
    );
    let state = tw
        .store
        .results()
        .get(msg.id())
        .await
        .unwrap()
        .map(|r| r.state);
    assert_eq!(state, Some(TaskState::Started));

    let (again, _started, _) = timed_registry(Duration::from_millis(10));
    let _next = start_worker(&tw.broker, &tw.store, again, helpers::worker_settings());
    tw.wait_for_state(msg.id(), TaskState::Success).await;
}

#[tokio::test]
async fn a_stock_celery_app_with_the_same_max_priority_shares_the_priority_queues() {
    // The Rust side declares first, with x-max-priority; the Celery app, configured with the
    // same BROKER_MAX_PRIORITY, must declare equivalent queues (else PRECONDITION_FAILED) and
    // receive the priority a Rust publisher set.
    let tw = spawn_worker_on(Registry::new(), one_at_a_time(), Some(10)).await;
    let celery = shopfds_testkit::celery::CeleryWorker::start_with_env(
        &tw.vhost.amqp_url(),
        &["email"],
        &[("BROKER_MAX_PRIORITY", "10")],
    )
    .await
    .expect("the Celery worker starts on the Rust topology with priorities");
    let mut msg = TaskMessage::new(
        "send_order_confirmation_email",
        super::kwargs(json!({"order_id": "o-7"})),
    );
    msg.properties.priority = Some(7);
    tw.publisher
        .publish(&shopfds_broker::Outgoing::task(&msg, "email"))
        .await
        .unwrap();
    let runs = celery.wait_for_executions(1, WAIT).await.unwrap();
    assert_eq!(runs[0]["id"], msg.id());
    assert_eq!(runs[0]["delivery_info"]["priority"], json!(7));
    let log = celery.log();
    assert!(!log.contains("PRECONDITION_FAILED"), "{log}");
}

#[tokio::test]
async fn a_queue_with_its_own_concurrency_runs_no_more_of_its_tasks_at_once() {
    let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut registry = Registry::new();
    {
        let (running, most) = (running.clone(), most.clone());
        registry.register("slow_report", TaskOptions::default(), move |_ctx| {
            let (running, most) = (running.clone(), most.clone());
            async move {
                use std::sync::atomic::Ordering::SeqCst;
                let now = running.fetch_add(1, SeqCst) + 1;
                most.fetch_max(now, SeqCst);
                tokio::time::sleep(Duration::from_millis(300)).await;
                running.fetch_sub(1, SeqCst);
                Ok(Value::Null)
            }
        });
    }
    // Four slots in the worker and a prefetch of four, but one at a time for this queue.
    let mut settings = helpers::worker_settings();
    settings.queues[0].concurrency = Some(1);
    settings.queues[0].prefetch_multiplier = 4;
    let tw = spawn_worker_with(registry, settings).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let msg = tw.send(TaskMessage::new("slow_report", Map::new())).await;
        ids.push(msg.id().to_owned());
    }
    for id in &ids {
        tw.wait_for_state(id, TaskState::Success).await;
    }
    assert_eq!(most.load(std::sync::atomic::Ordering::SeqCst), 1);
}
