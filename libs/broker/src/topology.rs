//! Declares the whole topology: the seed's work exchanges and queues with their dead-letter
//! arguments, the `dlx` exchange with `failed.<queue>` queues, and kombu's native delayed
//! delivery tree that holds countdowns, ETAs and retries inside the broker.
//!
//! Every declaration is idempotent and matches what a Celery app configured like the seed (and
//! kombu's `declare_native_delayed_delivery_exchanges_and_queues`) declares, so both can share
//! one broker. A queue or exchange that already exists with other arguments makes its declare
//! fail with PRECONDITION_FAILED; that is returned as [`BrokerError::Inequivalent`], naming the
//! queue and carrying the broker's text, which names the argument and both values.

use lapin::options::{
    ExchangeBindOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ExchangeKind};
use shopfds_protocol::names::{
    DEAD_LETTER_EXCHANGE, DELAY_LEVELS, DELAYED_DELIVERY_EXCHANGE, WORK_QUEUES, dead_letter_queue,
    delay_level_name,
};

use crate::{BrokerError, BrokerSettings, QueueType};

fn durable_exchange() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    }
}

fn durable_queue() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

/// `error` as [`BrokerError::Inequivalent`] when the broker refused declaring `kind` `name`
/// with PRECONDITION_FAILED, else as it is.
fn declare_error(kind: &'static str, name: &str, error: lapin::Error) -> BrokerError {
    match error.kind() {
        lapin::ErrorKind::ProtocolError(amqp)
            if matches!(
                amqp.kind(),
                AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED)
            ) =>
        {
            BrokerError::Inequivalent {
                kind,
                name: name.to_owned(),
                reason: amqp.get_message().as_str().to_owned(),
            }
        }
        _ => BrokerError::Amqp(error),
    }
}

async fn declare_queue(channel: &Channel, name: &str, args: FieldTable) -> Result<(), BrokerError> {
    channel
        .queue_declare(name.into(), durable_queue(), args)
        .await
        .map(drop)
        .map_err(|e| declare_error("queue", name, e))
}

async fn declare_exchange(
    channel: &Channel,
    name: &str,
    kind: ExchangeKind,
) -> Result<(), BrokerError> {
    channel
        .exchange_declare(name.into(), kind, durable_exchange(), FieldTable::default())
        .await
        .map_err(|e| declare_error("exchange", name, e))
}

fn long_string(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

/// The arguments of work queue `queue`, exactly as the seed's `task_queues` gives them.
pub fn work_queue_arguments(queue: &str, queue_type: QueueType) -> FieldTable {
    work_queue_arguments_with(queue, queue_type, None)
}

/// As [`work_queue_arguments`], plus `x-max-priority` on a classic queue when `max_priority` is
/// set (what Celery's `task_queue_max_priority` adds). Quorum queues get none: RabbitMQ 3.x
/// refuses `x-max-priority` there and has no priorities; RabbitMQ 4 quorum queues know two
/// levels (a message `priority` above 4 is high) without any argument.
pub fn work_queue_arguments_with(
    queue: &str,
    queue_type: QueueType,
    max_priority: Option<u8>,
) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-dead-letter-exchange".into(),
        long_string(DEAD_LETTER_EXCHANGE),
    );
    args.insert(
        "x-dead-letter-routing-key".into(),
        long_string(&dead_letter_queue(queue)),
    );
    // A classic queue is declared without x-queue-type, as kombu does; saying "classic"
    // explicitly would not match a queue a Celery app declared first.
    if queue_type == QueueType::Quorum {
        args.insert("x-queue-type".into(), long_string("quorum"));
    } else if let Some(max) = max_priority {
        // An int, as py-amqp writes it, so a Celery app's declaration is equivalent.
        args.insert(
            "x-max-priority".into(),
            crate::amqp::json_to_amqp(&i64::from(max).into()),
        );
    }
    args
}

/// The arguments of a dead-letter queue `failed.<queue>` and of dlq-reprocessor's
/// `parked.<queue>`: none on a classic queue (as kombu declares them), `x-queue-type=quorum` when
/// `QUEUE_TYPE=quorum`, so a dead letter survives the loss of a node as the work queue's
/// messages do.
pub fn dead_letter_queue_arguments(queue_type: QueueType) -> FieldTable {
    let mut args = FieldTable::default();
    if queue_type == QueueType::Quorum {
        args.insert("x-queue-type".into(), long_string("quorum"));
    }
    args
}

/// Declares everything with the seed's arguments (no priorities). Safe to call at every start
/// and after every reconnect.
pub async fn declare(channel: &Channel, queue_type: QueueType) -> Result<(), BrokerError> {
    declare_with(channel, queue_type, None).await
}

