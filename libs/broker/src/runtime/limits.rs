//! What a delivery must satisfy before anything reads it, and the body it is read from:
//! - a body larger than `WORKER_MAX_MESSAGE_BYTES` is refused unread (not decompressed, not
//!   parsed): dead-lettered with the reason;
//! - a header nested deeper than [`MAX_HEADER_DEPTH`] is refused unread (our own conversion of
//!   headers to JSON never recurses past that bound; the copy in `failed.<queue>` carries the
//!   header cut off at it);
//! - a body with a `compression` header (kombu's) is decompressed, to at most the same cap.
//!
//! Each refusal is a reason for the dead-letter queue, never a panic or an unsettled message.

use std::borrow::Cow;

use lapin::message::Delivery;
use lapin::types::AMQPValue;
use serde_json::{Map, Value};
use shopfds_protocol::compression;

use crate::amqp::{MAX_HEADER_DEPTH, too_deep_header};

/// Why `delivery` must not be read, if it must not: its size, or a header too deep.
pub fn refusal(delivery: &Delivery, max_bytes: usize) -> Option<String> {
    let size = delivery.data.len();
    if size > max_bytes {
        return Some(format!(
            "message body is {size} bytes, over this worker's cap of {max_bytes} bytes \
             (WORKER_MAX_MESSAGE_BYTES): refused unread"
        ));
    }
    let headers = delivery.properties.headers().as_ref()?;
    too_deep_header(headers).map(|name| {
        format!("header {name:?} is nested deeper than {MAX_HEADER_DEPTH} levels: refused unread")
    })
}

/// A string header read straight from the AMQP table (no conversion of the rest), for the id
/// and name of a message refused unread.
pub fn string_header(delivery: &Delivery, name: &str) -> Option<String> {
    match delivery.properties.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// The body as the serializer wrote it: decompressed when the headers say so, bounded by
/// `max_bytes`; else the reason.
pub fn body<'a>(
    headers: &Map<String, Value>,
    delivery: &'a Delivery,
    max_bytes: usize,
) -> Result<Cow<'a, [u8]>, String> {
    compression::decompressed(headers, &delivery.data, max_bytes).map_err(|e| e.to_string())
}
