//! The task meta Celery's key-value and RPC result backends store and send, built from a
//! [`StateChange`] and read back into a [`TaskRecord`]. No I/O: both directions are unit tests.
//!
//! The format is what stock Celery 5.5.3 writes with `result_extended=True` (checked against a
//! stock worker on Redis), keys in its order:
//! `{"status", "result", "traceback", "children", "date_done", "name", "args", "kwargs",
//! "worker", "retries", "queue", "task_id"}`, written as Python's `json.dumps` writes it.
//! - `result`: SUCCESS → the return value; PROGRESS → the meta dict `{current, total, message}`
//!   (what `AsyncResult.info` returns); STARTED → `{pid, hostname}`; RETRY, FAILURE, REVOKED →
//!   an exception dict `{"exc_type", "exc_message": [message], "exc_module"}` that a stock client
//!   turns into a raised exception (Celery's own names, e.g. `ChordError`, `NotRegistered`, come
//!   from `celery.exceptions`; ours, `PermanentError` and `TransientError`, have
//!   `exc_module: null`, so the client makes an exception class of that name).
//! - REJECTED (dead-lettered: unreadable message, unknown task) is not a state Celery treats as
//!   ready, so a stock client would wait for it forever: it is stored as `FAILURE` with the
//!   exception, plus `"shopfds_state": "REJECTED"`, which [`to_record`] reads back.
//! - `date_done` is set for ready states only, as Python's `isoformat()` writes a UTC time.
//! - `args`, `kwargs` and `worker` are `null` when the runtime does not pass them (a PROGRESS
//!   report carries neither), and `group_id` / `parent_id` are not written (the state change
//!   does not carry them).

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};
use shopfds_broker::StateChange;
use shopfds_protocol::TaskState;
use shopfds_protocol::result::TaskRecord;

/// The extra key that keeps our REJECTED apart from Celery's FAILURE.
pub const SHOPFDS_STATE_KEY: &str = "shopfds_state";

/// The `status` Celery stores for `state`.
pub fn celery_status(state: TaskState) -> &'static str {
    match state {
        TaskState::Rejected => TaskState::Failure.as_str(),
        other => other.as_str(),
    }
}

/// Whether Celery's client treats `status` as final (its `READY_STATES`).
pub fn is_ready_status(status: &str) -> bool {
    matches!(status, "SUCCESS" | "FAILURE" | "REVOKED")
}

/// The `result` field Celery stores for this change.
pub fn encode_result(change: &StateChange) -> Value {
    let update = &change.update;
    match update.state {
        TaskState::Success => update.result.clone().unwrap_or(Value::Null),
        TaskState::Progress => update.progress.clone().unwrap_or(Value::Null),
        TaskState::Started => json!({
            "pid": std::process::id(),
            "hostname": change.worker.as_deref().unwrap_or_default(),
        }),
        TaskState::Retry | TaskState::Failure | TaskState::Revoked | TaskState::Rejected => {
            exception_dict(update.error.as_ref(), update.state)
        }
        TaskState::Pending | TaskState::Received => update.result.clone().unwrap_or(Value::Null),
    }
}

/// The full meta dict (Celery's `_get_result_meta` with `result_extended`, plus `task_id`).
pub fn meta(change: &StateChange, now: DateTime<Utc>) -> Value {
    let update = &change.update;
    let mut meta = Map::new();
    meta.insert("status".into(), celery_status(update.state).into());
    meta.insert("result".into(), encode_result(change));
    meta.insert("traceback".into(), Value::Null);
    meta.insert("children".into(), Value::Array(Vec::new()));
    let done = update.state.is_ready().then(|| isoformat(now));
    meta.insert("date_done".into(), done.map_or(Value::Null, Value::String));
    meta.insert("name".into(), non_empty(&update.name));
    let message = change.message.as_deref();
    meta.insert(
        "args".into(),
        message.map_or(Value::Null, |m| Value::Array(m.args.clone())),
    );
    meta.insert(
        "kwargs".into(),
        message.map_or(Value::Null, |m| Value::Object(m.kwargs.clone())),
    );
    meta.insert(
        "worker".into(),
        change.worker.as_deref().map_or(Value::Null, Value::from),
    );
    meta.insert("retries".into(), update.retries.into());
    meta.insert("queue".into(), non_empty(&update.queue));
    if update.state == TaskState::Rejected {
        meta.insert(SHOPFDS_STATE_KEY.into(), update.state.as_str().into());
    }
    meta.insert("task_id".into(), update.task_id.clone().into());
    Value::Object(meta)
}

