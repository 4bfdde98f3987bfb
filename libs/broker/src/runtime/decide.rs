//! The decision step: what becomes of a message, as a pure function of the message, the task's
//! options, the worker's settings and what happened ([`Outcome`]). No I/O: every rule below is a
//! unit test (`decide_tests.rs`), and [`super::execute`] carries the [`Disposition`] out.
//!
//! | outcome | state recorded | follow-ups | message |
//! |---|---|---|---|
//! | undecodable (foreign content type, bad JSON, missing headers) | REJECTED, if its id is readable | – | dead-lettered with the reason |
//! | unknown task | REJECTED (`NotRegistered`) | – | dead-lettered |
//! | chord the result backend cannot complete | FAILURE | – | dead-lettered |
//! | expired (`expires` passed) | REVOKED | – | acked |
//! | revoked by remote control (before it ran, or `terminate` while it ran) | REVOKED | – | acked |
//! | `eta` further ahead than the horizon (`WORKER_ETA_HORIZON_SECS`) | REJECTED | – | dead-lettered with the reason |
//! | `eta` more than 1 s ahead | – | – | sent through the delay tree, acked |
//! | success | SUCCESS with the result | chain's next link, callbacks, chord part counted | acked after the state is durable |
//! | transient error, retries left | RETRY | – | a copy with `retries + 1` through the delay tree after the policy's wait, acked |
//! | transient error, retries spent; permanent error; hard time limit | FAILURE | errbacks; a chord part fails its chord | dead-lettered with the reason |
//! | a dependency of the worker itself unreachable (its database: [`TaskError::Unavailable`]) | – | – | held while the worker stops taking messages and probes the dependency; requeued once it answers (no retry spent) |
//! | grace period over at shutdown | – | – | requeued for another worker |
//!
//! A task or message with `ignore_result` records nothing (failures included, as Celery's
//! `store_errors_even_if_ignored=False`); the dead-letter queue and the hooks still see failures.
//! A soft time limit only cancels the task's token: what the task then returns is its outcome.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use shopfds_protocol::result::TaskStateUpdate;
use shopfds_protocol::{TaskMessage, TaskState};
use shopfds_telemetry::metrics::outcome as label;

pub use super::disposition::{Action, ChordStep, Disposition, HookCall, Outcome};
use super::followups;
use super::options::{TaskError, TaskFailure, TaskOptions};

/// What the decision reads besides the outcome.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    pub queue: &'a str,
    /// `None` only for an undecodable message.
    pub message: Option<&'a TaskMessage>,
    /// The task's options; `None` for an unknown task.
    pub options: Option<&'a TaskOptions>,
    pub now: DateTime<Utc>,
    /// How long a result stays readable.
    pub result_expires: Duration,
    /// A draw in `[0, 1)` for the retry policy's jitter.
    pub jitter: f64,
}

/// Why a message must not run now, if it must not: read before the handler is looked at.
pub fn triage(
    message: &TaskMessage,
    registered: bool,
    chord_check: impl FnOnce(&TaskMessage) -> Result<(), String>,
    now: DateTime<Utc>,
    eta_horizon: Duration,
) -> Option<Outcome> {
    if !registered {
        return Some(Outcome::UnknownTask);
    }
    if let Some(at) = message.headers.expires.filter(|e| *e < now) {
        return Some(Outcome::Expired { at });
    }
    if let Some(eta) = message.headers.eta
        && chrono::Duration::from_std(eta_horizon).is_ok_and(|horizon| eta - now > horizon)
    {
        return Some(Outcome::EtaBeyondHorizon {
            eta,
            horizon: eta_horizon,
        });
    }
    if let Some(eta) = message.headers.eta
        && (eta - now).num_milliseconds() > 1000
    {
        return Some(Outcome::EtaInFuture { eta });
    }
    if followups::is_chord_part(message)
        && let Err(reason) = chord_check(message)
    {
        return Some(Outcome::ChordUnsupported { reason });
    }
    None
}

/// Will not run (expired or revoked): REVOKED, acked.
fn revoked(facts: &Facts<'_>, msg: &TaskMessage, reason: String) -> Disposition {
    let mut d = Disposition::settle(
        Action::Revoke {
            reason: reason.clone(),
        },
        Some(label::REVOKED),
    );
    if records(facts, msg) {
        d.record = Some(update(
            facts,
            msg,
            TaskState::Revoked,
            None,
            Some(error_json("TaskRevokedError", &reason)),
        ));
    }
    d
}

