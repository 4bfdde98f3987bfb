//! The remote-control commands a worker answers on its pidbox ([`super::pidbox`]), with the
//! replies a stock Celery 5 worker gives (`celery/worker/control.py`); each reply is compared
//! with a stock worker's in `tests/broker/monitor.rs`.
//!
//! | command | does | reply |
//! |---|---|---|
//! | `ping` | – | `{"ok": "pong"}` |
//! | `stats` | – | total, pid, clock, uptime, pool, broker, prefetch_count, rusage |
//! | `active`, `reserved` | – | running tasks; tasks waiting for their rate-limit turn |
//! | `scheduled` | – | `[]`: an eta task waits in the broker's delay tree, never in a worker |
//! | `registered` | – | task names (with `taskinfoitems`, e.g. `rate_limit`) |
//! | `active_queues` | – | the queues consumed, as kombu describes them |
//! | `conf` | – | the worker's settings under Celery's names |
//! | `revoked`, `query_task`, `clock`, `hello` | – | as Celery |
//! | `revoke` (`terminate`) | stores the revoke ([`super::revoke`]); cancels running ones | `ok` |
//! | `terminate` | `revoke` with terminate | `ok` |
//! | `rate_limit` | the task's rate from now on | `ok` / `unknown task` / invalid |
//! | `time_limit` | the task's soft and hard limits from now on | `ok` / `unknown task` |
//! | `add_consumer`, `cancel_consumer` | starts / stops consuming a queue | `ok` |
//! | `pool_grow`, `pool_shrink` | more / fewer tasks at once | `ok` |
//! | `enable_events`, `disable_events` | task events on / off | `ok` |
//! | `heartbeat` | a heartbeat now | `null` |
//! | `shutdown` | a graceful stop, as SIGTERM | none (the worker is leaving) |
//!
//! An unknown command is answered `{"error": "KeyError('<name>')"}`, as kombu answers it.

use std::time::Duration;

use serde_json::{Map, Value, json};

use super::Monitor;
use crate::runtime::RateLimit;

/// What a command asks the worker to do besides replying.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    None,
    AddConsumer(String),
    CancelConsumer(String),
    Shutdown,
}

fn ok(text: impl Into<String>) -> Value {
    json!({"ok": text.into()})
}

fn nok(text: impl Into<String>) -> Value {
    json!({"error": text.into()})
}

/// Runs `method` with `arguments`; the reply (`None`: no reply at all) and what else to do.
pub async fn handle(
    monitor: &Monitor,
    method: &str,
    args: &Map<String, Value>,
) -> (Option<Value>, Effect) {
    let reply = match method {
        "ping" => ok("pong"),
        "stats" => monitor.stats(),
        "active" | "dump_active" => {
            let safe = args.get("safe").and_then(Value::as_bool).unwrap_or(false);
            json!(monitor.inventory.requests(true, &monitor.hostname, safe))
        }
        "reserved" | "dump_reserved" => {
            json!(monitor.inventory.requests(false, &monitor.hostname, false))
        }
        "scheduled" | "dump_schedule" => json!([]),
        "registered" | "dump_tasks" => json!(monitor.registered(args.get("taskinfoitems"))),
        "active_queues" => json!(monitor.active_queues()),
        "conf" | "dump_conf" => monitor.conf(),
        "revoked" | "dump_revoked" => json!(monitor.revoked.ids()),
        "clock" => json!({"clock": monitor.clock.value()}),
        "query_task" => monitor
            .inventory
            .query(&ids(args.get("ids")), &monitor.hostname),
        "hello" => {
            let from = args.get("from_node").and_then(Value::as_str).unwrap_or("");
            if from == monitor.hostname {
                return (Some(Value::Null), Effect::None);
            }
            if let Some(Value::Object(theirs)) = args.get("revoked") {
                let ids: Vec<String> = theirs.keys().cloned().collect();
                if !ids.is_empty() {
                    monitor.revoked.add(&ids).await;
                }
            }
            json!({"revoked": monitor.revoked.as_limited_set(), "clock": monitor.clock.forward()})
        }
        "revoke" | "terminate" => {
            let ids = ids(args.get("task_id"));
            let terminate = method == "terminate"
                || args
                    .get("terminate")
                    .is_some_and(|t| t.as_bool().unwrap_or(false));
            return revoke(monitor, ids, terminate).await;
        }
        "rate_limit" => rate_limit(monitor, args),
        "time_limit" => time_limit(monitor, args),
        "add_consumer" => match args.get("queue").and_then(Value::as_str) {
            Some(queue) => {
                return (
                    Some(ok(format!("add consumer {queue}"))),
                    Effect::AddConsumer(queue.to_owned()),
                );
            }
            None => nok("missing argument: queue"),
        },
        "cancel_consumer" => match args.get("queue").and_then(Value::as_str) {
            Some(queue) => {
                return (
                    Some(ok(format!("no longer consuming from {queue}"))),
                    Effect::CancelConsumer(queue.to_owned()),
                );
            }
            None => nok("missing argument: queue"),
        },
        "pool_grow" => {
            monitor.pool.grow(count(args));
            ok("pool will grow")
        }
        "pool_shrink" => {
            monitor.pool.shrink(count(args));
            ok("pool will shrink")
        }
        "enable_events" => {
            if monitor.events.set_tasks_enabled(true) {
                tracing::info!("task events enabled by remote");
                ok("task events enabled")
            } else {
                ok("task events already enabled")
            }
        }
        "disable_events" => {
            if monitor.events.set_tasks_enabled(false) {
                tracing::info!("task events disabled by remote");
                ok("task events disabled")
            } else {
                ok("task events already disabled")
            }
        }
        "heartbeat" => {
            monitor.heartbeat("worker-heartbeat");
            Value::Null
        }
        "shutdown" => {
            let msg = args
                .get("msg")
                .and_then(Value::as_str)
                .unwrap_or("Got shutdown from remote");
            tracing::warn!(msg, "shutdown requested by remote control");
            return (None, Effect::Shutdown);
        }
        other => nok(format!("KeyError('{other}')")),
    };
    (Some(reply), Effect::None)
}

