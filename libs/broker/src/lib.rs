//! RabbitMQ for ShopFDS (lapin): connection and reconnection, the whole topology, a confirmed
//! publisher, and the worker runtime every worker binary uses (per-queue prefetch, bounded
//! concurrency, acks after the task finished, retries through the broker's delay tree, dead
//! letters with a reason, time limits, graceful shutdown, results in PostgreSQL).

pub mod amqp;
pub mod ops;
pub mod publisher;
pub mod service;
pub mod settings;
pub mod topology;
pub mod worker;

pub use lapin;
pub use publisher::{Outgoing, Publisher};
pub use settings::{BrokerSettings, QueueConsumer, QueueType, WorkerSettings};
pub use worker::{
    Hook, RateLimit, Registry, RetryPolicy, TaskContext, TaskError, TaskFailure, TaskOptions,
    Worker,
};

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("{variable}: {message}")]
    Config {
        variable: &'static str,
        message: String,
    },
    #[error("AMQP: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("result store: {0}")]
    Store(#[from] shopfds_store::StoreError),
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("AMQP: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("unroutable: no queue bound to exchange {exchange:?} with routing key {routing_key:?}")]
    Unroutable {
        exchange: String,
        routing_key: String,
    },
    #[error("the broker refused the message (nack)")]
    Nacked,
    #[error("the publishing channel is closed")]
    Closed,
}