/// The decision.
pub fn decide(facts: &Facts<'_>, outcome: Outcome) -> Disposition {
    match (outcome, facts.message) {
        (
            Outcome::Undecodable {
                reason,
                task_id,
                task,
            },
            _,
        ) => {
            let mut d = Disposition::settle(
                Action::DeadLetter {
                    reason: reason.clone(),
                },
                Some(label::REJECTED),
            );
            d.record = task_id.map(|id| TaskStateUpdate {
                task_id: id,
                name: task.unwrap_or_default(),
                queue: facts.queue.to_owned(),
                state: TaskState::Rejected,
                retries: 0,
                progress: None,
                result: None,
                error: Some(error_json("ContentDisallowed", &reason)),
                expires_at: Some(expiry(facts)),
            });
            d
        }
        (_, None) => Disposition::settle(
            Action::DeadLetter {
                reason: "no message to decide on".to_owned(),
            },
            Some(label::REJECTED),
        ),
        (Outcome::UnknownTask, Some(msg)) => {
            let reason = format!(
                "unknown task {:?}: no handler registered on this worker",
                msg.task()
            );
            refused(facts, msg, reason, TaskState::Rejected, "NotRegistered")
        }
        (Outcome::EtaBeyondHorizon { eta, horizon }, Some(msg)) => {
            let reason = format!(
                "eta {} is more than {} s ahead, past this worker's horizon \
                 (WORKER_ETA_HORIZON_SECS): refused",
                eta.to_rfc3339(),
                horizon.as_secs()
            );
            refused(facts, msg, reason, TaskState::Rejected, "EtaBeyondHorizon")
        }
        (Outcome::ChordUnsupported { reason }, Some(msg)) => {
            refused(facts, msg, reason, TaskState::Failure, "ChordError")
        }
        (Outcome::Expired { at }, Some(msg)) => revoked(facts, msg, format!("expired at {at}")),
        (Outcome::Revoked { terminated }, Some(msg)) => {
            let reason = if terminated {
                "revoked: terminated while running"
            } else {
                "revoked"
            };
            revoked(facts, msg, reason.to_owned())
        }
        (Outcome::EtaInFuture { eta }, Some(_)) => {
            let wait_ms = u64::try_from((eta - facts.now).num_milliseconds()).unwrap_or(0);
            Disposition::settle(
                Action::DeferToEta {
                    delay_secs: wait_ms.div_ceil(1000).max(1),
                },
                None,
            )
        }
        (Outcome::Abandoned, Some(_)) => Disposition::settle(Action::Requeue, None),
        (Outcome::Succeeded(result), Some(msg)) => {
            let mut d = Disposition::settle(Action::Ack, Some(label::SUCCEEDED));
            d.follow_ups = followups::after_success(msg, &result);
            if followups::is_chord_part(msg) {
                d.chord = Some(ChordStep::PartSucceeded {
                    result: result.clone(),
                });
            }
            if records(facts, msg) {
                d.record = Some(update(facts, msg, TaskState::Success, Some(result), None));
            }
            d
        }
        (Outcome::Failed(TaskError::Transient { message, countdown }), Some(msg))
            if facts
                .options
                .is_some_and(|o| msg.headers.retries < o.max_retries) =>
        {
            let options = facts.options.cloned().unwrap_or_default();
            let wait = countdown
                .unwrap_or_else(|| options.retry.delay_at(msg.headers.retries, facts.jitter));
            // Whole seconds, rounded up, at least 1: the delay tree's granularity.
            let delay_secs = wait
                .as_secs()
                .saturating_add(u64::from(wait.subsec_nanos() > 0))
                .max(1);
            // Checked: a handler's countdown of centuries must not overflow the clock.
            let eta = i64::try_from(delay_secs)
                .ok()
                .and_then(chrono::Duration::try_seconds)
                .and_then(|wait| facts.now.checked_add_signed(wait))
                .unwrap_or(DateTime::<Utc>::MAX_UTC);
            let mut d = Disposition::settle(
                Action::Retry {
                    delay_secs,
                    retries: msg.headers.retries.saturating_add(1),
                    eta,
                },
                Some(label::RETRIED),
            );
            if records(facts, msg) {
                d.record = Some(update(
                    facts,
                    msg,
                    TaskState::Retry,
                    None,
                    Some(error_json("TransientError", &message)),
                ));
            }
            d.hook = options.on_retry.map(|hook| HookCall {
                hook,
                which: "on_retry",
                event: failure(
                    facts,
                    msg,
                    TaskError::Transient { message, countdown },
                    Some(Duration::from_secs(delay_secs)),
                    String::new(),
                ),
            });
            d
        }
        (
            Outcome::Failed(TaskError::Unavailable {
                dependency,
                message,
            }),
            Some(_),
        ) => Disposition::settle(
            Action::AwaitDependency {
                dependency,
                reason: message,
            },
            None,
        ),
        (Outcome::Failed(err), Some(msg)) => failed(facts, msg, err),
        (Outcome::HardTimeLimit { limit }, Some(msg)) => {
            let err = TaskError::permanent(format!(
                "TimeLimitExceeded: hard time limit ({}s) exceeded",
                limit.as_secs_f64()
            ));
            failed(facts, msg, err)
        }
    }
}

