//! A confirmed publisher: persistent messages, `mandatory` so an unroutable message comes back as
//! an error instead of vanishing, and confirms pipelined over a batch rather than awaited one by
//! one.

use std::time::Duration;

use lapin::Confirmation;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{Channel, Connection};
use serde_json::{Map, Value};
use shopfds_protocol::message::TRACEPARENT_HEADER;
use shopfds_protocol::names::{DELAY_LEVELS, delay_level_name, delayed_routing_key};
use shopfds_protocol::{MessageProperties, TaskMessage};

use crate::amqp::basic_properties;
use crate::{BrokerError, PublishError};

/// A message ready to publish: where it goes, and its headers, properties and body.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    pub exchange: String,
    pub routing_key: String,
    pub headers: Map<String, Value>,
    pub properties: MessageProperties,
    pub body: Vec<u8>,
}

impl Outgoing {
    /// A task message for work queue `queue` (exchange and routing key both `queue`, as the seed
    /// declares them), carrying the current trace context.
    pub fn task(msg: &TaskMessage, queue: &str) -> Outgoing {
        let mut headers = msg.headers_map();
        for (k, v) in shopfds_telemetry::propagation::current_context_headers() {
            headers.entry(k).or_insert(Value::String(v));
        }
        Outgoing {
            exchange: queue.to_owned(),
            routing_key: queue.to_owned(),
            headers,
            properties: msg.properties.clone(),
            body: msg.body(),
        }
    }

    /// The same message routed through the broker's delay tree, to reach `routing_key`'s queue
    /// after `seconds` (rounded up to whole seconds, at least 1; capped at the tree's maximum).
    pub fn delayed(mut self, seconds: u64) -> Outgoing {
        let seconds = seconds.clamp(1, (1 << DELAY_LEVELS) - 1);
        let key = delayed_routing_key(seconds, &self.routing_key).unwrap_or_default();
        self.exchange = delay_level_name(DELAY_LEVELS - 1);
        self.routing_key = key;
        self
    }

    pub fn traceparent(&self) -> Option<&str> {
        self.headers.get(TRACEPARENT_HEADER).and_then(Value::as_str)
    }
}

/// A channel in confirm mode.
#[derive(Clone)]
pub struct Publisher {
    channel: Channel,
}

impl Publisher {
    pub async fn new(connection: &Connection) -> Result<Publisher, BrokerError> {
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Publisher { channel })
    }

    /// Whether the channel (and so its connection) is still open.
    pub fn is_usable(&self) -> bool {
        self.channel.status().connected()
    }

    /// Publishes one message and waits for the broker's confirm.
    pub async fn publish(&self, msg: &Outgoing) -> Result<(), PublishError> {
        self.publish_batch(std::slice::from_ref(msg))
            .await
            .pop()
            .unwrap_or(Err(PublishError::Closed))
    }

    /// Publishes every message, then awaits the confirms: one round trip for the whole batch.
    /// The result for each message is in the same position as the message.
    pub async fn publish_batch(&self, msgs: &[Outgoing]) -> Vec<Result<(), PublishError>> {
        let refs: Vec<&Outgoing> = msgs.iter().collect();
        self.publish_refs(&refs, None).await
    }

    /// As [`Publisher::publish_batch`], but a confirm that has not arrived `confirm_timeout` after
    /// the batch was sent counts as lost ([`PublishError::ConfirmTimeout`]): a connection that
    /// died without a word must not hold the caller forever.
    pub async fn publish_batch_within(
        &self,
        msgs: &[&Outgoing],
        confirm_timeout: Duration,
    ) -> Vec<Result<(), PublishError>> {
        self.publish_refs(msgs, Some(confirm_timeout)).await
    }

    async fn publish_refs(
        &self,
        msgs: &[&Outgoing],
        confirm_timeout: Option<Duration>,
    ) -> Vec<Result<(), PublishError>> {
        let deadline = confirm_timeout.map(|t| tokio::time::Instant::now() + t);
        // Each publish hands its frames to lapin's I/O loop and waits until they are written;
        // awaiting them together lets one wake-up of the loop write many (at several times the
        // rate of one at a time). They are first polled in order, which fixes their order on
        // the channel.
        let sent_ms = chrono::Utc::now().timestamp_millis();
        let publishes = futures::future::join_all(msgs.iter().map(|msg| {
            let props = stamped(basic_properties(&msg.properties, &msg.headers), sent_ms);
            self.channel.basic_publish(
                msg.exchange.as_str().into(),
                msg.routing_key.as_str().into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                &msg.body,
                props,
            )
        }));
        let sent = match deadline {
            None => Some(publishes.await),
            Some(at) => tokio::time::timeout_at(at, publishes).await.ok(),
        };
        let timed_out = || PublishError::ConfirmTimeout(confirm_timeout.unwrap_or_default());
        let pending: Vec<Result<_, PublishError>> = match sent {
            Some(sent) => sent
                .into_iter()
                .map(|s| s.map_err(PublishError::Amqp))
                .collect(),
            // Not even written in time: all of them count as lost (some may arrive; the caller
            // publishes again, at least once).
            None => msgs.iter().map(|_| Err(timed_out())).collect(),
        };
        let mut results = Vec::with_capacity(msgs.len());
        for (sent, msg) in pending.into_iter().zip(msgs) {
            let confirmed = match (sent, deadline) {
                (Err(e), _) => Err(e),
                (Ok(confirm), None) => confirm.await.map_err(PublishError::Amqp),
                (Ok(confirm), Some(at)) => match tokio::time::timeout_at(at, confirm).await {
                    Ok(c) => c.map_err(PublishError::Amqp),
                    Err(_) => Err(timed_out()),
                },
            };
            let outcome = match confirmed {
                Err(e) => Err(e),
                Ok(Confirmation::Ack(None)) => Ok(()),
                Ok(Confirmation::Ack(Some(_returned))) => Err(PublishError::Unroutable {
                    exchange: msg.exchange.clone(),
                    routing_key: msg.routing_key.clone(),
                }),
                Ok(Confirmation::Nack(_)) => Err(PublishError::Nacked),
                Ok(Confirmation::NotRequested) => Ok(()),
            };
            if let Ok(()) = outcome {
                shopfds_telemetry::metrics::messages_published_total()
                    .with_label_values(&[msg.exchange.as_str()])
                    .inc();
            }
            results.push(outcome);
        }
        results
    }
}

/// The properties with [`crate::monitor::lateness::SENT_HEADER`] set to `sent_ms`: when this
/// copy was published, for the lateness phases of the task that runs it.
fn stamped(props: lapin::BasicProperties, sent_ms: i64) -> lapin::BasicProperties {
    let mut headers = props.headers().clone().unwrap_or_default();
    headers.insert(
        crate::monitor::lateness::SENT_HEADER.into(),
        lapin::types::AMQPValue::LongLongInt(sent_ms),
    );
    props.with_headers(headers)
}
