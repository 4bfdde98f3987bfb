//! The mapping between a message to publish and its outbox row. A row holds exactly what the
//! relay will publish (exchange, routing key, AMQP headers and properties, body), written when
//! the business data is and read back unchanged by the relay; a task's PENDING result row is
//! derived from the same message, so `GET /v1/tasks/{id}` knows the task before a worker has
//! seen it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use shopfds_broker::Outgoing;
use shopfds_protocol::{MessageProperties, TaskMessage};

/// One AMQP message to publish.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxMessage {
    pub task_id: String,
    pub exchange: String,
    pub routing_key: String,
    /// JSON object: the AMQP application headers.
    pub headers: serde_json::Value,
    /// JSON object: `correlation_id`, `content_type`, `content_encoding`, `priority`,
    /// `reply_to`, `delivery_mode`.
    pub properties: serde_json::Value,
    pub body: Vec<u8>,
}

/// An unsent outbox row handed to the publisher.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxRow {
    pub id: i64,
    pub message: OutboxMessage,
    /// Failed publish attempts so far.
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
}

/// A task whose result row is created as PENDING together with its message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingTask {
    pub task_id: String,
    pub name: String,
    pub queue: String,
}

impl OutboxMessage {
    /// Task message `msg` for work queue `queue`, as [`Outgoing::task`] publishes it (with the
    /// current trace context, so the worker's span continues the producer's trace).
    pub fn task(msg: &TaskMessage, queue: &str) -> OutboxMessage {
        OutboxMessage::from_outgoing(&Outgoing::task(msg, queue), msg.id())
    }

    /// The row holding exactly what the relay will publish.
    pub fn from_outgoing(out: &Outgoing, task_id: &str) -> OutboxMessage {
        OutboxMessage {
            task_id: task_id.to_owned(),
            exchange: out.exchange.clone(),
            routing_key: out.routing_key.clone(),
            headers: Value::Object(out.headers.clone()),
            properties: serde_json::to_value(&out.properties).unwrap_or(Value::Null),
            body: out.body.clone(),
        }
    }
}

impl PendingTask {
    /// The PENDING row of task message `msg`, bound for `queue`.
    pub fn task(msg: &TaskMessage, queue: &str) -> PendingTask {
        PendingTask {
            task_id: msg.id().to_owned(),
            name: msg.task().to_owned(),
            queue: queue.to_owned(),
        }
    }
}

impl OutboxRow {
    /// The message as it was written, ready to publish. A row that cannot be published (headers
    /// that are not an object, unreadable properties) is an error naming the row; the relay
    /// counts it as a failed attempt and keeps it.
    pub fn into_outgoing(self) -> Result<Outgoing, String> {
        let m = self.message;
        let mut headers = match m.headers {
            Value::Object(map) => map,
            other => {
                return Err(format!(
                    "outbox row {}: headers are not an object: {other}",
                    self.id
                ));
            }
        };
        let properties: MessageProperties = serde_json::from_value(m.properties)
            .map_err(|e| format!("outbox row {}: properties: {e}", self.id))?;
        // When the task was planned: the start of its outbox wait (`monitor::lateness`).
        headers.insert(
            shopfds_broker::monitor::lateness::PLANNED_HEADER.to_owned(),
            Value::from(self.created_at.timestamp_millis()),
        );
        Ok(Outgoing {
            exchange: m.exchange,
            routing_key: m.routing_key,
            headers,
            properties,
            body: m.body,
        })
    }
}

/// An `outbox` row as selected.
#[derive(sqlx::FromRow)]
pub(super) struct Row {
    id: i64,
    task_id: String,
    exchange: String,
    routing_key: String,
    headers: serde_json::Value,
    properties: serde_json::Value,
    body: Vec<u8>,
    attempts: i32,
    created_at: DateTime<Utc>,
}

impl From<Row> for OutboxRow {
    fn from(r: Row) -> Self {
        OutboxRow {
            id: r.id,
            message: OutboxMessage {
                task_id: r.task_id,
                exchange: r.exchange,
                routing_key: r.routing_key,
                headers: r.headers,
                properties: r.properties,
                body: r.body,
            },
            attempts: r.attempts,
            created_at: r.created_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use shopfds_protocol::{TaskArgs, payloads::OrderTask};

    use super::*;

    #[test]
    fn a_task_message_comes_back_from_its_row_as_it_was_written() {
        let msg = TaskMessage::new(
            "send_order_confirmation_email",
            OrderTask {
                order_id: uuid::Uuid::nil(),
            }
            .to_kwargs(),
        );
        let created_at = Utc::now();
        let mut written = Outgoing::task(&msg, "email");
        written.headers.insert(
            shopfds_broker::monitor::lateness::PLANNED_HEADER.to_owned(),
            Value::from(created_at.timestamp_millis()),
        );
        let row = OutboxRow {
            id: 7,
            message: OutboxMessage::task(&msg, "email"),
            attempts: 0,
            created_at,
        };
        assert_eq!(row.message.task_id, msg.id());
        assert_eq!(row.into_outgoing(), Ok(written));
        let pending = PendingTask::task(&msg, "email");
        assert_eq!(
            (
                pending.task_id.as_str(),
                pending.name.as_str(),
                pending.queue.as_str()
            ),
            (msg.id(), "send_order_confirmation_email", "email")
        );
    }

    #[test]
    fn a_row_whose_headers_are_not_an_object_is_refused_by_id() {
        let row = OutboxRow {
            id: 42,
            message: OutboxMessage {
                task_id: "t".to_owned(),
                exchange: "email".to_owned(),
                routing_key: "email".to_owned(),
                headers: Value::Array(Vec::new()),
                properties: serde_json::json!({}),
                body: Vec::new(),
            },
            attempts: 0,
            created_at: Utc::now(),
        };
        let err = row.into_outgoing().err().unwrap_or_default();
        assert!(err.starts_with("outbox row 42: headers"), "{err}");
    }
}
