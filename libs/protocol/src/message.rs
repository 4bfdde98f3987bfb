//! The Celery message protocol v2 envelope (JSON body), as `celery.app.amqp.as_task_v2` builds it.
//!
//! A message has three parts: AMQP application headers (the task's identity and options),
//! AMQP properties, and a JSON body `[args, kwargs, embed]`. Headers are kept as a JSON object here
//! so this crate needs no AMQP library; `shopfds-broker` converts them to and from AMQP tables.
//! Unknown headers and signature fields are kept as they came, so a message that passes through a
//! Rust process (a retry, a dead-letter replay) reaches a Python worker unchanged.
//!
//! Reading a delivery ([`TaskMessage::decode`], in `decode.rs`) also accepts protocol v1 and
//! turns it into this v2 form (`v1.rs`): nothing past `decode` ever sees a v1 message.

use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

/// The only content type we deserialize. Anything else (pickle, yaml, msgpack) is refused unread.
pub const CONTENT_TYPE_JSON: &str = "application/json";
pub const CONTENT_ENCODING_UTF8: &str = "utf-8";
/// W3C trace context header carried next to the Celery headers.
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// Why a message could not be understood. The text is what lands in the dead-letter reason header.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ProtocolError {
    #[error("content type {0:?} is refused: only application/json is accepted")]
    UnsupportedContentType(String),
    #[error("content encoding {0:?} is refused: only utf-8 is accepted")]
    UnsupportedContentEncoding(String),
    /// Neither v2 (a `task` header) nor v1 (no `task` header, a body object with `task`).
    #[error(
        "not a Celery task message: no `task` header (protocol v2) and the body is not an object \
         with `task` (protocol v1)"
    )]
    NotProtocolV2,
    #[error("header `{header}` is invalid: {message}")]
    InvalidHeader {
        header: &'static str,
        message: String,
    },
    #[error("body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("body must be a JSON array [args, kwargs, embed]: {0}")]
    InvalidBody(String),
    /// A field of a protocol v1 body (`{"task", "id", "args", "kwargs", "eta", …}`) is wrong.
    #[error("protocol v1 body field `{field}` is invalid: {message}")]
    InvalidV1Field { field: String, message: String },
    #[error("argument `{name}` is invalid: {message}")]
    InvalidArgument { name: String, message: String },
    /// A `compression` header naming a method this worker cannot read.
    #[error(
        "compression {0:?} is not supported: zlib (application/x-gzip), bzip2 (application/x-bz2), \
         xz (application/x-lzma) and zstd (application/zstd) are"
    )]
    UnsupportedCompression(String),
    #[error("body could not be decompressed as {method}: {message}")]
    Decompression {
        method: &'static str,
        message: String,
    },
    #[error("body decompressed ({method}) to more than {limit} bytes, the message size cap")]
    DecompressedTooLarge { method: &'static str, limit: usize },
}

/// The `timelimit` header: Celery's code sends `[hard, soft]` (its docs say the opposite).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TimeLimit(
    pub Option<serde_json::Number>,
    pub Option<serde_json::Number>,
);

impl TimeLimit {
    /// Hard limit in seconds.
    pub fn hard(&self) -> Option<f64> {
        self.0.as_ref().and_then(serde_json::Number::as_f64)
    }
    /// Soft limit in seconds.
    pub fn soft(&self) -> Option<f64> {
        self.1.as_ref().and_then(serde_json::Number::as_f64)
    }
}

/// The v2 headers we read and write. Anything else is carried in `extra`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskHeaders {
    #[serde(default = "default_lang")]
    pub lang: String,
    pub task: String,
    pub id: String,
    #[serde(default)]
    pub root_id: Option<String>,
    #[serde(default)]
    pub parent_id: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub group_index: Option<i64>,
    #[serde(default, deserialize_with = "de_retries")]
    pub retries: u32,
    #[serde(default, with = "celery_time")]
    pub eta: Option<DateTime<Utc>>,
    #[serde(default, with = "celery_time")]
    pub expires: Option<DateTime<Utc>>,
    #[serde(default)]
    pub timelimit: TimeLimit,
    #[serde(default)]
    pub shadow: Option<String>,
    #[serde(default)]
    pub argsrepr: Option<String>,
    #[serde(default)]
    pub kwargsrepr: Option<String>,
    #[serde(default)]
    pub origin: Option<String>,
    #[serde(default, deserialize_with = "de_bool_or_null")]
    pub ignore_result: bool,
    /// Every other header (`stamped_headers`, `stamps`, `replaced_task_nesting`, `traceparent`,
    /// dead-letter reasons, `x-death`, …), kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn default_lang() -> String {
    "py".to_owned()
}

fn de_retries<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    Ok(Option::<u32>::deserialize(d)?.unwrap_or(0))
}

fn de_bool_or_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(Option::<bool>::deserialize(d)?.unwrap_or(false))
}