async fn revoke(monitor: &Monitor, ids: Vec<String>, terminate: bool) -> (Option<Value>, Effect) {
    if ids.is_empty() {
        return (Some(nok("missing argument: task_id")), Effect::None);
    }
    monitor.revoked.add(&ids).await;
    if terminate {
        let terminated = monitor.inventory.terminate(&ids);
        let reply = if terminated.is_empty() {
            ok("terminate: tasks unknown")
        } else {
            ok(format!("terminate: {}", terminated.join(", ")))
        };
        return (Some(reply), Effect::None);
    }
    tracing::info!(ids = ?ids, "tasks flagged as revoked");
    let set: Vec<String> = ids.iter().map(|id| format!("'{id}'")).collect();
    (
        Some(ok(format!(
            "tasks {{{}}} flagged as revoked",
            set.join(", ")
        ))),
        Effect::None,
    )
}

fn rate_limit(monitor: &Monitor, args: &Map<String, Value>) -> Value {
    let name = args.get("task_name").and_then(Value::as_str).unwrap_or("");
    let rate = match args.get("rate_limit") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    };
    let limit = if rate.is_empty() || rate == "0" {
        None
    } else {
        match rate.parse::<RateLimit>() {
            Ok(limit) => Some(limit),
            Err(e) => return nok(format!("Invalid rate limit string: ValueError({e:?})")),
        }
    };
    let Some(limiter) = monitor.limiters.get(name) else {
        tracing::error!(task = name, "rate limit for an unknown task");
        return nok("unknown task");
    };
    limiter.set(limit.map(|l| l.interval()));
    match limit {
        None => {
            tracing::info!(task = name, "rate limit disabled");
            ok("rate limit disabled successfully")
        }
        Some(_) => {
            tracing::info!(task = name, rate = %rate, "new rate limit");
            ok("new rate limit set successfully")
        }
    }
}

fn time_limit(monitor: &Monitor, args: &Map<String, Value>) -> Value {
    let name = args.get("task_name").and_then(Value::as_str).unwrap_or("");
    if !monitor.registry.names().any(|n| n == name) {
        tracing::error!(task = name, "time limit for an unknown task");
        return nok("unknown task");
    }
    let secs = |key: &str| {
        args.get(key)
            .and_then(Value::as_f64)
            .filter(|s| s.is_finite() && *s > 0.0)
            .map(|s| {
                Duration::from_secs_f64(s.min(crate::runtime::process::LONGEST_LIMIT.as_secs_f64()))
            })
    };
    let (soft, hard) = (secs("soft"), secs("hard"));
    if let Ok(mut limits) = monitor.time_limits.write() {
        limits.insert(name.to_owned(), (soft, hard));
    }
    tracing::info!(task = name, ?soft, ?hard, "new time limits");
    ok("time limits set successfully")
}

/// A task id or a list of them.
pub(crate) fn ids(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::String(id)) => vec![id.clone()],
        Some(Value::Array(ids)) => ids
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

/// `n` of pool_grow/pool_shrink: 1 by default, at most 10,000 at once.
fn count(args: &Map<String, Value>) -> usize {
    args.get("n")
        .and_then(|n| {
            n.as_u64()
                .or_else(|| n.as_str().and_then(|s| s.parse().ok()))
        })
        .map_or(1, |n| usize::try_from(n.min(10_000)).unwrap_or(1))
}
