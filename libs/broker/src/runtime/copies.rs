//! The copies of a delivered message the runtime publishes: to the dead-letter queue with the
//! reason, and through the delay tree (a retry, or an `eta` not yet reached). Built from the
//! delivery's own bytes and properties, so what arrives is what was sent.

use chrono::{DateTime, Utc};
use lapin::message::Delivery;
use serde_json::{Map, Value, json};
use shopfds_protocol::names::{
    DEAD_LETTER_EXCHANGE, FAILED_AT_HEADER, ORIGINAL_QUEUE_HEADER, REASON_HEADER, dead_letter_queue,
};

use shopfds_protocol::TaskMessage;

use crate::amqp::{message_properties, table_to_json};
use crate::publisher::Outgoing;

/// The copy for `failed.<queue>`: the original headers plus the reason, the queue it came from
/// and when it failed.
pub fn dead_letter(delivery: &Delivery, queue: &str, reason: &str, now: DateTime<Utc>) -> Outgoing {
    let mut headers = headers(delivery);
    headers.remove(crate::monitor::lateness::PLANNED_HEADER);
    headers.insert(REASON_HEADER.to_owned(), Value::String(reason.to_owned()));
    headers.insert(
        ORIGINAL_QUEUE_HEADER.to_owned(),
        Value::String(queue.to_owned()),
    );
    headers.insert(FAILED_AT_HEADER.to_owned(), Value::String(now.to_rfc3339()));
    Outgoing {
        exchange: DEAD_LETTER_EXCHANGE.to_owned(),
        routing_key: dead_letter_queue(queue),
        headers,
        properties: message_properties(&delivery.properties),
        body: delivery.data.clone(),
    }
}

/// The copy that retries the task: `retries` and `eta` set, the current span as its trace
/// parent, through the delay tree. A protocol
/// v1 message (no `task` header: its retries and eta live in the body) is sent as the protocol
/// v2 message it was read as, so the new headers are the ones the next delivery reads.
pub fn retry(
    delivery: &Delivery,
    msg: Option<&TaskMessage>,
    queue: &str,
    retries: u32,
    eta: DateTime<Utc>,
    delay_secs: u64,
) -> Outgoing {
    let mut headers = headers(delivery);
    let converted = match msg {
        Some(msg) if !headers.contains_key("task") => {
            headers.extend(msg.headers_map());
            // The new body is plain JSON, whatever the old one was compressed with.
            headers.remove(shopfds_protocol::compression::COMPRESSION_HEADER);
            Some(msg.body())
        }
        _ => None,
    };
    headers.insert("retries".to_owned(), json!(retries));
    // The next attempt continues the trace under this attempt's span, so a task's attempts
    // read as a chain in the trace rather than as siblings.
    for (name, value) in shopfds_telemetry::propagation::current_context_headers() {
        headers.insert(name, json!(value));
    }
    headers.insert(
        "eta".to_owned(),
        json!(eta.to_rfc3339_opts(chrono::SecondsFormat::Micros, false)),
    );
    let mut copy = forward(delivery, queue, headers);
    if let Some(body) = converted {
        copy.body = body;
    }
    copy.delayed(delay_secs)
}

/// The message unchanged, through the delay tree.
pub fn deferred(delivery: &Delivery, queue: &str, delay_secs: u64) -> Outgoing {
    forward(delivery, queue, headers(delivery)).delayed(delay_secs)
}

/// The delivery's headers as JSON. Read again where needed rather than kept per message: most
/// messages succeed and never need them after decoding.
pub fn headers(delivery: &Delivery) -> Map<String, Value> {
    delivery
        .properties
        .headers()
        .as_ref()
        .map(table_to_json)
        .unwrap_or_default()
}

/// A copy of the delivery for `queue` (to be delayed) with `headers`, minus RabbitMQ's
/// dead-letter record of earlier trips through the delay tree: carried over, a later delay that
/// passes a delay queue again looks like a dead-letter cycle, and RabbitMQ drops the message
/// without a word.
fn forward(delivery: &Delivery, queue: &str, mut headers: Map<String, Value>) -> Outgoing {
    headers.retain(|name, _| !is_dead_letter_record(name));
    // The outbox wait was counted at the first delivery (see `monitor::lateness`).
    headers.remove(crate::monitor::lateness::PLANNED_HEADER);
    Outgoing {
        exchange: queue.to_owned(),
        routing_key: queue.to_owned(),
        headers,
        properties: message_properties(&delivery.properties),
        body: delivery.data.clone(),
    }
}

/// Headers RabbitMQ adds when it dead-letters a message (`x-death`, `x-first-death-*`,
/// `x-last-death-*`).
fn is_dead_letter_record(header: &str) -> bool {
    header == "x-death"
        || header.starts_with("x-first-death-")
        || header.starts_with("x-last-death-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rabbitmq_dead_letter_records_are_recognised() {
        for h in ["x-death", "x-first-death-queue", "x-last-death-reason"] {
            assert!(is_dead_letter_record(h), "{h}");
        }
        for h in ["x-shopfds-reason", "retries", "x-deathly"] {
            assert!(!is_dead_letter_record(h), "{h}");
        }
    }
}
