//! The Redis result backend, in Celery's own format, so a stock Python client configured with
//! `result_backend='redis://…'` reads what a Rust worker did, and Rust and Python workers can
//! share one Redis.
//!
//! The contract:
//! - A state change is stored under `celery-task-meta-<task id>` as the JSON meta a stock
//!   worker writes (see [`crate::celery_meta`]), with `SETEX` for the expiry (the change's
//!   `expires_at` when given, else [`RedisBackend`]'s default, `RESULT_EXPIRES_SECS`), and the
//!   same bytes are `PUBLISH`ed on the channel of that name: a client blocked in
//!   `AsyncResult.get()` wakes up at once.
//! - Read, check and write are one Lua script (atomic in Redis): a stored SUCCESS is never
//!   replaced (Celery's own rule), and a stored FAILURE or REVOKED is not replaced by a state
//!   that is not ready, so a late STARTED or PROGRESS from a redelivered message never hides a
//!   result. A write that was skipped for that reason still resolves `Ok`.
//! - [`ResultBackend::record`] resolves once Redis answered; the runtime acks after that. Redis
//!   keeps it as durably as it is configured to (`appendonly`).
//! - [`ResultBackend::get`] reads the meta back (and the key's TTL as `expires_at`): Python
//!   workers' results read the same way.
//! - Chords are counted the way Celery's `RedisBackend.on_chord_part_return` counts them, in the
//!   same keys, so parts may run on Rust and stock Celery workers alike: see
//!   [`crate::redis_chord`].
//!
//! One multiplexed connection ([`ConnectionManager`]) carries every call: concurrent calls are
//! pipelined on it, and it reconnects by itself after Redis restarts (a call made while it is
//! down fails, and the runtime requeues the message).

use std::time::Duration;

use chrono::Utc;
use futures::FutureExt;
use redis::Script;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde_json::Value;
use shopfds_broker::runtime::backend::{
    BackendError, BackendFuture, ChordProgress, PublishBody, ResultBackend, StateChange,
};
use shopfds_protocol::TaskMessage;
use shopfds_protocol::result::TaskRecord;

use crate::celery_meta;

pub(crate) const NAME: &str = "redis";

/// Celery's `task_keyprefix`.
pub const TASK_KEY_PREFIX: &str = "celery-task-meta-";
/// Celery's `group_keyprefix` (the chord keys are this + group id + `.j`, `.t`, `.s`).
pub const GROUP_KEY_PREFIX: &str = "celery-taskset-meta-";

/// `KEYS[1]` the meta key; `ARGV[1]` the meta, `ARGV[2]` seconds to keep it, `ARGV[3]` "1" when
/// the new state is ready. Returns 1 when written (and published), 0 when the stored state wins.
const RECORD_SCRIPT: &str = r"
local current = redis.call('GET', KEYS[1])
if current then
  local ok, meta = pcall(cjson.decode, current)
  if ok and type(meta) == 'table' then
    local status = meta['status']
    if status == 'SUCCESS' then return 0 end
    if (status == 'FAILURE' or status == 'REVOKED') and ARGV[3] ~= '1' then return 0 end
  end
end
redis.call('SETEX', KEYS[1], ARGV[2], ARGV[1])
redis.call('PUBLISH', KEYS[1], ARGV[1])
return 1
";

/// Why a [`RedisBackend`] could not be made.
#[derive(Debug, thiserror::Error)]
pub enum RedisBackendError {
    #[error("not a Redis URL ({0}); expected redis://host:port/db or rediss://…")]
    Url(String),
    #[error("cannot connect to Redis at {url}: {message}")]
    Connect { url: String, message: String },
}

/// The Redis backend. Cheap to share behind an `Arc`.
pub struct RedisBackend {
    pub(crate) conn: ConnectionManager,
    pub(crate) expires: Duration,
    record_script: Script,
    pub(crate) chord_script: Script,
}

impl RedisBackend {
    /// Connects to `url` (`redis://[:password@]host:port/db`, `rediss://` for TLS). Results
    /// without an `expires_at`, and chord keys, are kept for `expires` (at least a second).
    pub async fn connect(url: &str, expires: Duration) -> Result<Self, RedisBackendError> {
        let client = redis::Client::open(url).map_err(|e| RedisBackendError::Url(e.to_string()))?;
        if url.starts_with("rediss://") {
            // Already installed (by us or the binary) is fine: any provider will do.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(10)))
            .set_max_delay(Duration::from_secs(5));
        let conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|e| RedisBackendError::Connect {
                url: shopfds_config::redact_url(url),
                message: e.to_string(),
            })?;
        Ok(RedisBackend {
            conn,
            expires: expires.max(Duration::from_secs(1)),
            record_script: Script::new(RECORD_SCRIPT),
            chord_script: Script::new(crate::redis_chord::CHORD_SCRIPT),
        })
    }

