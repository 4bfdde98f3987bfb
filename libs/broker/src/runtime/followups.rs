//! The canvas after a task: which messages follow it, worked out without I/O.
//!
//! - success: the next link of its chain and its callbacks (`link`), each with the result as
//!   first argument; a chord header part is also counted by the result backend, and the part that
//!   completes the chord publishes the body with the ordered results ([`chord_body`]);
//! - failure for good: its errbacks (`link_error`), called with its id; a chord header part
//!   fails its chord once: the body's state becomes FAILURE (`ChordError`) and the body's own
//!   errbacks are called with the body's id ([`ChordBodyFailure`]). The body never runs.
//!
//! A malformed signature is logged and skipped: it came from the producer, and failing this task
//! for it would not fix it.

use serde_json::Value;
use shopfds_protocol::canvas::{Apply, CanvasError, Planned, apply};
use shopfds_protocol::{Signature, TaskMessage};

/// What follows a success: the chain's next link, then the callbacks.
pub fn after_success(msg: &TaskMessage, result: &Value) -> Vec<Planned> {
    let mut planned = Vec::new();
    let mut chain = msg.embed.chain.clone().unwrap_or_default();
    if let Some(next) = chain.pop() {
        let at = Apply {
            chain,
            ..Apply::after(&msg.headers, vec![result.clone()])
        };
        plan(&mut planned, &next, at);
    }
    for callback in msg.embed.callbacks.iter().flatten() {
        plan(
            &mut planned,
            callback,
            Apply::after(&msg.headers, vec![result.clone()]),
        );
    }
    planned
}

/// What follows a failure for good: the errbacks, with the failed task's id.
pub fn after_failure(msg: &TaskMessage) -> Vec<Planned> {
    let mut planned = Vec::new();
    let failed_id = Value::String(msg.id().to_owned());
    for errback in msg.embed.errbacks.iter().flatten() {
        plan(
            &mut planned,
            errback,
            Apply::after(&msg.headers, vec![failed_id.clone()]),
        );
    }
    planned
}

/// Whether `msg` is a chord header part (it carries the body and its group id).
pub fn is_chord_part(msg: &TaskMessage) -> bool {
    msg.embed.chord.is_some() && msg.headers.group.is_some()
}

/// The messages that start a completed chord's body, given the header's results in order.
pub fn chord_body(msg: &TaskMessage, results: Vec<Value>) -> Result<Vec<Planned>, CanvasError> {
    match &msg.embed.chord {
        Some(body) => apply(
            body,
            Apply::after(&msg.headers, vec![Value::Array(results)]),
        ),
        None => Ok(Vec::new()),
    }
}

/// What a chord whose part `msg` failed does to its body, when this part is the one that failed
/// it: the body's id (for its FAILURE) and its errbacks.
#[derive(Debug, Clone, PartialEq)]
pub struct ChordBodyFailure {
    pub body_task: String,
    pub body_queue: String,
    pub body_id: Option<String>,
    /// `Dependency <id> raised <reason>`, as Celery words a chord's failure.
    pub reason: String,
    pub errbacks: Vec<Planned>,
}

pub fn chord_body_failure(msg: &TaskMessage, reason: &str) -> Option<ChordBodyFailure> {
    let body = msg.embed.chord.as_ref()?;
    msg.headers.group.as_ref()?;
    let body_id = body.task_id().map(str::to_owned);
    let mut errbacks = Vec::new();
    if let Some(id) = &body_id {
        let listed: Vec<Signature> = body
            .options
            .get("link_error")
            .cloned()
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default();
        for errback in &listed {
            plan(
                &mut errbacks,
                errback,
                Apply::after(&msg.headers, vec![Value::String(id.clone())]),
            );
        }
    }
    Some(ChordBodyFailure {
        body_task: body.task.clone(),
        body_queue: body.queue(),
        body_id,
        reason: format!("Dependency {} raised {reason}", msg.id()),
        errbacks,
    })
}

fn plan(planned: &mut Vec<Planned>, sig: &Signature, at: Apply<'_>) {
    match apply(sig, at) {
        Ok(messages) => planned.extend(messages),
        Err(e) => tracing::error!(error = %e, task = %sig.task, "follow-up signature skipped"),
    }
}