/// Celery writes `eta`/`expires` with `datetime.isoformat()`: RFC 3339 when the datetime is aware,
/// without an offset when it is naive (then it is UTC under `enable_utc`, Celery's default).
mod celery_time {
    use super::*;

    pub fn serialize<S: serde::Serializer>(
        v: &Option<DateTime<Utc>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match v {
            // Python's isoformat() leaves out the fraction when it is zero.
            Some(t) if t.timestamp_subsec_micros() == 0 => {
                s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Secs, false))
            }
            Some(t) => s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Micros, false)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<DateTime<Utc>>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(text) => parse(&text).map(Some).ok_or_else(|| {
                serde::de::Error::custom(format!("{text:?} is not an ISO 8601 date-time"))
            }),
        }
    }

    pub fn parse(text: &str) -> Option<DateTime<Utc>> {
        if let Ok(t) = DateTime::parse_from_rfc3339(text) {
            return Some(t.with_timezone(&Utc));
        }
        NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
            .ok()
            .map(|n| n.and_utc())
    }
}

/// A canvas signature as Celery serializes it (`celery.canvas.Signature`, a dict).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Signature {
    pub task: String,
    #[serde(default)]
    pub args: Vec<Value>,
    #[serde(default)]
    pub kwargs: Map<String, Value>,
    #[serde(default)]
    pub options: Map<String, Value>,
    #[serde(default)]
    pub subtask_type: Option<String>,
    #[serde(default)]
    pub immutable: bool,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Signature {
    pub fn new(task: impl Into<String>, kwargs: Map<String, Value>) -> Self {
        Signature {
            task: task.into(),
            args: Vec::new(),
            kwargs,
            options: Map::new(),
            subtask_type: None,
            immutable: false,
            extra: Map::new(),
        }
    }

    /// An immutable signature (`.si()`): the parent's result is not prepended to its args.
    pub fn immutable(mut self) -> Self {
        self.immutable = true;
        self
    }

    /// Sets an option Celery passes to `apply_async` (`task_id`, `queue`, …).
    pub fn with_option(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.options.insert(key.to_owned(), value.into());
        self
    }

    pub fn task_id(&self) -> Option<&str> {
        self.options.get("task_id").and_then(Value::as_str)
    }
}

/// The third element of the body: what runs after this task.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Embed {
    #[serde(default)]
    pub callbacks: Option<Vec<Signature>>,
    #[serde(default)]
    pub errbacks: Option<Vec<Signature>>,
    /// The rest of a chain, in reverse order: the next task is the *last* element.
    #[serde(default)]
    pub chain: Option<Vec<Signature>>,
    #[serde(default)]
    pub chord: Option<Signature>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The AMQP properties of a task message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageProperties {
    pub correlation_id: String,
    pub content_type: String,
    pub content_encoding: String,
    #[serde(default)]
    pub reply_to: Option<String>,
    #[serde(default)]
    pub priority: Option<u8>,
    /// 2 = persistent.
    pub delivery_mode: u8,
}

/// One task message.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskMessage {
    pub headers: TaskHeaders,
    pub properties: MessageProperties,
    pub args: Vec<Value>,
    pub kwargs: Map<String, Value>,
    pub embed: Embed,
}

impl TaskMessage {
    /// A new root task called with keyword arguments, as `send_task(name, kwargs=…)` makes it.
    pub fn new(task: impl Into<String>, kwargs: Map<String, Value>) -> Self {
        let id = Uuid::new_v4().to_string();
        let task = task.into();
        let kwargsrepr = crate::pyjson::repr(&Value::Object(kwargs.clone()));
        TaskMessage {
            headers: TaskHeaders {
                lang: "py".to_owned(),
                task,
                id: id.clone(),
                root_id: Some(id.clone()),
                parent_id: None,
                group: None,
                group_index: None,
                retries: 0,
                eta: None,
                expires: None,
                timelimit: TimeLimit::default(),
                shadow: None,
                argsrepr: Some("()".to_owned()),
                kwargsrepr: Some(kwargsrepr),
                origin: Some(origin()),
                ignore_result: false,
                extra: Map::new(),
            },
            properties: MessageProperties {
                correlation_id: id,
                content_type: CONTENT_TYPE_JSON.to_owned(),
                content_encoding: CONTENT_ENCODING_UTF8.to_owned(),
                reply_to: None,
                priority: None,
                delivery_mode: 2,
            },
            args: Vec::new(),
            kwargs,
            embed: Embed::default(),
        }
    }

