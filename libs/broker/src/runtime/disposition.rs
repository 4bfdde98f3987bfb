//! The vocabulary of the decision step: what happened to a message ([`Outcome`]) and what
//! becomes of it ([`Disposition`]), decided by [`super::decide::decide`] and carried out by
//! [`super::execute`].

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use shopfds_protocol::canvas::Planned;
use shopfds_protocol::result::TaskStateUpdate;

use super::followups::ChordBodyFailure;
use super::options::{Hook, TaskError, TaskFailure};

/// What happened to a message: found before running it, or what running it gave.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Could not be read; `task_id` and `task` when its headers could still be read.
    Undecodable {
        reason: String,
        task_id: Option<String>,
        task: Option<String>,
    },
    UnknownTask,
    /// A chord header part whose chord the configured result backend cannot complete.
    ChordUnsupported {
        reason: String,
    },
    Expired {
        at: DateTime<Utc>,
    },
    /// Revoked by remote control (`revoke`); `terminated` if it was cut short while running.
    Revoked {
        terminated: bool,
    },
    /// `eta` is further ahead than the worker's horizon (`WORKER_ETA_HORIZON_SECS`).
    EtaBeyondHorizon {
        eta: DateTime<Utc>,
        horizon: Duration,
    },
    /// `eta` is more than a second ahead.
    EtaInFuture {
        eta: DateTime<Utc>,
    },
    Succeeded(Value),
    Failed(TaskError),
    HardTimeLimit {
        limit: Duration,
    },
    /// The shutdown grace period ended while the task ran.
    Abandoned,
}

/// What the executor does with the message itself, after recording and publishing.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Ack,
    /// Publish a copy with these `retries` and `eta` headers through the delay tree, to arrive
    /// after `delay_secs`; then ack (requeue if the copy could not be published).
    Retry {
        delay_secs: u64,
        retries: u32,
        eta: DateTime<Utc>,
    },
    /// Publish a copy to `failed.<queue>` with the reason; then ack (reject if that failed, so
    /// the queue's own dead-letter arguments still deliver it there).
    DeadLetter {
        reason: String,
    },
    /// Back to the queue for another worker.
    Requeue,
    /// A dependency of the worker itself is down: stop taking messages, hold this one until the
    /// dependency answers again, then requeue it (its retries untouched).
    AwaitDependency {
        dependency: String,
        reason: String,
    },
    /// The task will not run (expired): ack.
    Revoke {
        reason: String,
    },
    /// Publish the message unchanged through the delay tree, to arrive after `delay_secs`; ack.
    DeferToEta {
        delay_secs: u64,
    },
}

/// What the chord backend is told.
#[derive(Debug, Clone, PartialEq)]
pub enum ChordStep {
    PartSucceeded {
        result: Value,
    },
    PartFailed {
        reason: String,
        body: ChordBodyFailure,
    },
}

/// A hook to call, with what it is told.
#[derive(Debug, Clone)]
pub struct HookCall {
    pub hook: Hook,
    pub which: &'static str,
    pub event: TaskFailure,
}

/// The decision: everything the executor does, in this order: record the state (durably),
/// publish the follow-ups, tell the chord backend, call the hook, then the action.
#[derive(Debug, Clone)]
pub struct Disposition {
    pub record: Option<TaskStateUpdate>,
    pub follow_ups: Vec<Planned>,
    pub chord: Option<ChordStep>,
    pub hook: Option<HookCall>,
    pub action: Action,
    /// The `outcome` label of `shopfds_tasks_total`; `None` counts nothing.
    pub counted_as: Option<&'static str>,
}

impl Disposition {
    pub(crate) fn settle(action: Action, counted_as: Option<&'static str>) -> Self {
        Disposition {
            record: None,
            follow_ups: Vec::new(),
            chord: None,
            hook: None,
            action,
            counted_as,
        }
    }
}