/// The meta as bytes, as Python's `json.dumps` writes them.
pub fn encode(value: &Value) -> Vec<u8> {
    shopfds_protocol::pyjson::to_vec(value).unwrap_or_default()
}

/// Celery's `{"exc_type", "exc_message", "exc_module"}` from our `{"exc_type", "exc_message"}`.
pub fn exception_dict(error: Option<&Value>, state: TaskState) -> Value {
    let default_type = match state {
        TaskState::Revoked => "TaskRevokedError",
        TaskState::Retry => "TransientError",
        _ => "PermanentError",
    };
    let exc_type = error
        .and_then(|e| e.get("exc_type"))
        .and_then(Value::as_str)
        .unwrap_or(default_type)
        .to_owned();
    let message = match error.and_then(|e| e.get("exc_message")) {
        Some(Value::Array(args)) => args.clone(),
        Some(Value::Null) | None => Vec::new(),
        Some(other) => vec![other.clone()],
    };
    json!({
        "exc_type": exc_type,
        "exc_message": message,
        "exc_module": exception_module(&exc_type),
    })
}

/// Where a stock client finds the exception class: Celery's and kombu's own, else `null` (the
/// client creates a class of that name).
fn exception_module(exc_type: &str) -> Value {
    match exc_type {
        "ChordError"
        | "NotRegistered"
        | "TaskRevokedError"
        | "TimeLimitExceeded"
        | "SoftTimeLimitExceeded"
        | "Retry"
        | "Reject" => "celery.exceptions".into(),
        "ContentDisallowed" => "kombu.exceptions".into(),
        _ => Value::Null,
    }
}

