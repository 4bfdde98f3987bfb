//! Reading a delivered task message into a [`TaskMessage`].
//!
//! What a delivery can be, and what becomes of it:
//! - content type other than `application/json`, or an encoding other than utf-8 →
//!   `UnsupportedContentType` / `UnsupportedContentEncoding`, before the body is read at all;
//! - body that is not JSON → `InvalidJson`;
//! - protocol v2: a `task` header and a body `[args, kwargs, embed]` → read as it is;
//! - protocol v1: no `task` header and a body object `{"task", "id", "args", "kwargs", …}`, and the
//!   hybrid form (v2 headers over such an object body) → converted to v2 by `v1.rs`;
//! - no `task` header and no v1 body → `NotProtocolV2`;
//! - anything else malformed → an error naming the header, the body element or the v1 field.
//!
//! Never panics: every error is a [`ProtocolError`], whose text is the dead-letter reason.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::message::{
    CONTENT_ENCODING_UTF8, CONTENT_TYPE_JSON, Embed, MessageProperties, ProtocolError, TaskHeaders,
    TaskMessage,
};

impl TaskMessage {
    /// Reads a delivered message. Content type and encoding are checked before the body is
    /// touched, so a pickle payload is never parsed. A protocol v1 message comes back converted
    /// to v2 (see the module documentation).
    pub fn decode(
        content_type: Option<&str>,
        content_encoding: Option<&str>,
        headers: Map<String, Value>,
        body: &[u8],
    ) -> Result<TaskMessage, ProtocolError> {
        let content_type = content_type.unwrap_or_default();
        if !content_type.eq_ignore_ascii_case(CONTENT_TYPE_JSON) {
            return Err(ProtocolError::UnsupportedContentType(
                content_type.to_owned(),
            ));
        }
        let encoding = content_encoding.unwrap_or(CONTENT_ENCODING_UTF8);
        if !encoding.eq_ignore_ascii_case(CONTENT_ENCODING_UTF8) && !encoding.is_empty() {
            return Err(ProtocolError::UnsupportedContentEncoding(
                encoding.to_owned(),
            ));
        }
        let value: Value =
            serde_json::from_slice(body).map_err(|e| ProtocolError::InvalidJson(e.to_string()))?;
        let has_task_header = headers.contains_key("task");
        match value {
            Value::Array(parts) => decode_v2(parse_headers(headers)?, parts),
            // Celery's worker takes an object body as v1 when the `task` header is missing
            // (consumer.on_task_received) and as the hybrid form when it is there
            // (strategy.hybrid_to_proto2).
            // An object without `task`, `args` or `kwargs` is no request at all (running it
            // would silently drop its fields): refused as a malformed v2 body.
            Value::Object(object)
                if object.contains_key("task")
                    || (has_task_header
                        && (object.contains_key("args") || object.contains_key("kwargs"))) =>
            {
                crate::v1::decode(headers, object)
            }
            _ if !has_task_header => Err(ProtocolError::NotProtocolV2),
            _ => Err(ProtocolError::InvalidBody("not an array".to_owned())),
        }
    }
}

fn decode_v2(headers: TaskHeaders, mut parts: Vec<Value>) -> Result<TaskMessage, ProtocolError> {
    if parts.len() != 3 {
        return Err(ProtocolError::InvalidBody(format!(
            "expected 3 elements, found {}",
            parts.len()
        )));
    }
    let embed = parts.pop().unwrap_or(Value::Null);
    let kwargs = parts.pop().unwrap_or(Value::Null);
    let args = parts.pop().unwrap_or(Value::Null);
    let args = match args {
        Value::Array(a) => a,
        Value::Null => Vec::new(),
        other => {
            return Err(ProtocolError::InvalidBody(format!(
                "args is {other}, not an array"
            )));
        }
    };
    let kwargs = match kwargs {
        Value::Object(k) => k,
        Value::Null => Map::new(),
        other => {
            return Err(ProtocolError::InvalidBody(format!(
                "kwargs is {other}, not an object"
            )));
        }
    };
    let embed = match embed {
        Value::Null => Embed::default(),
        other => serde_json::from_value(other)
            .map_err(|e| ProtocolError::InvalidBody(format!("embed: {e}")))?,
    };
    Ok(TaskMessage {
        properties: received_properties(&headers.id),
        headers,
        args,
        kwargs,
        embed,
    })
}

/// The properties of a decoded message: the transport's own (reply_to, priority) are the
/// broker crate's to fill in from the delivery.
pub(crate) fn received_properties(id: &str) -> MessageProperties {
    MessageProperties {
        correlation_id: id.to_owned(),
        content_type: CONTENT_TYPE_JSON.to_owned(),
        content_encoding: CONTENT_ENCODING_UTF8.to_owned(),
        reply_to: None,
        priority: None,
        delivery_mode: 2,
    }
}

/// Validates and types the v2 headers (`task` and `id` first, then each typed header).
pub(crate) fn parse_headers(headers: Map<String, Value>) -> Result<TaskHeaders, ProtocolError> {
    match headers.get("task") {
        Some(Value::String(_)) => {}
        Some(_) => {
            return Err(ProtocolError::InvalidHeader {
                header: "task",
                message: "must be a string".to_owned(),
            });
        }
        None => return Err(ProtocolError::NotProtocolV2),
    }
    match headers.get("id") {
        Some(Value::String(id)) if !id.is_empty() => {}
        _ => {
            return Err(ProtocolError::InvalidHeader {
                header: "id",
                message: "missing or not a non-empty string".to_owned(),
            });
        }
    }
    let headers = Value::Object(headers);
    TaskHeaders::deserialize(&headers).map_err(|e| ProtocolError::InvalidHeader {
        header: headers.as_object().map_or("headers", culprit),
        message: e.to_string(),
    })
}

/// On the (rare) failure path only: finds which typed header does not parse, so the
/// dead-letter reason names it.
fn culprit(headers: &Map<String, Value>) -> &'static str {
    const TYPED: [&str; 13] = [
        "lang",
        "root_id",
        "parent_id",
        "group",
        "group_index",
        "retries",
        "eta",
        "expires",
        "timelimit",
        "shadow",
        "argsrepr",
        "kwargsrepr",
        "ignore_result",
    ];
    TYPED
        .into_iter()
        .find(|header| {
            headers.get(*header).is_some_and(|value| {
                let mut probe = Map::new();
                probe.insert("task".to_owned(), Value::String(String::new()));
                probe.insert("id".to_owned(), Value::String(String::new()));
                probe.insert((*header).to_owned(), value.clone());
                serde_json::from_value::<TaskHeaders>(Value::Object(probe)).is_err()
            })
        })
        .unwrap_or("headers")
}
