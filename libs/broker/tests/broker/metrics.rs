//! `shopfds_tasks_total` against what happened: after a known set of tasks (successes,
//! permanent failures, retries that then succeed, an unknown task, an expired message) the
//! counters scraped from `/metrics` are exactly those, outcome by outcome, dead_lettered
//! included. Task names are unique per run, so other tests in this binary (same registry) do
//! not disturb the counts.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Map, Value, json};
use shopfds_broker::{Registry, RetryPolicy, TaskError, TaskOptions};
use shopfds_protocol::{TaskMessage, TaskState};
use shopfds_telemetry::ops::{self, Readiness};
use tokio_util::sync::CancellationToken;

use super::helpers::{QUEUE, WAIT, spawn_worker, wait_for_depth};

/// `(task, outcome)` → value of every `shopfds_tasks_total{queue="default"}` sample whose task
/// name ends with `suffix`.
fn tasks_total(page: &str, suffix: &str) -> BTreeMap<(String, String), u64> {
    let mut counts = BTreeMap::new();
    for line in page.lines() {
        let Some(rest) = line.strip_prefix("shopfds_tasks_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        let labels: BTreeMap<&str, &str> = labels
            .split(',')
            .filter_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                Some((k, v.trim_matches('"')))
            })
            .collect();
        if labels.get("queue") == Some(&QUEUE)
            && let (Some(task), Some(outcome)) = (labels.get("task"), labels.get("outcome"))
            && task.ends_with(suffix)
        {
            counts.insert(
                ((*task).to_owned(), (*outcome).to_owned()),
                value.trim().parse().unwrap(),
            );
        }
    }
    counts
}

#[tokio::test]
async fn the_outcome_counters_match_a_known_set_of_tasks() {
    let run = uuid::Uuid::new_v4().simple().to_string();
    let name = |what: &str| format!("{what}_{run}");
    let mut registry = Registry::new();
    registry.register(&name("fine"), TaskOptions::default(), |_| async {
        Ok(json!("ok"))
    });
    registry.register(&name("broken"), TaskOptions::default(), |_| async {
        Err(TaskError::permanent("400: address unknown"))
    });
    let once_more = TaskOptions {
        max_retries: 1,
        retry: RetryPolicy::Fixed(Duration::from_secs(1)),
        ..TaskOptions::default()
    };
    registry.register(&name("flaky"), once_more, |ctx| async move {
        if ctx.message.headers.retries == 0 {
            Err(TaskError::transient("SMTP 451 try later"))
        } else {
            Ok(Value::Null)
        }
    });
    registry.register(&name("late"), TaskOptions::default(), |_| async {
        Ok(Value::Null)
    });
    let tw = spawn_worker(registry).await;

    // The worker's `/metrics`, served as every binary serves it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_url = format!("http://{}/metrics", listener.local_addr().unwrap());
    let stop_ops = CancellationToken::new();
    tokio::spawn(ops::serve(listener, Readiness::new(), stop_ops.clone()));
    let _stop_ops = stop_ops.drop_guard();

    let (fine, broken, flaky) = (5, 3, 2);
    let mut expect_final = Vec::new();
    for _ in 0..fine {
        let msg = tw.send(TaskMessage::new(name("fine"), Map::new())).await;
        expect_final.push((msg.id().to_owned(), TaskState::Success));
    }
    for _ in 0..broken {
        let msg = tw.send(TaskMessage::new(name("broken"), Map::new())).await;
        expect_final.push((msg.id().to_owned(), TaskState::Failure));
    }
    for _ in 0..flaky {
        let msg = tw.send(TaskMessage::new(name("flaky"), Map::new())).await;
        expect_final.push((msg.id().to_owned(), TaskState::Success));
    }
    let unknown = tw
        .send(TaskMessage::new(name("unregistered"), Map::new()))
        .await;
    expect_final.push((unknown.id().to_owned(), TaskState::Rejected));
    let mut expired = TaskMessage::new(name("late"), Map::new());
    expired.headers.expires = Some(chrono::Utc::now() - chrono::Duration::seconds(5));
    let expired = tw.send(expired).await;
    expect_final.push((expired.id().to_owned(), TaskState::Revoked));

    for (id, state) in &expect_final {
        tw.wait_for_state(id, *state).await;
    }
    // Every failed and rejected message reached the dead-letter queue.
    let dead = wait_for_depth(&tw.vhost, "failed.default", |n| n > broken).await;
    assert_eq!(dead, broken + 1);

    let expected: BTreeMap<(String, String), u64> = [
        ("fine", "succeeded", fine),
        ("broken", "failed", broken),
        ("broken", "dead_lettered", broken),
        ("flaky", "retried", flaky),
        ("flaky", "succeeded", flaky),
        ("unregistered", "rejected", 1),
        ("unregistered", "dead_lettered", 1),
        ("late", "revoked", 1),
    ]
    .into_iter()
    .map(|(task, outcome, n)| ((name(task), outcome.to_owned()), u64::from(n)))
    .collect();
    // The last count lands just after its message is settled: polled, then compared exactly.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let page = reqwest::get(&metrics_url)
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let counted = tasks_total(&page, &run);
        if counted == expected || tokio::time::Instant::now() >= deadline {
            assert_eq!(counted, expected);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