/// Our `{"exc_type", "exc_message"}` (a string) from Celery's exception dict.
pub fn error_from_exception(result: &Value) -> Value {
    let exc_type = result
        .get("exc_type")
        .and_then(Value::as_str)
        .unwrap_or("Exception");
    let message = match result.get("exc_message") {
        Some(Value::Array(args)) if args.len() == 1 => text(&args[0]),
        Some(Value::Array(args)) => args.iter().map(text).collect::<Vec<_>>().join(", "),
        Some(other) => text(other),
        None => String::new(),
    };
    json!({"exc_type": exc_type, "exc_message": message})
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The stored meta as `GET /v1/tasks/{id}` shows it; `ttl` is what is left of the key's life.
/// `None` when the bytes are not a Celery meta dict.
pub fn to_record(
    task_id: &str,
    stored: &[u8],
    ttl: Option<chrono::Duration>,
    now: DateTime<Utc>,
) -> Option<TaskRecord> {
    let meta: Value = serde_json::from_slice(stored).ok()?;
    let status = meta.get("status")?.as_str()?;
    let state = meta
        .get(SHOPFDS_STATE_KEY)
        .and_then(Value::as_str)
        .unwrap_or(status);
    // A custom state a Python task set with update_state reads as PROGRESS with its meta.
    let state: TaskState = state.parse().unwrap_or(TaskState::Progress);
    let result = meta.get("result").cloned().unwrap_or(Value::Null);
    let (progress, result, error) = match state {
        TaskState::Success => (None, Some(result), None),
        TaskState::Progress => (Some(result), None, None),
        TaskState::Retry | TaskState::Failure | TaskState::Revoked | TaskState::Rejected => {
            (None, None, Some(error_from_exception(&result)))
        }
        _ => (None, None, None),
    };
    let updated_at = meta
        .get("date_done")
        .and_then(Value::as_str)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map_or(now, |t| t.with_timezone(&Utc));
    let string = |key: &str| {
        meta.get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let retries = meta
        .get("retries")
        .and_then(Value::as_i64)
        .and_then(|r| i32::try_from(r).ok())
        .unwrap_or(0);
    Some(TaskRecord {
        task_id: meta
            .get("task_id")
            .and_then(Value::as_str)
            .unwrap_or(task_id)
            .to_owned(),
        name: string("name"),
        queue: string("queue"),
        state,
        retries,
        progress,
        result,
        error,
        created_at: updated_at,
        updated_at,
        expires_at: ttl.and_then(|ttl| now.checked_add_signed(ttl)),
    })
}

/// Python's `datetime.isoformat()` of an aware UTC time: microseconds unless they are zero.
pub fn isoformat(t: DateTime<Utc>) -> String {
    let format = if t.timestamp_subsec_micros() == 0 {
        SecondsFormat::Secs
    } else {
        SecondsFormat::Micros
    };
    t.to_rfc3339_opts(format, false)
}

fn non_empty(s: &str) -> Value {
    if s.is_empty() {
        Value::Null
    } else {
        Value::String(s.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use shopfds_protocol::result::TaskStateUpdate;

    use super::*;

    fn change(state: TaskState) -> StateChange {
        let mut change = StateChange::new(TaskStateUpdate {
            task_id: "t-1".into(),
            name: "add".into(),
            queue: "default".into(),
            state,
            retries: 1,
            progress: Some(json!({"current": 1, "total": 2, "message": "half"})),
            result: Some(json!(5)),
            error: Some(json!({"exc_type": "PermanentError", "exc_message": "it broke"})),
            expires_at: None,
        });
        let mut message = shopfds_protocol::TaskMessage::new("add", serde_json::Map::new());
        message.args = vec![json!(2), json!(3)];
        change.message = Some(std::sync::Arc::new(message));
        change.worker = Some("w@host".into());
        change
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-30T00:50:34.794138Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap()
    }

    #[test]
    fn success_is_written_as_a_stock_worker_writes_it() {
        let bytes = encode(&meta(&change(TaskState::Success), now()));
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            r#"{"status": "SUCCESS", "result": 5, "traceback": null, "children": [], "date_done": "2026-11-30T00:50:34.794138+00:00", "name": "add", "args": [2, 3], "kwargs": {}, "worker": "w@host", "retries": 1, "queue": "default", "task_id": "t-1"}"#
        );
    }

    #[test]
    fn failure_carries_an_exception_dict_and_reads_back() {
        let m = meta(&change(TaskState::Failure), now());
        assert_eq!(
            m["result"],
            json!({"exc_type": "PermanentError", "exc_message": ["it broke"], "exc_module": null})
        );
        let record = to_record("t-1", &encode(&m), None, now()).unwrap();
        assert_eq!(record.state, TaskState::Failure);
        assert_eq!(
            record.error,
            Some(json!({"exc_type": "PermanentError", "exc_message": "it broke"}))
        );
        assert_eq!((record.name.as_str(), record.retries), ("add", 1));
    }

    #[test]
    fn progress_meta_is_the_result_and_not_ready() {
        let m = meta(&change(TaskState::Progress), now());
        assert_eq!(m["status"], "PROGRESS");
        assert_eq!(m["date_done"], Value::Null);
        assert_eq!(m["result"]["message"], "half");
        let record = to_record("t-1", &encode(&m), None, now()).unwrap();
        assert_eq!(record.progress, Some(m["result"].clone()));
    }

    #[test]
    fn rejected_is_a_failure_to_celery_and_rejected_to_us() {
        let mut c = change(TaskState::Rejected);
        c.update.error = Some(json!({"exc_type": "NotRegistered", "exc_message": "nope"}));
        let m = meta(&c, now());
        assert_eq!(m["status"], "FAILURE");
        assert_eq!(m["result"]["exc_module"], "celery.exceptions");
        let record = to_record("t-1", &encode(&m), None, now()).unwrap();
        assert_eq!(record.state, TaskState::Rejected);
    }

    #[test]
    fn a_custom_python_state_reads_as_progress() {
        let stored = br#"{"status": "UPLOADING", "result": {"done": 3}, "task_id": "x"}"#;
        let record = to_record("x", stored, None, now()).unwrap();
        assert_eq!(record.state, TaskState::Progress);
        assert_eq!(record.progress, Some(json!({"done": 3})));
        assert!(to_record("x", b"not json", None, now()).is_none());
    }
}
