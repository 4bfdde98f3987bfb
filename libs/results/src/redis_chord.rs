//! Chords under the Redis backend, counted exactly as Celery's `RedisBackend.on_chord_part_return`
//! counts them, so one chord's parts may run on Rust and stock Celery workers alike.
//!
//! The keys, all `celery-taskset-meta-<group id>` + suffix, kept for the backend's expiry:
//! - `.j`: a sorted set of the parts' encoded results, `[1, "<task id>", "<state>", <result>]`
//!   (Python `json.dumps` spelling; a failed part's result is the exception dict), scored by the
//!   part's `group_index` (`+inf` when it has none), so `ZRANGE` gives header order;
//! - `.s`: the chord size, set by a stock client (`set_chord_size`) before it publishes the
//!   last part, or here from the body's `chord_size` (our producer) when absent;
//! - `.t`: a correction Celery adds to the size (replaced header tasks); read, never written.
//!
//! What counting does (one Lua script, so concurrent parts on any worker see one order):
//! - a part whose task id is already in `.j` (a redelivery) is not counted again;
//! - when `ZCOUNT .j == .s + .t`, the part that made it so completes the chord: when every
//!   part succeeded, the body is published with the results in header order, then the three keys
//!   are deleted; when the publish fails, this part's entry is removed again (not counted) and
//!   the runtime requeues the message;
//! - a failed part is added with state FAILURE (so a stock worker finishing the chord fails it,
//!   as Celery does); the first failed part of a chord is the one [`part_failed`] answers `true`
//!   for (the runtime then records the body's FAILURE and calls its errbacks);
//! - when the chord completes with a failed part in `.j` (one that may have failed on a stock
//!   worker), the body is not published; its FAILURE (`ChordError`) is recorded, in case no Rust
//!   worker did, and the keys are deleted.
//!
//! Not supported: a header whose members are themselves groups (Celery then saves a
//! `GroupResult` and joins it); such a chord completes with the flat list of results. And
//! Celery's `result_chord_ordered=False` transport option (a list instead of the sorted set):
//! clients and workers must keep Celery's default.

use chrono::Utc;
use serde_json::{Value, json};
use shopfds_broker::StateChange;
use shopfds_broker::runtime::backend::{BackendError, ChordProgress, PublishBody};
use shopfds_protocol::result::TaskStateUpdate;
use shopfds_protocol::{TaskMessage, TaskState};

use crate::celery_meta;
use crate::redis::{NAME, RedisBackend, group_key};

