//! RabbitMQ for ShopFDS (lapin): connection and reconnection, the whole topology, a confirmed
//! publisher, and the worker runtime every worker binary uses (per-queue prefetch, bounded
//! concurrency, acks after the task finished, retries through the broker's delay tree, dead
//! letters with a reason, time limits, graceful shutdown), writing states through a result backend trait.

pub mod amqp;
pub mod connected;
pub mod monitor;
pub mod nodes;
pub mod ops;
pub mod publisher;
pub mod reconnecting;
pub mod runtime;
pub mod service;
pub mod settings;
pub mod stack;
pub mod state;
pub mod tls;
pub mod topology;

pub use lapin;
pub use publisher::{Outgoing, Publisher};
pub use reconnecting::ReconnectingPublisher;
pub use runtime::{
    BackendError, Hook, RateLimit, Registry, ResultBackend, RetryPolicy, StateChange, Task,
    TaskContext, TaskError, TaskFailure, TaskOptions, Worker,
};
pub use settings::{BrokerSettings, QueueConsumer, QueueType, WorkerSettings};
pub use state::BrokerState;
pub use tls::BrokerTls;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error(transparent)]
    Config(#[from] shopfds_config::ConfigError),
    #[error("AMQP: {0}")]
    Amqp(#[from] lapin::Error),
    /// Every node of a `BROKER_URL` listing several refused or failed: each node (password
    /// redacted) with its error, in the order tried.
    #[error("no broker node reachable: {0}")]
    NoNode(String),
    /// Declaring `name` failed with PRECONDITION_FAILED: it already exists with other
    /// properties (for a queue, other `x-` arguments: celery issue 6509). `reason` is the
    /// broker's text, which names the differing argument and both values.
    #[error(
        "{kind} {name:?} already exists with other arguments than this service declares: \
         {reason}. Fix: delete the {kind} so it is declared again as here (move its messages \
         first), or make whoever declared it use the same arguments (a Celery app: the \
         `task_queues` of interop/python/shopfds_celery.py); see the README, \
         \"Queue arguments\""
    )]
    Inequivalent {
        /// `queue` or `exchange`.
        kind: &'static str,
        name: String,
        reason: String,
    },
    #[error("{0}")]
    Backend(#[from] BackendError),
    /// The worker's publishing channel closed under it (RabbitMQ closes a channel that publishes
    /// to an exchange that does not exist): the session ends and the worker reconnects, so
    /// retries, deferrals and dead letters get a working channel again.
    #[error("the publishing channel closed: {0}")]
    PublisherLost(String),
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
    /// The confirm did not arrive in time; the message may or may not be in the queue.
    #[error("no publisher confirm within {0:?}")]
    ConfirmTimeout(std::time::Duration),
    /// A [`ReconnectingPublisher`] could not get a confirm before its retry window ended.
    #[error("not confirmed within {window:?} (broker unreachable or refusing): {last_error}")]
    GaveUp {
        window: std::time::Duration,
        last_error: String,
    },
}

impl PublishError {
    /// Whether publishing the same message again may succeed: the connection or channel was
    /// lost, no confirm came, or the broker nacked. An unroutable message stays unroutable.
    pub fn is_retryable(&self) -> bool {
        !matches!(
            self,
            PublishError::Unroutable { .. } | PublishError::GaveUp { .. }
        )
    }
}
