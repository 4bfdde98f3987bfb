//! A confirmed publisher: persistent messages, `mandatory` so an unroutable message comes back as
//! an error instead of vanishing, and confirms pipelined over a batch rather than awaited one by
//! one.

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
        // Each publish hands its frames to lapin's I/O loop and waits until they are written;
        // awaiting them together lets one wake-up of the loop write many (at several times the
        // rate of one at a time). They are first polled in order, which fixes their order on
        // the channel.
        let pending = futures::future::join_all(msgs.iter().map(|msg| {
            let props = basic_properties(&msg.properties, &msg.headers);
            self.channel.basic_publish(
                msg.exchange.as_str().into(),
                msg.routing_key.as_str().into(),
                BasicPublishOptions {
                    mandatory: true,
                    immediate: false,
                },
                &msg.body,
                props,
            )
        }))
        .await;
        let mut results = Vec::with_capacity(msgs.len());
        for (sent, msg) in pending.into_iter().zip(msgs) {
            let outcome = match sent {
                Err(e) => Err(PublishError::Amqp(e)),
                Ok(confirm) => match confirm.await {
                    Err(e) => Err(PublishError::Amqp(e)),
                    Ok(Confirmation::Ack(None)) => Ok(()),
                    Ok(Confirmation::Ack(Some(_returned))) => Err(PublishError::Unroutable {
                        exchange: msg.exchange.clone(),
                        routing_key: msg.routing_key.clone(),
                    }),
                    Ok(Confirmation::Nack(_)) => Err(PublishError::Nacked),
                    Ok(Confirmation::NotRequested) => Ok(()),
                },
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