/// Declares everything as `broker` configures it (queue type, `BROKER_MAX_PRIORITY`).
pub async fn declare_for(channel: &Channel, broker: &BrokerSettings) -> Result<(), BrokerError> {
    declare_with(channel, broker.queue_type, broker.max_priority).await
}

/// Declares everything; classic work queues with `x-max-priority` when `max_priority` is set.
pub async fn declare_with(
    channel: &Channel,
    queue_type: QueueType,
    max_priority: Option<u8>,
) -> Result<(), BrokerError> {
    if max_priority.is_some() && queue_type == QueueType::Quorum {
        tracing::warn!(
            "BROKER_MAX_PRIORITY is ignored: quorum queues take no x-max-priority (RabbitMQ 3.x \
             has no priorities on them, RabbitMQ 4 two levels: priority above 4 is high)"
        );
    }
    declare_exchange(channel, DEAD_LETTER_EXCHANGE, ExchangeKind::Topic).await?;
    for queue in WORK_QUEUES {
        declare_work_queue(channel, queue, queue_type, max_priority).await?;
    }
    declare_delay_tree(channel, queue_type).await?;
    for queue in WORK_QUEUES {
        // Messages leaving the tree carry `<28 bits>.<queue>`; a direct exchange cannot match
        // that, so the work queue is bound to the delivery exchange itself.
        channel
            .queue_bind(
                queue.into(),
                DELAYED_DELIVERY_EXCHANGE.into(),
                format!("#.{queue}").into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(())
}

async fn declare_work_queue(
    channel: &Channel,
    queue: &str,
    queue_type: QueueType,
    max_priority: Option<u8>,
) -> Result<(), BrokerError> {
    declare_exchange(channel, queue, ExchangeKind::Direct).await?;
    declare_queue(
        channel,
        queue,
        work_queue_arguments_with(queue, queue_type, max_priority),
    )
    .await?;
    channel
        .queue_bind(
            queue.into(),
            queue.into(),
            queue.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let failed = dead_letter_queue(queue);
    declare_queue(channel, &failed, dead_letter_queue_arguments(queue_type)).await?;
    channel
        .queue_bind(
            failed.as_str().into(),
            DEAD_LETTER_EXCHANGE.into(),
            failed.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(())
}

/// kombu's binary tree: level L holds a message for 2^L seconds when bit L of its routing key is
/// 1, and passes it straight on to level L-1 when the bit is 0. Every message in one level's
/// queue has the same TTL, so a short delay never waits behind a long one.
///
/// As quorum queues (RabbitMQ 3.10 and later: message TTL and dead-lettering) a level
/// dead-letters `at-least-once`, which RabbitMQ accepts only with `x-overflow=reject-publish`
/// (set on both kinds, as kombu does): a message whose TTL ran out leaves the level only once
/// the next queue confirmed it, so a node lost mid-hop delays a retry and never drops it
/// (at-most-once, RabbitMQ's default, would).
async fn declare_delay_tree(channel: &Channel, queue_type: QueueType) -> Result<(), BrokerError> {
    let mut routing_key = "1.#".to_owned();
    for level in (0..DELAY_LEVELS).rev() {
        let name = delay_level_name(level);
        let next = if level > 0 {
            delay_level_name(level - 1)
        } else {
            DELAYED_DELIVERY_EXCHANGE.to_owned()
        };
        declare_exchange(channel, &name, ExchangeKind::Topic).await?;
        let mut args = FieldTable::default();
        args.insert("x-queue-type".into(), long_string(queue_type.as_str()));
        args.insert("x-overflow".into(), long_string("reject-publish"));
        // Typed as py-amqp types Python ints, so the arguments are equivalent to kombu's.
        args.insert(
            "x-message-ttl".into(),
            crate::amqp::json_to_amqp(&((1i64 << level) * 1000).into()),
        );
        args.insert("x-dead-letter-exchange".into(), long_string(&next));
        if queue_type == QueueType::Quorum {
            args.insert(
                "x-dead-letter-strategy".into(),
                long_string("at-least-once"),
            );
        }
        declare_queue(channel, &name, args).await?;
        channel
            .queue_bind(
                name.as_str().into(),
                name.as_str().into(),
                routing_key.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        routing_key = format!("*.{routing_key}");
    }
    declare_exchange(channel, DELAYED_DELIVERY_EXCHANGE, ExchangeKind::Topic).await?;
    let mut routing_key = "0.#".to_owned();
    for level in (1..DELAY_LEVELS).rev() {
        channel
            .exchange_bind(
                delay_level_name(level - 1).as_str().into(),
                delay_level_name(level).as_str().into(),
                routing_key.as_str().into(),
                ExchangeBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        routing_key = format!("*.{routing_key}");
    }
    channel
        .exchange_bind(
            DELAYED_DELIVERY_EXCHANGE.into(),
            delay_level_name(0).as_str().into(),
            routing_key.as_str().into(),
            ExchangeBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(())
}
