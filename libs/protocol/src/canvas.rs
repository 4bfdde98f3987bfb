//! Canvas: chains, groups, chords, `link` and `link_error`, built and applied the way Celery 5.5
//! does it, so a canvas made here and one made by a stock Python client put the same messages on
//! the wire.
//!
//! A canvas is a [`Signature`] tree, as Celery serializes it: `celery.chain` / `celery.group` /
//! `celery.chord` signatures hold their members in `kwargs` (`tasks`, `header`, `body`) and say
//! what they are in `subtask_type`. [`apply`] turns a tree into the task messages to publish now
//! (Celery's `apply_async`); the rest travels inside those messages' `embed`:
//! - chain: the first task carries the other links in `embed.chain`, next link last;
//! - group: one message per member, each with the `group` id and its `group_index`; a chain
//!   inside a group gives the group id and index to its last task;
//! - chord: the header is a group whose members carry the body in `embed.chord`; the body's
//!   signature also carries `chord_size` (a key Celery's own backends read from
//!   `request.chord`), so the worker finishing the last part knows it is the last without asking
//!   a Celery result backend;
//! - `link` / `link_error` options become `embed.callbacks` / `embed.errbacks`.
//!
//! Workers use the same [`apply`] for what follows a task: the next chain link and callbacks
//! (with the result as first argument), errbacks (with the failed task's id), a chord's body
//! (with the list of the header's results).

use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::message::{Signature, TaskHeaders, TaskMessage};
use crate::names::tasks;

/// Key of the chord body signature holding the number of header parts.
pub const CHORD_SIZE_KEY: &str = "chord_size";

const CHAIN_TASK: &str = "celery.chain";
const GROUP_TASK: &str = "celery.group";
const CHORD_TASK: &str = "celery.chord";

/// What a signature stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureKind {
    Task,
    Chain,
    Group,
    Chord,
}

/// A canvas signature that cannot be applied (a group without a `tasks` list, …).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid {kind} signature: {message}")]
pub struct CanvasError {
    pub kind: &'static str,
    pub message: String,
}

/// A task message and the work queue it goes to.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    pub message: TaskMessage,
    pub queue: String,
}

impl Signature {
    /// `chain(a, b, c)`: each task runs after the previous one succeeded and, unless immutable,
    /// receives its result as first positional argument.
    pub fn chain(tasks: Vec<Signature>) -> Signature {
        composite(CHAIN_TASK, "chain", json!({ "tasks": tasks }))
    }

    /// `group(a, b, c)`: the members run in parallel under one group id (frozen here, as
    /// `group.freeze()` does, so the caller knows it before publishing).
    pub fn group(tasks: Vec<Signature>) -> Signature {
        composite(GROUP_TASK, "group", json!({ "tasks": tasks }))
            .with_option("task_id", Uuid::new_v4().to_string())
    }

    /// `chord(header, body)`: the header runs as a group; when all of it succeeded, `body` runs
    /// with the list of the header's results (in header order) as first argument. A failed part
    /// fails the chord: the body does not run, its result is FAILURE and its errbacks fire.
    pub fn chord(header: Vec<Signature>, body: Signature) -> Signature {
        composite(
            CHORD_TASK,
            "chord",
            json!({ "header": Signature::group(header), "body": body, "kwargs": {} }),
        )
    }

    /// `sig.link(callback)`: `callback` runs with this task's result when it succeeds.
    pub fn link(self, callback: Signature) -> Signature {
        self.push_option("link", callback)
    }

    /// `sig.link_error(errback)`: `errback` runs with this task's id when it fails for good
    /// (permanent error, retries exhausted, hard time limit).
    pub fn link_error(self, errback: Signature) -> Signature {
        self.push_option("link_error", errback)
    }

    fn push_option(mut self, key: &str, sig: Signature) -> Signature {
        let value = serde_json::to_value(sig).unwrap_or(Value::Null);
        match self.options.get_mut(key) {
            Some(Value::Array(list)) => list.push(value),
            _ => {
                self.options
                    .insert(key.to_owned(), Value::Array(vec![value]));
            }
        }
        self
    }