    /// The connection, for tests and tools that read the keys themselves.
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Seconds to keep a key: until `expires_at` when given (at least 1 s), else the default.
    fn ttl_secs(&self, expires_at: Option<chrono::DateTime<Utc>>) -> u64 {
        match expires_at {
            Some(at) => u64::try_from((at - Utc::now()).num_seconds())
                .unwrap_or(0)
                .max(1),
            None => self.expires.as_secs().max(1),
        }
    }

    pub(crate) fn default_ttl_secs(&self) -> u64 {
        self.expires.as_secs().max(1)
    }

    /// Stores `meta` (already encoded) for `task_id` unless the stored state wins; `true` when
    /// written.
    pub(crate) async fn store_meta(
        &self,
        task_id: &str,
        meta: &[u8],
        ready: bool,
        ttl_secs: u64,
    ) -> Result<bool, BackendError> {
        let mut conn = self.conn.clone();
        let written: i64 = self
            .record_script
            .key(task_key(task_id))
            .arg(meta)
            .arg(ttl_secs)
            .arg(if ready { "1" } else { "0" })
            .invoke_async(&mut conn)
            .await
            .map_err(|e| BackendError::new(NAME, e))?;
        Ok(written == 1)
    }
}

/// `celery-task-meta-<id>`.
pub fn task_key(task_id: &str) -> String {
    format!("{TASK_KEY_PREFIX}{task_id}")
}

/// `celery-taskset-meta-<group id><suffix>`.
pub fn group_key(group_id: &str, suffix: &str) -> String {
    format!("{GROUP_KEY_PREFIX}{group_id}{suffix}")
}

impl ResultBackend for RedisBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn record(&self, change: StateChange) -> BackendFuture<'_, ()> {
        async move {
            let meta = celery_meta::encode(&celery_meta::meta(&change, Utc::now()));
            let ttl = self.ttl_secs(change.update.expires_at);
            let ready = celery_meta::is_ready_status(celery_meta::celery_status(
                change.update.state,
            ));
            let written = self
                .store_meta(&change.update.task_id, &meta, ready, ttl)
                .await?;
            if !written {
                tracing::debug!(task_id = %change.update.task_id, state = %change.update.state, "kept the stored final state");
            }
            Ok(())
        }
        .boxed()
    }

    fn get<'a>(&'a self, task_id: &'a str) -> BackendFuture<'a, Option<TaskRecord>> {
        async move {
            let mut conn = self.conn.clone();
            let key = task_key(task_id);
            let (stored, ttl_ms): (Option<Vec<u8>>, i64) = redis::pipe()
                .get(&key)
                .pttl(&key)
                .query_async(&mut conn)
                .await
                .map_err(|e| BackendError::new(NAME, e))?;
            let Some(stored) = stored else {
                return Ok(None);
            };
            let ttl = (ttl_ms >= 0).then(|| chrono::Duration::milliseconds(ttl_ms));
            Ok(celery_meta::to_record(task_id, &stored, ttl, Utc::now()))
        }
        .boxed()
    }

    fn ping(&self) -> BackendFuture<'_, ()> {
        async move {
            let mut conn = self.conn.clone();
            redis::cmd("PING")
                .query_async::<()>(&mut conn)
                .await
                .map_err(|e| BackendError::new(NAME, e))
        }
        .boxed()
    }

    /// Any chord part is accepted: one built by a stock client with the Redis backend (the
    /// client set the size in `.s`) or by our producer (the body carries `chord_size`).
    fn check_chord(&self, _msg: &TaskMessage) -> Result<(), String> {
        Ok(())
    }

    fn chord_part_succeeded<'a>(
        &'a self,
        msg: &'a TaskMessage,
        result: &'a Value,
        publish_body: PublishBody<'a>,
    ) -> BackendFuture<'a, ChordProgress> {
        crate::redis_chord::part_succeeded(self, msg, result, publish_body).boxed()
    }

    fn chord_part_failed<'a>(
        &'a self,
        msg: &'a TaskMessage,
        reason: &'a str,
    ) -> BackendFuture<'a, bool> {
        crate::redis_chord::part_failed(self, msg, reason).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_celerys() {
        assert_eq!(task_key("a"), "celery-task-meta-a");
        assert_eq!(group_key("g", ".j"), "celery-taskset-meta-g.j");
    }
}