/// `KEYS`: `.j`, `.t`, `.s`. `ARGV`: the encoded entry, its score, the part's task id, seconds to
/// keep the keys, the size from the body (or ""). Returns `{code, readycount, total, failed}`
/// then, when the chord is complete, `.j`'s entries in order. `code`: 0 already counted, 1
/// counted, 2 complete. `total` is -1 while the size is unknown; `failed` is "1" when a failed
/// part was counted before this one.
pub(crate) const CHORD_SCRIPT: &str = r#"
local prefix = '[1, "' .. ARGV[3] .. '"'
local failed = '0'
for _, entry in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if string.sub(entry, 1, #prefix) == prefix then
    return {'0', '0', '-1', failed}
  end
  local state = string.match(entry, '^%[1, "[^"]*", "(%u+)"')
  if state == 'FAILURE' or state == 'REVOKED' then failed = '1' end
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
local ready = redis.call('ZCOUNT', KEYS[1], '-inf', '+inf')
local diff = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
local size = redis.call('GET', KEYS[3])
if (not size) and ARGV[5] ~= '' then
  redis.call('SET', KEYS[3], ARGV[5])
  size = ARGV[5]
end
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('EXPIRE', KEYS[3], ARGV[4])
local total = -1
if size then total = (tonumber(size) or 0) + diff end
if total >= 0 and ready == total then
  local out = {'2', tostring(ready), tostring(total), failed}
  for _, entry in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
    table.insert(out, entry)
  end
  return out
end
return {'1', tostring(ready), tostring(total), failed}
"#;

/// What the script answered.
struct Counted {
    code: u8,
    ready: usize,
    total: Option<usize>,
    failed_before: bool,
    entries: Vec<Vec<u8>>,
}

/// A part's entry in `.j`, as Celery encodes it.
fn entry(task_id: &str, state: TaskState, result: &Value) -> Vec<u8> {
    celery_meta::encode(&json!([1, task_id, state.as_str(), result]))
}

async fn count(
    backend: &RedisBackend,
    msg: &TaskMessage,
    group_id: &str,
    encoded: &[u8],
) -> Result<Counted, BackendError> {
    let score = msg
        .headers
        .group_index
        .map_or_else(|| "+inf".to_owned(), |i| i.to_string());
    let size = msg
        .embed
        .chord
        .as_ref()
        .and_then(|body| body.chord_size())
        .map(|n| n.to_string())
        .unwrap_or_default();
    let mut conn = backend.conn.clone();
    let answer: Vec<Vec<u8>> = backend
        .chord_script
        .key(group_key(group_id, ".j"))
        .key(group_key(group_id, ".t"))
        .key(group_key(group_id, ".s"))
        .arg(encoded)
        .arg(score)
        .arg(msg.id())
        .arg(backend.default_ttl_secs())
        .arg(size)
        .invoke_async(&mut conn)
        .await
        .map_err(|e| BackendError::new(NAME, e))?;
    let mut fields = answer.into_iter();
    let mut number = || {
        fields
            .next()
            .and_then(|f| String::from_utf8(f).ok())
            .and_then(|f| f.parse::<i64>().ok())
            .ok_or_else(|| BackendError::new(NAME, "unexpected answer from the chord script"))
    };
    let code = u8::try_from(number()?).unwrap_or(0);
    let ready = usize::try_from(number()?).unwrap_or(0);
    let total = usize::try_from(number()?).ok();
    let failed_before = number()? == 1;
    Ok(Counted {
        code,
        ready,
        total,
        failed_before,
        entries: fields.collect(),
    })
}

async fn delete_keys(backend: &RedisBackend, group_id: &str) {
    let mut conn = backend.conn.clone();
    let deleted: Result<(), _> = redis::cmd("DEL")
        .arg(group_key(group_id, ".j"))
        .arg(group_key(group_id, ".t"))
        .arg(group_key(group_id, ".s"))
        .query_async(&mut conn)
        .await;
    if let Err(e) = deleted {
        // They expire anyway.
        tracing::warn!(error = %e, group_id, "could not delete the chord's keys");
    }
}

/// The results in header order, or the first failed part's `(task id, reason)`.
fn results(entries: &[Vec<u8>]) -> Result<Vec<Value>, (String, String)> {
    let mut out = Vec::with_capacity(entries.len());
    for raw in entries {
        let parsed: Value = serde_json::from_slice(raw).unwrap_or(Value::Null);
        let state = parsed.get(2).and_then(Value::as_str).unwrap_or("SUCCESS");
        let tid = parsed.get(1).and_then(Value::as_str).unwrap_or_default();
        let result = parsed.get(3).cloned().unwrap_or(Value::Null);
        if matches!(state, "FAILURE" | "REVOKED") {
            let error = celery_meta::error_from_exception(&result);
            let reason = format!(
                "{}: {}",
                error["exc_type"].as_str().unwrap_or("Exception"),
                error["exc_message"].as_str().unwrap_or_default()
            );
            return Err((tid.to_owned(), reason));
        }
        out.push(result);
    }
    Ok(out)
}

pub(crate) async fn part_succeeded(
    backend: &RedisBackend,
    msg: &TaskMessage,
    result: &Value,
    publish_body: PublishBody<'_>,
) -> Result<ChordProgress, BackendError> {
    let Some(group_id) = msg.headers.group.as_deref() else {
        return Ok(ChordProgress::Counted {
            done: 0,
            size: None,
        });
    };
    let encoded = entry(msg.id(), TaskState::Success, result);
    let counted = count(backend, msg, group_id, &encoded).await?;
    match counted.code {
        0 => return Ok(ChordProgress::AlreadyCounted),
        1 if counted.failed_before => return Ok(ChordProgress::ChordFailed),
        1 => {
            return Ok(ChordProgress::Counted {
                done: counted.ready,
                size: counted.total,
            });
        }
        _ => {}
    }
    match results(&counted.entries) {
        Ok(results) => {
            let parts = results.len();
            if let Err(e) = publish_body(results).await {
                // Not counted: the runtime requeues this part, which completes the chord again.
                let mut conn = backend.conn.clone();
                let removed: Result<(), _> = redis::cmd("ZREM")
                    .arg(group_key(group_id, ".j"))
                    .arg(&encoded)
                    .query_async(&mut conn)
                    .await;
                if let Err(re) = removed {
                    tracing::error!(error = %re, group_id, "could not uncount a chord part whose body was not published");
                }
                return Err(BackendError::new(
                    NAME,
                    format!("chord body not published: {e}"),
                ));
            }
            delete_keys(backend, group_id).await;
            Ok(ChordProgress::Completed { parts })
        }
        Err((failed_id, reason)) => {
            fail_body(backend, msg, &failed_id, &reason).await;
            delete_keys(backend, group_id).await;
            Ok(ChordProgress::ChordFailed)
        }
    }
}

pub(crate) async fn part_failed(
    backend: &RedisBackend,
    msg: &TaskMessage,
    reason: &str,
) -> Result<bool, BackendError> {
    let Some(group_id) = msg.headers.group.as_deref() else {
        return Ok(false);
    };
    let error = json!({"exc_type": "PermanentError", "exc_message": reason});
    let exception = celery_meta::exception_dict(Some(&error), TaskState::Failure);
    let encoded = entry(msg.id(), TaskState::Failure, &exception);
    let counted = count(backend, msg, group_id, &encoded).await?;
    if counted.code == 2 {
        delete_keys(backend, group_id).await;
    }
    Ok(counted.code != 0 && !counted.failed_before)
}

/// Records the body's FAILURE as Celery's `chord_error_from_stack` does (a part that failed on
/// a stock worker leaves no Rust worker to do it).
async fn fail_body(backend: &RedisBackend, msg: &TaskMessage, failed_id: &str, reason: &str) {
    let Some(body) = msg.embed.chord.as_ref() else {
        return;
    };
    let Some(body_id) = body.task_id() else {
        return;
    };
    let message = format!("Dependency {failed_id} raised {reason}");
    let change = StateChange::new(TaskStateUpdate {
        task_id: body_id.to_owned(),
        name: body.task.clone(),
        queue: body.queue(),
        state: TaskState::Failure,
        retries: 0,
        progress: None,
        result: None,
        error: Some(json!({"exc_type": "ChordError", "exc_message": message})),
        expires_at: None,
    });
    let meta = celery_meta::encode(&celery_meta::meta(&change, Utc::now()));
    if let Err(e) = backend
        .store_meta(body_id, &meta, true, backend.default_ttl_secs())
        .await
    {
        tracing::warn!(error = %e, body_id, "could not record the chord body's failure");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_encoded_as_celery_encodes_them() {
        assert_eq!(
            entry("16cf", TaskState::Success, &json!(2)),
            br#"[1, "16cf", "SUCCESS", 2]"#.to_vec()
        );
    }

    #[test]
    fn a_failed_entry_stops_the_results() {
        let ok = entry("a", TaskState::Success, &json!({"x": 1}));
        let bad = entry(
            "b",
            TaskState::Failure,
            &json!({"exc_type": "ValueError", "exc_message": ["it broke"], "exc_module": "builtins"}),
        );
        assert_eq!(
            results(std::slice::from_ref(&ok)),
            Ok(vec![json!({"x": 1})])
        );
        assert_eq!(
            results(&[ok, bad]),
            Err(("b".to_owned(), "ValueError: it broke".to_owned()))
        );
    }
}