    pub fn kind(&self) -> SignatureKind {
        match (self.subtask_type.as_deref(), self.task.as_str()) {
            (Some("chain"), _) | (_, CHAIN_TASK) => SignatureKind::Chain,
            (Some("group"), _) | (_, GROUP_TASK) => SignatureKind::Group,
            (Some("chord"), _) | (_, CHORD_TASK) => SignatureKind::Chord,
            _ => SignatureKind::Task,
        }
    }

    /// The queue this signature's task goes to: its `queue` option, else the task routes.
    pub fn queue(&self) -> String {
        self.options
            .get("queue")
            .and_then(Value::as_str)
            .map_or_else(|| tasks::queue_for(&self.task).to_owned(), str::to_owned)
    }

    /// The members of a chain or group (`kwargs.tasks`).
    pub fn members(&self) -> Result<Vec<Signature>, CanvasError> {
        let kind = if self.kind() == SignatureKind::Chain {
            "chain"
        } else {
            "group"
        };
        let tasks = self.kwargs.get("tasks").cloned().unwrap_or(Value::Null);
        serde_json::from_value(tasks).map_err(|e| CanvasError {
            kind,
            message: format!("kwargs.tasks: {e}"),
        })
    }

    /// A chord's header (as a group) and body.
    pub fn chord_parts(&self) -> Result<(Signature, Signature), CanvasError> {
        let err = |message: String| CanvasError {
            kind: "chord",
            message,
        };
        let header = match self.kwargs.get("header").cloned() {
            // Older clients send the header as a plain list of signatures.
            Some(Value::Array(list)) => Signature::group(
                serde_json::from_value(Value::Array(list))
                    .map_err(|e| err(format!("kwargs.header: {e}")))?,
            ),
            Some(value) => {
                serde_json::from_value(value).map_err(|e| err(format!("kwargs.header: {e}")))?
            }
            None => return Err(err("kwargs.header is missing".to_owned())),
        };
        let body = serde_json::from_value(self.kwargs.get("body").cloned().unwrap_or(Value::Null))
            .map_err(|e| err(format!("kwargs.body: {e}")))?;
        Ok((header, body))
    }

    /// The number of header parts of the chord this body belongs to, if the client said.
    pub fn chord_size(&self) -> Option<usize> {
        self.extra
            .get(CHORD_SIZE_KEY)
            .and_then(Value::as_u64)
            .and_then(|n| usize::try_from(n).ok())
    }

    fn set_members(&mut self, members: &[Signature]) {
        self.kwargs.insert(
            "tasks".to_owned(),
            serde_json::to_value(members).unwrap_or(Value::Null),
        );
    }

    fn option_str(&self, key: &str) -> Option<&str> {
        self.options.get(key).and_then(Value::as_str)
    }

    /// Gives this signature (and every member) a task id if it has none, as Celery's `freeze()`
    /// does before a signature is embedded in a message.
    pub fn freeze(&mut self) -> Result<(), CanvasError> {
        match self.kind() {
            SignatureKind::Task => {
                if self.task_id().is_none() {
                    self.options
                        .insert("task_id".to_owned(), json!(Uuid::new_v4().to_string()));
                }
            }
            SignatureKind::Chain => {
                let mut members = self.members()?;
                for member in &mut members {
                    member.freeze()?;
                }
                self.set_members(&members);
            }
            SignatureKind::Group => {
                if self.task_id().is_none() {
                    self.options
                        .insert("task_id".to_owned(), json!(Uuid::new_v4().to_string()));
                }
                let mut members = self.members()?;
                for (index, member) in members.iter_mut().enumerate() {
                    member.freeze()?;
                    member
                        .options
                        .entry("group_index")
                        .or_insert_with(|| json!(index));
                }
                self.set_members(&members);
            }
            SignatureKind::Chord => {
                let (mut header, mut body) = self.chord_parts()?;
                header.freeze()?;
                body.freeze()?;
                self.kwargs.insert(
                    "header".to_owned(),
                    serde_json::to_value(header).unwrap_or(Value::Null),
                );
                self.kwargs.insert(
                    "body".to_owned(),
                    serde_json::to_value(body).unwrap_or(Value::Null),
                );
            }
        }
        Ok(())
    }
}

