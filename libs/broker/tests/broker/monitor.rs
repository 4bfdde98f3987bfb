//! Monitoring and remote control against stock Celery: a Rust worker and a stock Celery 5 worker
//! on one vhost are asked the same `inspect` questions and send their events to the same stock
//! receiver, and each reply and event of the Rust worker must have the stock one's shape; then
//! what the control commands do (revoke, durable and with terminate, rate and time limits, pool
//! size, consumers, events on and off, shutdown) and why a task was late.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use shopfds_broker::monitor::lateness::PLANNED_HEADER;
use shopfds_broker::{Outgoing, Registry, TaskError, TaskOptions};
use shopfds_protocol::{TaskMessage, TaskState};
use shopfds_testkit::celery::{CeleryWorker, send_task};
use shopfds_testkit::celery_monitor::{EventCapture, inspect};

use crate::helpers::{QUEUE, WAIT, poll_until, spawn_worker_with, start_worker, worker_settings};

const ASK: Duration = Duration::from_secs(6);

/// Where `ours` lacks something `stock` has, or has it as another JSON type (`null` on either
/// side passes: a field without a value), descending into objects (except `stats.total`, keyed
/// by the task names each ran, and `stats.pool`, whose keys depend on the pool) and the first
/// element of lists.
fn shape_diff(stock: &Value, ours: &Value, path: &str, out: &mut Vec<String>) {
    match (stock, ours) {
        (Value::Null, _) | (_, Value::Null) => {}
        // Keyed by task name: what each worker ran, not a shape. And the pool's keys differ
        // between stock pools themselves (prefork lists `processes`, threads counts `threads`):
        // only `max-concurrency`, which Flower shows, is common; it is asserted on its own.
        (Value::Object(_), Value::Object(_)) if path.ends_with(".total") => {}
        (Value::Object(_), Value::Object(o)) if path.ends_with(".pool") => {
            if !o.contains_key("max-concurrency") {
                out.push(format!("{path}.max-concurrency: missing"));
            }
        }
        (Value::Object(s), Value::Object(o)) => {
            for (k, v) in s {
                match o.get(k) {
                    None => out.push(format!("{path}.{k}: missing")),
                    Some(ov) => shape_diff(v, ov, &format!("{path}.{k}"), out),
                }
            }
        }
        (Value::Array(s), Value::Array(o)) => {
            if let (Some(s), Some(o)) = (s.first(), o.first()) {
                shape_diff(s, o, &format!("{path}[0]"), out);
            }
        }
        (Value::Number(_), Value::Number(_))
        | (Value::String(_), Value::String(_))
        | (Value::Bool(_), Value::Bool(_)) => {}
        (s, o) => out.push(format!("{path}: stock {s}, ours {o}")),
    }
}

fn registry() -> Registry {
    let mut registry = Registry::new();
    registry.register("monitor.ok", TaskOptions::default(), |_ctx| async {
        Ok(json!({"ok": true}))
    });
    registry.register("monitor.fail", TaskOptions::default(), |_ctx| async {
        Err(TaskError::permanent("failed on purpose"))
    });
    registry.register("monitor.sleep", TaskOptions::default(), |ctx| async move {
        let secs = ctx
            .message
            .kwargs
            .get("seconds")
            .and_then(Value::as_f64)
            .unwrap_or(3.0);
        tokio::select! {
            () = ctx.soft_limit.cancelled() => {}
            () = tokio::time::sleep(Duration::from_secs_f64(secs)) => {}
        }
        Ok(json!({"slept": secs}))
    });
    registry
}

fn task(name: &str, kwargs: Value) -> TaskMessage {
    let Value::Object(kwargs) = kwargs else {
        panic!("kwargs must be an object")
    };
    TaskMessage::new(name, kwargs)
}

