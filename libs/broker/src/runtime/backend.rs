//! Where task states, results and chord counts go. The runtime writes through [`ResultBackend`]
//! and knows no database; `shopfds-results` implements it for PostgreSQL (batched), Redis in
//! Celery's own format, and Celery's `rpc://`.
//!
//! The contract an implementation keeps:
//! - [`ResultBackend::record`] resolves once the state is durable (or, for a backend that keeps
//!   nothing, sent): the runtime acks a message only after its final state's future resolved `Ok`.
//!   It may batch: many calls may share one write.
//! - A ready state (SUCCESS, FAILURE, REVOKED, REJECTED) is never replaced by a non-ready one: a
//!   late STARTED from a redelivered message must not hide SUCCESS.
//! - A chord header part is counted once per task id, and the part that completes the chord runs
//!   `publish_body` with the parts' results in header order; when that fails, the part is not
//!   counted (the runtime requeues the message and counts it on its next delivery).
//! - [`ResultBackend::check_chord`] refuses, when the message arrives, a chord this backend cannot
//!   complete (a chord built by a client for another backend), so it never hangs silently.

use std::sync::Arc;

use futures::future::BoxFuture;
use serde_json::Value;
use shopfds_protocol::TaskMessage;
use shopfds_protocol::result::{TaskRecord, TaskStateUpdate};

/// A state change, with the message it is about (shared, not copied: a backend that keeps the
/// arguments or answers `reply_to` reads them there; the others never touch them).
#[derive(Debug, Clone, PartialEq)]
pub struct StateChange {
    pub update: TaskStateUpdate,
    /// `None` for a change with no message at hand (a chord body's FAILURE, an unreadable one).
    pub message: Option<Arc<TaskMessage>>,
    /// The worker's node name.
    pub worker: Option<Arc<str>>,
}

impl StateChange {
    pub fn new(update: TaskStateUpdate) -> Self {
        StateChange {
            update,
            message: None,
            worker: None,
        }
    }

    /// A change of `message`'s task, reported by `worker`.
    pub fn of(update: TaskStateUpdate, message: &Arc<TaskMessage>, worker: &Arc<str>) -> Self {
        StateChange {
            update,
            message: Some(Arc::clone(message)),
            worker: Some(Arc::clone(worker)),
        }
    }

    /// Where a Celery `rpc://` client waits for this change (the message's `reply_to`).
    pub fn reply_to(&self) -> Option<&str> {
        self.message
            .as_ref()
            .and_then(|m| m.properties.reply_to.as_deref())
            .filter(|r| !r.is_empty())
    }
}

/// What counting a chord part did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChordProgress {
    /// Counted; `done` of `size` parts have succeeded (`None` when the backend does not know).
    Counted { done: usize, size: Option<usize> },
    /// This was the last part: the body was published with `parts` results.
    Completed { parts: usize },
    /// This task id was already counted (a redelivery): nothing to do.
    AlreadyCounted,
    /// Another part failed: the body will not run.
    ChordFailed,
}

/// A backend could not do what was asked; the message is requeued, not failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("result backend {backend}: {message}")]
pub struct BackendError {
    pub backend: &'static str,
    pub message: String,
}

impl BackendError {
    pub fn new(backend: &'static str, message: impl std::fmt::Display) -> Self {
        BackendError {
            backend,
            message: message.to_string(),
        }
    }
}

pub type BackendFuture<'a, T> = BoxFuture<'a, Result<T, BackendError>>;

/// Publishes a completed chord's body, given the header's results in order; `Err` with why not.
pub type PublishBody<'a> =
    Box<dyn FnOnce(Vec<Value>) -> BoxFuture<'a, Result<(), String>> + Send + 'a>;

/// Keeps task states and results, and counts chords. Object safe: the worker holds an
/// `Arc<dyn ResultBackend>`.
pub trait ResultBackend: Send + Sync + 'static {
    /// Short name for logs and errors (`postgres`, `redis`, `rpc`).
    fn name(&self) -> &'static str;

    /// Records a state change; resolves when it is durable.
    fn record(&self, change: StateChange) -> BackendFuture<'_, ()>;

    /// Whether the backend can be reached now (one cheap round trip, e.g. `SELECT 1`, `PING`).
    /// A write that failed while this answers is a refusal, not an outage.
    fn ping(&self) -> BackendFuture<'_, ()>;

    /// The task's state, as `GET /v1/tasks/{id}` shows it; `None` when unknown or expired.
    fn get<'a>(&'a self, task_id: &'a str) -> BackendFuture<'a, Option<TaskRecord>>;

    /// Whether a chord whose header part is `msg` can complete here; `Err` with the reason a
    /// user reads in the dead-letter queue and the task's FAILURE.
    fn check_chord(&self, msg: &TaskMessage) -> Result<(), String>;

    /// Counts `msg` (a chord header part, `msg.headers.group` set) as succeeded with `result`.
    fn chord_part_succeeded<'a>(
        &'a self,
        msg: &'a TaskMessage,
        result: &'a Value,
        publish_body: PublishBody<'a>,
    ) -> BackendFuture<'a, ChordProgress>;

    /// Records that a chord header part failed for good. `true` for the one call that failed
    /// the chord (the caller then fails the body and calls its errbacks).
    fn chord_part_failed<'a>(
        &'a self,
        msg: &'a TaskMessage,
        reason: &'a str,
    ) -> BackendFuture<'a, bool>;
}