fn composite(task: &str, subtask_type: &str, kwargs: Value) -> Signature {
    let kwargs = match kwargs {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    let mut sig = Signature::new(task, kwargs);
    sig.subtask_type = Some(subtask_type.to_owned());
    sig
}

/// Where and how a signature is applied: Celery's `apply_async(args, parent_id=…, group_id=…,
/// group_index=…, chord=…, chain=…)`.
#[derive(Debug, Clone, Default)]
pub struct Apply<'a> {
    /// Prepended to a mutable signature's own args (a parent's result, a failed task's id, a
    /// chord's results).
    pub args: Vec<Value>,
    /// The task this one follows: gives `parent_id` and `root_id`.
    pub parent: Option<&'a TaskHeaders>,
    /// Group id and index this signature runs under.
    pub group: Option<(String, usize)>,
    /// The chord body this signature is a header part of.
    pub chord: Option<Signature>,
    /// The rest of an enclosing chain, next link last.
    pub chain: Vec<Signature>,
}

impl<'a> Apply<'a> {
    /// A root canvas: no parent, nothing prepended.
    pub fn root() -> Apply<'a> {
        Apply::default()
    }

    /// What follows `parent`, with `args` prepended (its result, or its id for an errback).
    pub fn after(parent: &'a TaskHeaders, args: Vec<Value>) -> Apply<'a> {
        Apply {
            args,
            parent: Some(parent),
            ..Apply::default()
        }
    }
}

/// The messages that start `sig` now. Members of chains, groups and chords that must wait are
/// embedded in them (see the module comment).
pub fn apply(sig: &Signature, at: Apply<'_>) -> Result<Vec<Planned>, CanvasError> {
    match sig.kind() {
        SignatureKind::Task => Ok(vec![apply_task(sig, at)]),
        SignatureKind::Chain => {
            let mut members = sig.members()?;
            for member in &mut members {
                member.freeze()?;
            }
            let Some(first) = members.first().cloned() else {
                return Ok(Vec::new());
            };
            let mut rest: Vec<Signature> = members[1..].to_vec();
            if first.kind() == SignatureKind::Group && !rest.is_empty() {
                // Celery upgrades `chain(group, x, …)` to `chord(group, chain(x, …))`.
                let body = if rest.len() == 1 {
                    rest.remove(0)
                } else {
                    Signature::chain(rest)
                };
                let chord = chord_from_group(first, body)?;
                return apply(&chord, at);
            }
            if rest.is_empty() {
                return apply(&first, at);
            }
            // The chain's end is where an enclosing group or chord continues (an enclosing
            // chain already placed its own).
            if at.chain.is_empty()
                && let Some(last) = rest.last_mut()
            {
                place_group_and_chord(last, &at);
            }
            let mut tail = at.chain;
            tail.extend(rest.into_iter().rev());
            apply(
                &first,
                Apply {
                    args: at.args,
                    parent: at.parent,
                    group: None,
                    chord: None,
                    chain: tail,
                },
            )
        }
        SignatureKind::Group => {
            if !at.chain.is_empty() {
                // A group with more chain after it is a chord whose body is that chain.
                let mut rest = at.chain.clone();
                rest.reverse();
                let body = if rest.len() == 1 {
                    rest.remove(0)
                } else {
                    Signature::chain(rest)
                };
                let chord = chord_from_group(sig.clone(), body)?;
                return apply(
                    &chord,
                    Apply {
                        chain: Vec::new(),
                        ..at
                    },
                );
            }
            let mut group = sig.clone();
            group.freeze()?;
            let group_id = group.task_id().unwrap_or_default().to_owned();
            let mut out = Vec::new();
            for (index, member) in group.members()?.iter().enumerate() {
                out.extend(apply(
                    member,
                    Apply {
                        args: at.args.clone(),
                        parent: at.parent,
                        group: Some((group_id.clone(), index)),
                        chord: at.chord.clone(),
                        chain: Vec::new(),
                    },
                )?);
            }
            Ok(out)
        }
        SignatureKind::Chord => {
            let mut chord = sig.clone();
            chord.freeze()?;
            let (header, mut body) = chord.chord_parts()?;
            if !at.chain.is_empty() {
                let mut rest = at.chain.clone();
                rest.reverse();
                rest.insert(0, body);
                body = Signature::chain(rest);
                body.freeze()?;
            }
            let size = header.members()?.len();
            if size == 0 {
                return apply(
                    &body,
                    Apply {
                        args: vec![Value::Array(Vec::new())],
                        parent: at.parent,
                        ..Apply::default()
                    },
                );
            }
            body.extra.insert(CHORD_SIZE_KEY.to_owned(), json!(size));
            apply(
                &header,
                Apply {
                    args: at.args,
                    parent: at.parent,
                    group: None,
                    chord: Some(body),
                    chain: Vec::new(),
                },
            )
        }
    }
}