/// Failure for good: FAILURE, errbacks, the chord failed, the hook, the dead-letter queue.
fn failed(facts: &Facts<'_>, msg: &TaskMessage, err: TaskError) -> Disposition {
    let max_retries = facts.options.map_or(0, |o| o.max_retries);
    let reason = match &err {
        TaskError::Transient { message, .. } => {
            format!("max retries ({max_retries}) exceeded: {message}")
        }
        TaskError::Permanent { message } => message.clone(),
        TaskError::Unavailable {
            dependency,
            message,
        } => format!("{dependency} unavailable: {message}"),
    };
    let mut d = Disposition::settle(
        Action::DeadLetter {
            reason: reason.clone(),
        },
        Some(label::FAILED),
    );
    if records(facts, msg) {
        d.record = Some(update(
            facts,
            msg,
            TaskState::Failure,
            None,
            Some(error_json(err.kind(), &reason)),
        ));
    }
    d.follow_ups = followups::after_failure(msg);
    d.chord = followups::chord_body_failure(msg, &reason).map(|body| ChordStep::PartFailed {
        reason: reason.clone(),
        body,
    });
    d.hook = facts
        .options
        .and_then(|o| o.on_failure.clone())
        .map(|hook| HookCall {
            hook,
            which: "on_failure",
            event: failure(facts, msg, err, None, reason),
        });
    d
}

/// Refused before it ran: dead-lettered with `reason`, counted as rejected, and `state` recorded
/// with `exc_type` unless results are ignored.
fn refused(
    facts: &Facts<'_>,
    msg: &TaskMessage,
    reason: String,
    state: TaskState,
    exc_type: &str,
) -> Disposition {
    let mut d = Disposition::settle(
        Action::DeadLetter {
            reason: reason.clone(),
        },
        Some(label::REJECTED),
    );
    if records(facts, msg) {
        d.record = Some(update(
            facts,
            msg,
            state,
            None,
            Some(error_json(exc_type, &reason)),
        ));
    }
    d
}

/// Whether states of `msg` are recorded: not when the task or the message ignores its result.
fn records(facts: &Facts<'_>, msg: &TaskMessage) -> bool {
    !msg.headers.ignore_result && !facts.options.is_some_and(|o| o.ignore_result)
}

fn update(
    facts: &Facts<'_>,
    msg: &TaskMessage,
    state: TaskState,
    result: Option<Value>,
    error: Option<Value>,
) -> TaskStateUpdate {
    TaskStateUpdate {
        task_id: msg.id().to_owned(),
        name: msg.task().to_owned(),
        queue: facts.queue.to_owned(),
        state,
        retries: i32::try_from(msg.headers.retries).unwrap_or(i32::MAX),
        progress: None,
        result,
        error,
        expires_at: Some(expiry(facts)),
    }
}

/// When a result recorded now expires.
pub fn expiry(facts: &Facts<'_>) -> DateTime<Utc> {
    let keep =
        chrono::Duration::from_std(facts.result_expires).unwrap_or(chrono::Duration::hours(1));
    facts
        .now
        .checked_add_signed(keep)
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

fn failure(
    facts: &Facts<'_>,
    msg: &TaskMessage,
    error: TaskError,
    retry_in: Option<Duration>,
    reason: String,
) -> TaskFailure {
    TaskFailure {
        task_id: msg.id().to_owned(),
        task: msg.task().to_owned(),
        queue: facts.queue.to_owned(),
        error,
        retries: msg.headers.retries,
        retry_in,
        reason,
    }
}

/// An error as results show it: Celery's `exc_type` and `exc_message`.
pub fn error_json(kind: &str, message: &str) -> Value {
    json!({"exc_type": kind, "exc_message": message})
}
