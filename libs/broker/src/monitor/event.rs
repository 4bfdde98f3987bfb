//! The events a worker sends, as a stock Celery 5 worker sends them: one JSON object per event on
//! the `celeryev` topic exchange, routed by its type with dashes as dots (`task-succeeded` →
//! `task.succeeded`), with `hostname`, `utcoffset`, `pid`, `clock`, `timestamp` and `type` on
//! each (`celery/events/dispatcher.py`), and the fields of each type as `celery/worker/request.py`
//! and `celery/worker/heartbeat.py` fill them. Pure builders: what they produce is compared,
//! field by field, with the events of a stock worker in `tests/broker/monitor.rs`.
//!
//! | type | fields besides the common ones |
//! |---|---|
//! | worker-online, worker-heartbeat, worker-offline | freq, active, processed, loadavg, sw_ident, sw_ver, sw_sys |
//! | task-received | uuid, name, args, kwargs (Python reprs), root_id, parent_id, retries, eta, expires |
//! | task-started | uuid, pid |
//! | task-succeeded | uuid, result (repr), runtime (seconds) |
//! | task-failed, task-retried | uuid, exception, traceback |
//! | task-rejected | uuid, requeue |
//! | task-revoked | uuid, terminated, signum, expired |

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};
use shopfds_protocol::TaskMessage;
use shopfds_protocol::pyjson;

/// The exchange events are published on (Celery's `event_exchange`): topic, durable.
pub const EXCHANGE: &str = "celeryev";

/// How often a worker says it is alive, in seconds (Celery's `heartbeat` freq).
pub const HEARTBEAT_SECS: f64 = 2.0;

/// What this worker sends as `sw_ident`: monitors show it beside the version.
pub const SW_IDENT: &str = "shopfds-rust";

/// Who sends: the fields every event of this worker carries.
#[derive(Debug, Clone)]
pub struct Sender {
    pub hostname: String,
    pub pid: u32,
    /// Hours west of UTC, as Celery's `utcoffset()` (0 on a UTC host).
    pub utcoffset: i64,
}

impl Sender {
    pub fn new(hostname: &str) -> Sender {
        let east = chrono::Local::now().offset().local_minus_utc();
        Sender {
            hostname: hostname.to_owned(),
            pid: std::process::id(),
            utcoffset: -i64::from(east) / 3600,
        }
    }

    /// The event `kind` with `fields`, stamped with the sender, `clock` and `now`.
    pub fn event(&self, kind: &str, clock: u64, now: DateTime<Utc>, fields: Value) -> Value {
        let mut event = match fields {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        event.insert("hostname".into(), json!(self.hostname));
        event.insert("utcoffset".into(), json!(self.utcoffset));
        event.insert("pid".into(), json!(self.pid));
        event.insert("clock".into(), json!(clock));
        event.insert("timestamp".into(), json!(seconds(now)));
        event.insert("type".into(), json!(kind));
        Value::Object(event)
    }
}

/// The routing key of an event type: `task-succeeded` → `task.succeeded`.
pub fn routing_key(kind: &str) -> String {
    kind.replace('-', ".")
}

/// A worker's liveness report: `worker-online`, `worker-heartbeat` or `worker-offline`.
pub fn worker(active: usize, processed: u64, loadavg: [f64; 3]) -> Value {
    json!({
        "freq": HEARTBEAT_SECS,
        "active": active,
        "processed": processed,
        "loadavg": loadavg,
        "sw_ident": SW_IDENT,
        "sw_ver": env!("CARGO_PKG_VERSION"),
        "sw_sys": std::env::consts::OS.replace("linux", "Linux"),
    })
}

/// `task-received`, with the message's own reprs of its arguments (`argsrepr`/`kwargsrepr`),
/// else reprs made here.
pub fn received(msg: &TaskMessage) -> Value {
    let h = &msg.headers;
    let args = h
        .argsrepr
        .clone()
        .unwrap_or_else(|| pyjson::repr_args(&msg.args));
    let kwargs = h
        .kwargsrepr
        .clone()
        .unwrap_or_else(|| pyjson::repr(&Value::Object(msg.kwargs.clone())));
    json!({
        "uuid": h.id,
        "name": h.task,
        "args": args,
        "kwargs": kwargs,
        "root_id": h.root_id,
        "parent_id": h.parent_id,
        "retries": h.retries,
        "eta": h.eta.map(iso),
        "expires": h.expires.map(iso),
    })
}

pub fn started(id: &str, pid: u32) -> Value {
    json!({"uuid": id, "pid": pid})
}

pub fn succeeded(id: &str, result: &Value, runtime_secs: f64) -> Value {
    json!({"uuid": id, "result": pyjson::repr(result), "runtime": runtime_secs})
}

/// `task-failed` or `task-retried`: the exception as `Type('message')` and a traceback-shaped
/// text (a Rust task has no Python traceback; the reason is what there is).
pub fn failure(id: &str, exc_type: &str, message: &str) -> Value {
    let exception = format!("{exc_type}({})", pyjson::repr(&json!(message)));
    json!({
        "uuid": id,
        "exception": exception,
        "traceback": format!("{exc_type}: {message}\n"),
    })
}

pub fn rejected(id: &str, requeue: bool) -> Value {
    json!({"uuid": id, "requeue": requeue})
}

pub fn revoked(id: &str, terminated: bool, expired: bool) -> Value {
    let signum = if terminated { json!(15) } else { Value::Null };
    json!({"uuid": id, "terminated": terminated, "signum": signum, "expired": expired})
}

/// Seconds since the epoch, as Python's `time.time()`.
pub fn seconds(at: DateTime<Utc>) -> f64 {
    // Precision of a float of seconds, as Celery's own timestamps.
    at.timestamp_micros() as f64 / 1e6
}

fn iso(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, false)
}

/// The 1, 5 and 15 minute load averages, rounded to two places as Celery's `load_average()`;
/// zeros where `/proc/loadavg` cannot be read.
pub fn loadavg() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut values = text.split_whitespace().take(3).map(|v| {
        v.parse::<f64>()
            .map_or(0.0, |f| (f * 100.0).round() / 100.0)
    });
    [
        values.next().unwrap_or(0.0),
        values.next().unwrap_or(0.0),
        values.next().unwrap_or(0.0),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_carry_the_common_fields_and_their_type() {
        let sender = Sender {
            hostname: "email@h".into(),
            pid: 7,
            utcoffset: 0,
        };
        let now = DateTime::from_timestamp(1_700_000_000, 250_000_000).unwrap_or_default();
        let e = sender.event("task-started", 12, now, started("abc", 7));
        assert_eq!(
            e,
            json!({"uuid": "abc", "pid": 7, "hostname": "email@h", "utcoffset": 0,
                   "clock": 12, "timestamp": 1_700_000_000.25, "type": "task-started"})
        );
        assert_eq!(routing_key("task-started"), "task.started");
        assert_eq!(routing_key("worker-heartbeat"), "worker.heartbeat");
    }

    #[test]
    fn a_failure_reads_as_a_python_exception() {
        let e = failure("abc", "SmtpError", "it's down");
        assert_eq!(e["exception"], "SmtpError(\"it's down\")");
        assert_eq!(e["traceback"], "SmtpError: it's down\n");
    }
}
