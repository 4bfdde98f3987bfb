//! `shopfds-results`: the result backends the worker runtime writes through
//! ([`shopfds_broker::ResultBackend`]), chosen by `RESULT_BACKEND` ([`settings`]):
//!
//! - [`postgres`] (the default, `postgres`): PostgreSQL, batched. State changes are queued to one
//!   writer that coalesces them by task id and writes every queued row in one statement while the
//!   previous statement was in flight (group commit); a final state resolves once its batch
//!   committed, so the runtime acks after the commit. Chords built by our producer (the body
//!   carries `chord_size`) are counted in PostgreSQL; a chord built by a stock Celery client
//!   (counted in the client's own backend) is refused when its first part arrives: FAILURE and
//!   the dead-letter queue, with a reason naming the backend.
//! - [`redis`] (`redis://host:port/db`, `rediss://…`): Redis in Celery's own format
//!   (`celery-task-meta-<id>`, SETEX + PUBLISH), so a stock Python client's `AsyncResult` reads
//!   what a Rust worker did (`.get()`, `.state`, `.info`), and Python workers' results read back
//!   here. A ready state is never replaced by one that is not (one Lua script reads, checks and
//!   writes). Chords are counted in Celery's keys (`celery-taskset-meta-<group>.j/.t/.s`,
//!   [`redis_chord`]), so a chord from a stock client completes on Rust workers, also when some
//!   of its parts run on stock Celery workers. One multiplexed connection that reconnects.
//! - [`rpc`] (`rpc://`): Celery's rpc backend. Each state change of a message with `reply_to` is
//!   published to the client's reply queue as Celery sends it; a reply whose queue is gone is
//!   dropped with a log line. Nothing is kept (`get` is always `None`), and chords are refused.
//!
//! The same value also serves `GET /v1/tasks/{id}`: order-api reads whichever backend is
//! configured ([`shopfds_broker::ResultBackend::get`]; under `rpc://` no task is found).
//! [`celery_meta`] is the Celery meta format both Redis and rpc speak.

pub mod celery_meta;
pub mod postgres;
pub mod redis;
pub mod redis_chord;
pub mod rpc;
pub mod settings;

pub use postgres::{BatchSettings, PostgresBackend};
pub use redis::{RedisBackend, RedisBackendError};
pub use rpc::RpcBackend;
pub use settings::{BackendKind, RedisUrl, ResultSettings};

/// The `database` check of `/readyz`: `SELECT 1` on the service's pool.
pub fn database_check(store: &shopfds_store::Store) -> shopfds_telemetry::ops::Check {
    let store = store.clone();
    shopfds_telemetry::ops::check(move || {
        let store = store.clone();
        async move { store.ping().await.map_err(|e| e.to_string()) }
    })
}

/// A database error as a task's error: the database unreachable is not the task's fault (the
/// worker stops taking messages until it answers, and no retry is spent); an error the
/// database answered with is transient.
pub fn database_error(e: shopfds_store::StoreError) -> shopfds_broker::TaskError {
    shopfds_broker::TaskError::from_dependency("database", e.is_unavailable(), e)
}

/// The PostgreSQL backend over `store` with the default batch settings (tests, tools).
pub fn postgres(store: &shopfds_store::Store) -> std::sync::Arc<dyn shopfds_broker::ResultBackend> {
    ResultSettings::default().postgres(store)
}