/// The node whose name starts with `prefix` among the replies.
fn node<'a>(replies: &'a Value, prefix: &str) -> (&'a str, &'a Value) {
    replies
        .as_object()
        .and_then(|m| m.iter().find(|(k, _)| k.starts_with(prefix)))
        .map(|(k, v)| (k.as_str(), v))
        .unwrap_or_else(|| panic!("no reply from {prefix}*: {replies}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn inspect_and_events_see_a_rust_worker_as_they_see_a_stock_worker() {
    let mut settings = worker_settings();
    settings.hostname = "rust-monitor@test".into();
    settings.send_task_events = true;
    let t = spawn_worker_with(registry(), settings).await;
    let url = t.vhost.amqp_url();
    let capture = EventCapture::start(&url, 90.0, Some(("worker-offline", 2)))
        .await
        .unwrap();

    // A second Rust worker and a stock one come online while the receiver listens.
    let mut second = worker_settings();
    second.hostname = "rust-second@test".into();
    second.send_task_events = true;
    let mut second = start_worker(&t.broker, &t.store, registry(), second);
    // prefork: Celery 5.5's threads pool can lose task events (its pool threads append to the
    // event buffer while the consumer flushes and clears it; fixed upstream after 5.5.3).
    let stock = CeleryWorker::start_with_pool(
        &url,
        &["maintenance"],
        &[("SHOPFDS_TASK_EVENTS", "1")],
        "prefork",
    )
    .await
    .unwrap();

    t.send(task("monitor.ok", json!({}))).await;
    t.send(task("monitor.fail", json!({}))).await;
    send_task(&url, "health_check", json!({}), Some("maintenance"))
        .await
        .unwrap();
    send_task(
        &url,
        "interop.fail_permanently",
        json!({}),
        Some("maintenance"),
    )
    .await
    .unwrap();
    // Long enough to be seen running by `inspect active`.
    t.send(task("monitor.sleep", json!({"seconds": 8.0}))).await;
    send_task(
        &url,
        "interop.sleep",
        json!({"seconds": 8.0}),
        Some("maintenance"),
    )
    .await
    .unwrap();

    let pings = inspect(&url, "ping", &[], &json!({}), ASK).await.unwrap();
    let (stock_node, stock_pong) = node(&pings, stock.hostname());
    let stock_node = stock_node.to_owned();
    assert_eq!(node(&pings, "rust-monitor@").1, stock_pong, "{pings}");
    assert_eq!(node(&pings, "rust-second@").1, stock_pong, "{pings}");
    let both = [stock_node.as_str(), "rust-monitor@test"];

    // Each worker's `active` while its sleeping task runs (not necessarily at the same moment:
    // on a loaded machine one may finish before the other is asked).
    let mut seen: BTreeMap<String, Value> = BTreeMap::new();
    poll_until(
        WAIT,
        || async {
            inspect(&url, "active", &both, &json!({}), ASK)
                .await
                .unwrap()
        },
        |r| {
            for (node, reply) in r.as_object().into_iter().flatten() {
                if reply.as_array().is_some_and(|a| !a.is_empty()) {
                    seen.entry(node.clone()).or_insert_with(|| reply.clone());
                }
            }
            seen.len() == 2
        },
    )
    .await
    .unwrap();
    let active = Value::Object(seen.into_iter().collect());
    let mut diffs = Vec::new();
    shape_diff(
        node(&active, &stock_node).1,
        node(&active, "rust-monitor@").1,
        "active",
        &mut diffs,
    );
    assert_eq!(node(&active, "rust-monitor@").1[0]["name"], "monitor.sleep");

    for command in [
        "stats",
        "reserved",
        "scheduled",
        "registered",
        "active_queues",
        "revoked",
        "clock",
    ] {
        let replies = inspect(&url, command, &both, &json!({}), ASK)
            .await
            .unwrap();
        shape_diff(
            node(&replies, &stock_node).1,
            node(&replies, "rust-monitor@").1,
            command,
            &mut diffs,
        );
    }
    assert!(
        diffs.is_empty(),
        "replies unlike a stock worker's: {diffs:#?}"
    );

    let stats = inspect(&url, "stats", &["rust-monitor@test"], &json!({}), ASK)
        .await
        .unwrap();
    let stats = node(&stats, "rust-monitor@").1;
    assert_eq!(stats["pool"]["max-concurrency"], 4, "{stats}");
    assert_eq!(stats["total"]["monitor.ok"], 1, "{stats}");
    let registered = inspect(&url, "registered", &["rust-monitor@test"], &json!({}), ASK)
        .await
        .unwrap();
    assert_eq!(
        node(&registered, "rust-monitor@").1,
        &json!(["monitor.fail", "monitor.ok", "monitor.sleep"])
    );
    // Every setting ours reports is a Celery setting, under its Celery name.
    let defaults = json!({"with_defaults": true});
    let stock_conf = inspect(&url, "conf", &[&stock_node], &defaults, ASK)
        .await
        .unwrap();
    let stock_conf = node(&stock_conf, &stock_node)
        .1
        .as_object()
        .unwrap()
        .clone();
    let conf = inspect(&url, "conf", &["rust-monitor@test"], &json!({}), ASK)
        .await
        .unwrap();
    let unknown: Vec<&String> = node(&conf, "rust-monitor@")
        .1
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| !stock_conf.contains_key(*k))
        .collect();
    assert!(unknown.is_empty(), "not Celery settings: {unknown:?}");
    let queues = inspect(
        &url,
        "active_queues",
        &["rust-monitor@test"],
        &json!({}),
        ASK,
    )
    .await
    .unwrap();
    assert_eq!(node(&queues, "rust-monitor@").1[0]["name"], QUEUE);

    // Offline: the second Rust worker and the stock worker stop while the receiver listens.
    second.stop().await.unwrap();
    stock.stop(WAIT).await.unwrap();
    let events = capture.finish().await.unwrap();
    let mut fields: BTreeMap<(String, bool), BTreeSet<String>> = BTreeMap::new();
    for e in &events {
        let host = e["hostname"].as_str().unwrap_or_default();
        let rust = host.starts_with("rust-");
        if !rust && host != stock_node {
            continue;
        }
        let keys = e.as_object().unwrap().keys().cloned().collect();
        fields.insert(
            (e["type"].as_str().unwrap_or_default().to_owned(), rust),
            keys,
        );
    }
    for kind in [
        "worker-online",
        "worker-heartbeat",
        "worker-offline",
        "task-received",
        "task-started",
        "task-succeeded",
        "task-failed",
    ] {
        let stock_fields = fields.get(&(kind.to_owned(), false));
        let ours = fields.get(&(kind.to_owned(), true));
        assert!(
            stock_fields.is_some(),
            "the stock worker sent no {kind}: {events:#?}"
        );
        assert_eq!(
            ours, stock_fields,
            "{kind}: fields differ from the stock worker's"
        );
    }
    let succeeded: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "task-succeeded" && e["hostname"] == "rust-monitor@test")
        .collect();
    assert!(
        succeeded.iter().any(|e| e["result"] == "{'ok': True}"),
        "{succeeded:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoke_sent_while_every_worker_was_offline_is_honoured_by_rust_and_stock_workers() {
    let ran = Arc::new(AtomicUsize::new(0));
    let mut registry = Registry::new();
    let counter = ran.clone();
    registry.register("monitor.count", TaskOptions::default(), move |_ctx| {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            Ok(json!({}))
        }
    });
    let mut t = spawn_worker_with(registry.clone(), worker_settings()).await;
    let url = t.vhost.amqp_url();
    // Once the first worker runs tasks it has declared the mailbox; then no worker is online.
    let warm_up = t.send(task("monitor.count", json!({}))).await;
    t.wait_for_state(warm_up.id(), TaskState::Success).await;
    t.worker.stop().await.unwrap();

    let revoked = task("monitor.count", json!({}));
    let revoked_id = revoked.id().to_owned();
    let replies = inspect(
        &url,
        "revoke",
        &[],
        &json!({"task_id": revoked_id}),
        Duration::from_millis(500),
    )
    .await
    .unwrap();
    assert_eq!(replies, json!({}), "no worker was online to answer");
    assert_eq!(
        t.vhost
            .queue_depth(shopfds_broker::monitor::pidbox::REVOKE_QUEUE)
            .unwrap(),
        1,
        "the revoke waits for a worker"
    );
    t.send(revoked).await;
    let after = t.send(task("monitor.count", json!({}))).await;

    // A stock worker comes online, then a Rust worker: the Rust worker stores the waiting
    // revoke before it takes a task, and broadcasts it again for the stock worker.
    let stock = CeleryWorker::start(&url, &["maintenance"]).await.unwrap();
    let mut settings = worker_settings();
    settings.hostname = "rust-late@test".into();
    let mut late = start_worker(&t.broker, &t.store, registry, settings);
    t.wait_for_state(after.id(), TaskState::Success).await;
    let record = t.wait_for_state(&revoked_id, TaskState::Revoked).await;
    assert_eq!(
        ran.load(Ordering::SeqCst),
        2,
        "only the tasks not revoked ran (the warm-up and the one after)"
    );
    assert_eq!(record.task_id, revoked_id);

    // The stock worker never heard the original broadcast; it honours the one sent again.
    let mut same_id = shopfds_testkit::celery::SendTask::new("health_check", json!({})).unwrap();
    same_id.queue = Some("maintenance".into());
    same_id.task_id = Some(revoked_id.clone());
    poll_until(
        WAIT,
        || async {
            inspect(&url, "revoked", &[], &json!({}), ASK)
                .await
                .unwrap()
        },
        |r| {
            node(r, stock.hostname())
                .1
                .as_array()
                .is_some_and(|a| a.contains(&json!(revoked_id)))
        },
    )
    .await
    .unwrap();
    shopfds_testkit::celery::send_task_with(&url, &same_id)
        .await
        .unwrap();
    let marker = send_task(&url, "health_check", json!({}), Some("maintenance"))
        .await
        .unwrap();
    let executions = stock.wait_for_executions(1, WAIT).await.unwrap();
    let ids: Vec<&str> = executions.iter().filter_map(|e| e["id"].as_str()).collect();
    assert_eq!(
        ids,
        vec![marker.as_str()],
        "the revoked id never ran on the stock worker"
    );

    // The revoke is in the store: a worker started later knows it at once.
    let stored = t.store.revoked_tasks().since(None).await.unwrap();
    assert!(stored.iter().any(|(id, _)| id == &revoked_id), "{stored:?}");
    late.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn control_commands_change_a_running_rust_worker() {
    let mut settings = worker_settings();
    settings.hostname = "rust-control@test".into();
    let mut t = spawn_worker_with(registry(), settings).await;
    let url = t.vhost.amqp_url();
    let me = ["rust-control@test"];
    let ask = |command: &'static str, args: Value| {
        let url = url.clone();
        async move {
            let replies = inspect(&url, command, &me, &args, ASK).await.unwrap();
            node(&replies, "rust-control@").1.clone()
        }
    };

    // revoke with terminate cuts a running task short: REVOKED, not SUCCESS.
    let sleeping = t
        .send(task("monitor.sleep", json!({"seconds": 60.0})))
        .await;
    poll_until(
        WAIT,
        || ask("active", json!({})),
        |a| a.as_array().is_some_and(|a| !a.is_empty()),
    )
    .await
    .unwrap();
    let reply = ask(
        "revoke",
        json!({"task_id": [sleeping.id()], "terminate": true}),
    )
    .await;
    assert_eq!(
        reply,
        json!({"ok": format!("terminate: {}", sleeping.id())})
    );
    t.wait_for_state(sleeping.id(), TaskState::Revoked).await;
    assert_eq!(ask("revoked", json!({})).await, json!([sleeping.id()]));

    // Pool size, as `stats` reports it.
    assert_eq!(
        ask("pool_grow", json!({"n": 2})).await,
        json!({"ok": "pool will grow"})
    );
    assert_eq!(ask("stats", json!({})).await["pool"]["max-concurrency"], 6);
    assert_eq!(
        ask("pool_shrink", json!({"n": 5})).await,
        json!({"ok": "pool will shrink"})
    );
    assert_eq!(ask("stats", json!({})).await["pool"]["max-concurrency"], 1);

    // Rate limit: unknown task, bad rate, then one that applies.
    assert_eq!(
        ask(
            "rate_limit",
            json!({"task_name": "nope", "rate_limit": "1/s"})
        )
        .await,
        json!({"error": "unknown task"})
    );
    let bad = ask(
        "rate_limit",
        json!({"task_name": "monitor.ok", "rate_limit": "x/y"}),
    )
    .await;
    assert!(
        bad["error"]
            .as_str()
            .unwrap_or_default()
            .starts_with("Invalid rate limit string"),
        "{bad}"
    );
    assert_eq!(
        ask(
            "rate_limit",
            json!({"task_name": "monitor.ok", "rate_limit": "10/m"})
        )
        .await,
        json!({"ok": "new rate limit set successfully"})
    );
    let first = t.send(task("monitor.ok", json!({}))).await;
    let second = t.send(task("monitor.ok", json!({}))).await;
    t.wait_for_state(first.id(), TaskState::Success).await;
    // The second waits 6 s for its turn: seen as reserved meanwhile.
    let reserved = poll_until(
        WAIT,
        || ask("reserved", json!({})),
        |r| r.as_array().is_some_and(|a| !a.is_empty()),
    )
    .await
    .unwrap();
    assert_eq!(reserved[0]["id"], second.id());
    assert_eq!(
        ask(
            "rate_limit",
            json!({"task_name": "monitor.ok", "rate_limit": 0})
        )
        .await,
        json!({"ok": "rate limit disabled successfully"})
    );
    t.wait_for_state(second.id(), TaskState::Success).await;

    // Time limit: a 0.2 s soft limit ends the 60 s sleep at once.
    assert_eq!(
        ask(
            "time_limit",
            json!({"task_name": "monitor.sleep", "soft": 0.2, "hard": 30})
        )
        .await,
        json!({"ok": "time limits set successfully"})
    );
    let limited = t
        .send(task("monitor.sleep", json!({"seconds": 60.0})))
        .await;
    let record = t.wait_for_state(limited.id(), TaskState::Success).await;
    assert_eq!(record.result, Some(json!({"slept": 60.0})));

    // Consumers: add another queue, see a task there run, cancel it.
    assert_eq!(
        ask("add_consumer", json!({"queue": "reports"})).await,
        json!({"ok": "add consumer reports"})
    );
    let queues = poll_until(
        WAIT,
        || ask("active_queues", json!({})),
        |q| q.as_array().is_some_and(|a| a.len() == 2),
    )
    .await
    .unwrap();
    assert_eq!(queues[1]["name"], "reports");
    let elsewhere = task("monitor.ok", json!({}));
    t.publisher
        .publish(&Outgoing::task(&elsewhere, "reports"))
        .await
        .unwrap();
    t.wait_for_state(elsewhere.id(), TaskState::Success).await;
    assert_eq!(
        ask("cancel_consumer", json!({"queue": "reports"})).await,
        json!({"ok": "no longer consuming from reports"})
    );
    poll_until(
        WAIT,
        || async { t.vhost.consumers("reports").unwrap() },
        |n| *n == 0,
    )
    .await
    .unwrap();
    // With its last queue cancelled the worker stays connected and idle; a queue added back
    // is consumed again.
    ask("cancel_consumer", json!({"queue": QUEUE})).await;
    poll_until(
        WAIT,
        || async { t.vhost.consumers(QUEUE).unwrap() },
        |n| *n == 0,
    )
    .await
    .unwrap();
    let waiting = t.send(task("monitor.ok", json!({}))).await;
    assert_eq!(ask("ping", json!({})).await, json!({"ok": "pong"}));
    ask("add_consumer", json!({"queue": QUEUE})).await;
    t.wait_for_state(waiting.id(), TaskState::Success).await;

    // Events on and off, and an unknown command.
    assert_eq!(
        ask("enable_events", json!({})).await,
        json!({"ok": "task events enabled"})
    );
    assert_eq!(
        ask("enable_events", json!({})).await,
        json!({"ok": "task events already enabled"})
    );
    assert_eq!(
        ask("disable_events", json!({})).await,
        json!({"ok": "task events disabled"})
    );
    assert_eq!(
        ask("no_such_cmd", json!({})).await,
        json!({"error": "KeyError('no_such_cmd')"})
    );

    // shutdown: the worker stops by itself, as on SIGTERM.
    let replies = inspect(
        &url,
        "shutdown",
        &me,
        &json!({}),
        Duration::from_millis(500),
    )
    .await
    .unwrap();
    assert_eq!(
        replies,
        json!({}),
        "a stock worker does not answer shutdown either"
    );
    let stopped = tokio::time::timeout(WAIT, t.worker.wait()).await;
    assert!(matches!(stopped, Ok(Ok(()))), "{stopped:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_lateness_histograms_split_the_wait_by_phase() {
    let name = format!("monitor.late.{}", uuid::Uuid::new_v4().simple());
    let mut registry = Registry::new();
    registry.register(&name, TaskOptions::default(), |_ctx| async {
        Ok(json!({}))
    });
    let t = spawn_worker_with(registry, worker_settings()).await;

    // As the relay publishes an outbox row written 1.5 s ago.
    let relayed = task(&name, json!({}));
    let mut out = Outgoing::task(&relayed, QUEUE);
    let planned = chrono::Utc::now() - chrono::Duration::milliseconds(1_500);
    out.headers
        .insert(PLANNED_HEADER.into(), json!(planned.timestamp_millis()));
    t.publisher.publish(&out).await.unwrap();
    // A countdown of 2 s.
    let mut later = task(&name, json!({}));
    later.headers.eta = Some(chrono::Utc::now() + chrono::Duration::seconds(2));
    t.send(later.clone()).await;
    t.wait_for_state(relayed.id(), TaskState::Success).await;
    t.wait_for_state(later.id(), TaskState::Success).await;

    let text = shopfds_telemetry::metrics::render();
    let sample = |phase: &str, what: &str| -> f64 {
        let prefix = format!(
            "shopfds_task_wait_seconds_{what}{{phase=\"{phase}\",queue=\"{QUEUE}\",task=\"{name}\"}} "
        );
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
    };
    assert_eq!(sample("outbox", "count"), 1.0);
    assert!(
        sample("outbox", "sum") >= 1.5,
        "{}",
        sample("outbox", "sum")
    );
    assert_eq!(sample("eta", "count"), 1.0);
    assert!(sample("eta", "sum") >= 1.0, "{}", sample("eta", "sum"));
    // Both messages were stamped when published: each has its broker wait and prefetch wait.
    assert_eq!(sample("broker", "count"), 2.0);
    assert_eq!(sample("prefetch", "count"), 2.0);
    assert_eq!(sample("rate_limit", "count"), 2.0);
}
