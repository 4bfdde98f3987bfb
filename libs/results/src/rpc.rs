//! Celery's `rpc://` result backend: every state change of a message that carries `reply_to` is
//! sent back to the client that asked, as a message, exactly as Celery's `RPCBackend.store_result`
//! sends it, so a stock client configured with `result_backend='rpc://'` gets `.get()`, `.state`
//! and `.info` (PROGRESS meta) from a Rust worker.
//!
//! The contract:
//! - The reply goes to the default exchange (`""`) with routing key = the message's `reply_to`
//!   (the client's reply queue), `correlation_id` = the task id, `content_type
//!   application/json`, `content_encoding utf-8`, `delivery_mode` 1 (Celery's
//!   `result_persistent=False`), priority 0, no headers, and the body `{"task_id", "status", "result", "traceback",
//!   "children"}` with `result` as in [`crate::celery_meta`] (an exception dict for failures).
//! - A change whose message has no `reply_to` (not sent by an rpc client) sends nothing.
//! - A reply whose queue is gone (the client left: unroutable, as it is published `mandatory`)
//!   or that cannot be sent is logged and dropped: it never fails the task nor holds its ack.
//!   [`ResultBackend::record`] resolves once the broker confirmed the reply (or gave up).
//! - Nothing is kept: [`ResultBackend::get`] answers `None` (`GET /v1/tasks/{id}` knows no task
//!   under `rpc://`), as Celery's rpc backend keeps nothing a third party can read.
//! - Chords cannot complete here (Celery refuses them under rpc too): [`ResultBackend::check_chord`]
//!   refuses every chord part with the reason, and the part goes to the dead-letter queue.

use std::time::Duration;

use futures::FutureExt;
use serde_json::{Map, Value, json};
use shopfds_broker::runtime::backend::{
    BackendError, BackendFuture, ChordProgress, PublishBody, ResultBackend, StateChange,
};
use shopfds_broker::{BrokerSettings, Outgoing, ReconnectingPublisher};
use shopfds_protocol::result::TaskRecord;
use shopfds_protocol::{MessageProperties, TaskMessage};

use crate::celery_meta;

const NAME: &str = "rpc";

/// Why the rpc backend refuses a chord part.
pub const NO_CHORDS: &str = "the rpc:// result backend cannot complete chords (Celery refuses \
     them under rpc too): run this worker and the client with RESULT_BACKEND=redis://… or \
     postgres";

/// The rpc backend: a publisher of replies with its own connection.
pub struct RpcBackend {
    publisher: ReconnectingPublisher,
}

impl RpcBackend {
    /// Replies are published on a connection of their own to `broker`, made on first use. A
    /// reply that cannot be confirmed within a few seconds is given up (and logged).
    pub fn new(broker: &BrokerSettings) -> Self {
        let publisher = ReconnectingPublisher::new(broker.clone())
            .without_topology()
            .with_retry_for(Duration::from_secs(5))
            .with_confirm_timeout(Duration::from_secs(5));
        RpcBackend { publisher }
    }

    /// Connects now rather than on the first reply (so a bad broker URL shows at start).
    pub async fn connect(&self) -> Result<(), BackendError> {
        self.publisher
            .connect()
            .await
            .map_err(|e| BackendError::new(NAME, e))
    }
}

/// The reply Celery's rpc backend sends for `change`, when its message asked for one.
pub fn reply(change: &StateChange) -> Option<Outgoing> {
    let reply_to = change.reply_to()?;
    let task_id = &change.update.task_id;
    let body = json!({
        "task_id": task_id,
        "status": celery_meta::celery_status(change.update.state),
        "result": celery_meta::encode_result(change),
        "traceback": null,
        "children": [],
    });
    Some(Outgoing {
        exchange: String::new(),
        routing_key: reply_to.to_owned(),
        headers: Map::new(),
        properties: MessageProperties {
            correlation_id: task_id.clone(),
            content_type: shopfds_protocol::message::CONTENT_TYPE_JSON.to_owned(),
            content_encoding: shopfds_protocol::message::CONTENT_ENCODING_UTF8.to_owned(),
            reply_to: None,
            // What kombu sends for a reply (checked against a stock worker).
            priority: Some(0),
            delivery_mode: 1,
        },
        body: celery_meta::encode(&body),
    })
}

impl ResultBackend for RpcBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn record(&self, change: StateChange) -> BackendFuture<'_, ()> {
        async move {
            let Some(reply) = reply(&change) else {
                return Ok(());
            };
            if let Err(e) = self.publisher.publish(&reply).await {
                tracing::warn!(error = %e, task_id = %change.update.task_id, reply_to = %reply.routing_key, state = %change.update.state, "rpc reply dropped");
            }
            Ok(())
        }
        .boxed()
    }

    fn get<'a>(&'a self, _task_id: &'a str) -> BackendFuture<'a, Option<TaskRecord>> {
        async { Ok(None) }.boxed()
    }

    /// Replies go over the worker's own broker connection, which has its own reconnection.
    fn ping(&self) -> BackendFuture<'_, ()> {
        async { Ok(()) }.boxed()
    }

    fn check_chord(&self, _msg: &TaskMessage) -> Result<(), String> {
        Err(NO_CHORDS.to_owned())
    }

    fn chord_part_succeeded<'a>(
        &'a self,
        _msg: &'a TaskMessage,
        _result: &'a Value,
        _publish_body: PublishBody<'a>,
    ) -> BackendFuture<'a, ChordProgress> {
        async { Err(BackendError::new(NAME, NO_CHORDS)) }.boxed()
    }

    fn chord_part_failed<'a>(
        &'a self,
        _msg: &'a TaskMessage,
        _reason: &'a str,
    ) -> BackendFuture<'a, bool> {
        async { Ok(false) }.boxed()
    }
}

#[cfg(test)]
mod tests {
    use shopfds_protocol::TaskState;
    use shopfds_protocol::result::TaskStateUpdate;

    use super::*;

    fn change(state: TaskState, reply_to: Option<&str>) -> StateChange {
        let mut change = StateChange::new(TaskStateUpdate {
            task_id: "t-1".into(),
            name: "add".into(),
            queue: "default".into(),
            state,
            retries: 0,
            progress: None,
            result: Some(json!(5)),
            error: None,
            expires_at: None,
        });
        let mut message = shopfds_protocol::TaskMessage::new("add", serde_json::Map::new());
        message.properties.reply_to = reply_to.map(str::to_owned);
        change.message = Some(std::sync::Arc::new(message));
        change
    }

    #[test]
    fn a_reply_is_what_celery_sends() {
        let out = reply(&change(TaskState::Success, Some("q-1"))).unwrap();
        assert_eq!(
            (out.exchange.as_str(), out.routing_key.as_str()),
            ("", "q-1")
        );
        assert_eq!(out.properties.correlation_id, "t-1");
        assert_eq!(out.properties.delivery_mode, 1);
        assert_eq!(
            String::from_utf8(out.body).unwrap(),
            r#"{"task_id": "t-1", "status": "SUCCESS", "result": 5, "traceback": null, "children": []}"#
        );
    }

    #[test]
    fn no_reply_to_no_reply() {
        assert!(reply(&change(TaskState::Success, None)).is_none());
        assert!(reply(&change(TaskState::Success, Some(""))).is_none());
    }
}