fn chord_from_group(group: Signature, body: Signature) -> Result<Signature, CanvasError> {
    let mut chord = Signature::chord(Vec::new(), body);
    chord.kwargs.insert(
        "header".to_owned(),
        serde_json::to_value(group).map_err(|e| CanvasError {
            kind: "chord",
            message: e.to_string(),
        })?,
    );
    Ok(chord)
}

/// Puts the group id and index and the chord an enclosing canvas gave a chain on the chain's
/// last task, as Celery's `chain.run` does.
fn place_group_and_chord(last: &mut Signature, at: &Apply<'_>) {
    if let Some((group_id, index)) = &at.group {
        // In Celery's key order.
        last.options.insert("group_index".to_owned(), json!(index));
        last.options.insert("group_id".to_owned(), json!(group_id));
    }
    if let Some(chord) = &at.chord {
        last.options.insert(
            "chord".to_owned(),
            serde_json::to_value(chord).unwrap_or(Value::Null),
        );
    }
}

fn apply_task(sig: &Signature, at: Apply<'_>) -> Planned {
    let mut msg = TaskMessage::from_signature(sig, at.parent);
    if !sig.immutable && !at.args.is_empty() {
        let mut args = at.args;
        args.extend(sig.args.iter().cloned());
        msg.args = args;
        msg.headers.argsrepr = Some(crate::pyjson::repr_args(&msg.args));
    }
    let (group, index) = match at.group {
        Some((group, index)) => (Some(group), Some(index)),
        None => (
            sig.option_str("group_id").map(str::to_owned),
            sig.options
                .get("group_index")
                .and_then(Value::as_u64)
                .and_then(|i| usize::try_from(i).ok()),
        ),
    };
    msg.headers.group = group;
    msg.headers.group_index = index.and_then(|i| i64::try_from(i).ok());
    msg.embed.chord = at.chord.or_else(|| {
        sig.options
            .get("chord")
            .and_then(|c| serde_json::from_value(c.clone()).ok())
    });
    if !at.chain.is_empty() {
        msg.embed.chain = Some(at.chain);
    }
    msg.embed.callbacks = signatures_option(sig, "link");
    msg.embed.errbacks = signatures_option(sig, "link_error");
    Planned {
        queue: sig.queue(),
        message: msg,
    }
}

fn signatures_option(sig: &Signature, key: &str) -> Option<Vec<Signature>> {
    match sig.options.get(key) {
        Some(Value::Array(list)) if !list.is_empty() => {
            serde_json::from_value(Value::Array(list.clone())).ok()
        }
        Some(value @ Value::Object(_)) => serde_json::from_value(value.clone())
            .ok()
            .map(|s: Signature| vec![s]),
        _ => None,
    }
}