    /// The message that runs `sig` as a child of `parent` (a callback or the next chain link):
    /// same root, `parent_id` = the parent's id, the task id from the signature's options if any.
    pub fn from_signature(sig: &Signature, parent: Option<&TaskHeaders>) -> Self {
        let mut msg = TaskMessage::new(sig.task.clone(), sig.kwargs.clone());
        if let Some(id) = sig.task_id() {
            msg = msg.with_id(id);
        }
        msg.args = sig.args.clone();
        msg.headers.argsrepr = Some(crate::pyjson::repr_args(&sig.args));
        if let Some(parent) = parent {
            msg.headers.root_id = parent.root_id.clone().or_else(|| Some(parent.id.clone()));
            msg.headers.parent_id = Some(parent.id.clone());
        }
        if let Some(group) = sig.options.get("group_id").and_then(Value::as_str) {
            msg.headers.group = Some(group.to_owned());
        }
        if let Some(chain) = sig.options.get("chain").cloned() {
            msg.embed.chain = serde_json::from_value(chain).ok();
        }
        msg
    }

    /// Replaces the generated id (also the correlation id, and the root id of a root task).
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        let id = id.into();
        if self.headers.root_id.as_deref() == Some(self.headers.id.as_str()) {
            self.headers.root_id = Some(id.clone());
        }
        self.headers.id = id.clone();
        self.properties.correlation_id = id;
        self
    }

    pub fn id(&self) -> &str {
        &self.headers.id
    }

    pub fn task(&self) -> &str {
        &self.headers.task
    }

    /// The AMQP application headers as a JSON object (values are strings, numbers, booleans,
    /// nulls, arrays and objects: all representable in an AMQP field table).
    pub fn headers_map(&self) -> Map<String, Value> {
        match serde_json::to_value(&self.headers) {
            Ok(Value::Object(map)) => map,
            // TaskHeaders is a struct of plain fields: serializing cannot fail or give a non-object.
            _ => Map::new(),
        }
    }

    /// The body bytes: `[args, kwargs, {callbacks, errbacks, chain, chord}]`, written as Python's
    /// `json.dumps` writes it.
    pub fn body(&self) -> Vec<u8> {
        let body = (&self.args, &self.kwargs, &self.embed);
        crate::pyjson::to_vec(&body).unwrap_or_default()
    }

    /// Binds positional and keyword arguments to a typed payload, the way Python binds a call:
    /// positional args fill `T::PARAMS` in order, keywords fill the rest, unknown keywords and a
    /// parameter given twice are errors.
    pub fn bind<T: TaskArgs>(&self) -> Result<T, ProtocolError> {
        bind_args(&self.args, &self.kwargs)
    }
}

/// A typed payload of keyword arguments. `PARAMS` is the Python signature's parameter order,
/// used to bind positional arguments; `REQUIRED` the parameters without a default (a call
/// without one of them fails to bind). `interop/python/shopfds_celery.py` declares the same
/// signatures, checked by `libs/protocol/tests/python_stubs.rs`.
pub trait TaskArgs: serde::de::DeserializeOwned + Serialize {
    const PARAMS: &'static [&'static str];
    /// A subset of `PARAMS`, in the same order.
    const REQUIRED: &'static [&'static str];

    /// The keyword arguments this payload is sent with.
    fn to_kwargs(&self) -> Map<String, Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(map)) => map,
            _ => Map::new(),
        }
    }
}

pub(crate) fn bind_args<T: TaskArgs>(
    args: &[Value],
    kwargs: &Map<String, Value>,
) -> Result<T, ProtocolError> {
    if args.len() > T::PARAMS.len() {
        return Err(ProtocolError::InvalidArgument {
            name: "args".to_owned(),
            message: format!(
                "takes {} positional arguments but {} were given",
                T::PARAMS.len(),
                args.len()
            ),
        });
    }
    let mut bound = kwargs.clone();
    for (name, value) in T::PARAMS.iter().zip(args) {
        if bound.insert((*name).to_owned(), value.clone()).is_some() {
            return Err(ProtocolError::InvalidArgument {
                name: (*name).to_owned(),
                message: "given both positionally and as a keyword".to_owned(),
            });
        }
    }
    if let Some(unknown) = bound.keys().find(|k| !T::PARAMS.contains(&k.as_str())) {
        return Err(ProtocolError::InvalidArgument {
            name: unknown.clone(),
            message: "unexpected keyword argument".to_owned(),
        });
    }
    serde_path_to_error::deserialize(Value::Object(bound)).map_err(|e| {
        let path = e.path().to_string();
        let name = if path == "." {
            // A missing argument: serde names it in the message.
            let text = e.inner().to_string();
            text.strip_prefix("missing field `")
                .and_then(|rest| rest.split('`').next())
                .map_or_else(|| "kwargs".to_owned(), str::to_owned)
        } else {
            path
        };
        ProtocolError::InvalidArgument {
            name,
            message: e.into_inner().to_string(),
        }
    })
}

/// `origin` header: `gen<pid>@<hostname>` like Celery's `anon_nodename`.
fn origin() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".to_owned());
    format!("gen{}@{host}", std::process::id())
}

/// Parses a Celery `eta`/`expires` value (aware RFC 3339, or naive = UTC).
pub fn parse_celery_time(text: &str) -> Option<DateTime<Utc>> {
    celery_time::parse(text)
}
