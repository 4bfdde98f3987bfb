//! The worker runtime: consumes the configured queues with a prefetch per queue and a cap on
//! tasks running at once, runs each message's handler, and only then acknowledges it (Celery's
//! `acks_late`): a worker that dies mid-task leaves the message to be redelivered.
//!
//! What happens to a message (the full table is in [`decide`], one unit test per row):
//! - cannot be read (foreign content type, bad JSON, missing headers, a compression it cannot
//!   read; a body over the size cap or a header nested too deep, refused unread: [`limits`]) or
//!   names no registered task: REJECTED recorded for its id, copied to `failed.<queue>` with the
//!   reason in a header, then acked;
//! - a chord part whose chord the result backend cannot complete: FAILURE, dead-lettered;
//! - expired (`expires` passed): state REVOKED, acked;
//! - `eta` in the future: sent through the broker's delay tree, acked (nothing waits in memory);
//!   further ahead than the horizon: REJECTED, dead-lettered with the reason;
//! - handler succeeds: SUCCESS with the result, durable before the ack; chain and callbacks
//!   published, a chord part counted (the last one publishes the chord's body), acked;
//! - transient error: RETRY, a copy with `retries + 1` sent through the delay tree after the
//!   policy's countdown, acked; once `max_retries` is spent, as a permanent error;
//! - permanent error or hard time limit: FAILURE, errbacks published (and a chord part fails
//!   its chord), copied to `failed.<queue>` with the reason;
//! - a dependency of the worker itself unreachable (the handler's database, the result
//!   backend): no retry spent; the worker stops taking messages until the dependency answers
//!   ([`gate`]), then the message runs again.
//!
//! A side effect and its record run as one span ([`TaskContext::effect`], [`effects`]): neither
//! the hard time limit nor the end of the shutdown grace period cuts it.
//!
//! Where each part lives: [`options`] (what a task declares), [`task`] (the `Task` trait, the
//! registry, the context a task gets), [`consumer`] (connections, consumers, shutdown),
//! [`process`] (one delivery: read, triage, run under the time limits), [`decide`] (the pure
//! decision, in the terms of [`disposition`]), [`execute`] (carrying it out), [`followups`]
//! (the canvas after a task), [`gate`] (pausing while a dependency is down), [`effects`] (side
//! effects no interruption cuts), [`copies`] (dead-letter and delayed copies), [`acks`] (the
//! channel's acks, coalesced into `multiple` acks), [`backend`] (the result backend trait),
//! [`limits`] (what a delivery must satisfy to be read), [`budget`] (the bytes held in
//! unsettled deliveries, and the pause that bounds them).

pub mod acks;
pub mod backend;
pub mod budget;
pub mod consumer;
pub mod copies;
pub mod decide;
pub mod disposition;
pub mod effects;
pub mod execute;
pub mod followups;
pub mod gate;
pub mod limits;
pub mod options;
pub mod process;
pub mod task;

#[cfg(test)]
mod decide_tests;

pub use backend::{BackendError, ChordProgress, PublishBody, ResultBackend, StateChange};
pub use consumer::Worker;
pub use decide::{Action, Disposition, Facts, Outcome, decide, triage};
pub use options::{Hook, RateLimit, RetryPolicy, TaskError, TaskFailure, TaskOptions};
pub use task::{HandlerFuture, Registry, Task, TaskContext};
