//! The worker runtime: consumes the configured queues with a prefetch per queue and a cap on
//! tasks running at once, runs each message's handler, and only then acknowledges it (Celery's
//! `acks_late`): a worker that dies mid-task leaves the message to be redelivered.
//!
//! What happens to a message:
//! - cannot be read (foreign content type, bad JSON, missing headers) or names no registered
//!   task: copied to `failed.<queue>` with the reason in a header, then acked;
//! - expired (`expires` passed): state REVOKED, acked;
//! - `eta` in the future: sent through the broker's delay tree, acked (nothing waits in memory);
//! - handler succeeds: SUCCESS with the result, chain and callbacks published, a chord part
//!   counted (the last one publishes the chord's body), acked;
//! - transient error: RETRY, a copy with `retries + 1` sent through the delay tree after the
//!   policy's countdown, acked; once `max_retries` is spent, as a permanent error;
//! - permanent error or hard time limit: FAILURE, errbacks published (and a chord part fails
//!   its chord), copied to `failed.<queue>` with the reason.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::StreamExt;
use futures::future::BoxFuture;
use lapin::Connection;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, BasicRejectOptions,
};
use lapin::types::FieldTable;
use rand::Rng;
use serde_json::{Map, Value, json};
use shopfds_protocol::canvas::{Apply, CanvasError, Planned, apply};
use shopfds_protocol::names::{
    DEAD_LETTER_EXCHANGE, FAILED_AT_HEADER, ORIGINAL_QUEUE_HEADER, REASON_HEADER, dead_letter_queue,
};
use shopfds_protocol::{Signature, TaskArgs, TaskMessage, TaskState};
use shopfds_store::{ChordError, ChordPart, ChordProgress, Store, TaskStateUpdate};
use shopfds_telemetry::metrics::outcome;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::amqp::{connect_with_retry, message_properties, table_to_json};
use crate::publisher::{Outgoing, Publisher};
use crate::{BrokerError, BrokerSettings, WorkerSettings, topology};

/// How a task failed, and so what the runtime does with its message.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskError {
    /// Worth another try (network, timeouts, SMTP 4xx, partner 5xx). `countdown` overrides the
    /// task's retry policy for this one retry.
    Transient {
        message: String,
        countdown: Option<Duration>,
    },
    /// Will fail the same way every time (invalid input, not found, SMTP 5xx): no retry, the
    /// message goes to the dead-letter queue with this reason.
    Permanent { message: String },
}

impl TaskError {
    pub fn transient(message: impl fmt::Display) -> Self {
        TaskError::Transient {
            message: message.to_string(),
            countdown: None,
        }
    }

    pub fn permanent(message: impl fmt::Display) -> Self {
        TaskError::Permanent {
            message: message.to_string(),
        }
    }

    pub fn message(&self) -> &str {
        match self {
            TaskError::Transient { message, .. } | TaskError::Permanent { message } => message,
        }
    }

    /// The `exc_type` shown in results, as a Celery user would read it.
    pub fn kind(&self) -> &'static str {
        match self {
            TaskError::Transient { .. } => "TransientError",
            TaskError::Permanent { .. } => "PermanentError",
        }
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind(), self.message())
    }
}

/// When to try again after a transient error.
#[derive(Debug, Clone, PartialEq)]
pub enum RetryPolicy {
    /// Celery's `countdown`: the same wait every time.
    Fixed(Duration),
    /// Celery's `retry_backoff`: `base × 2^retries`, capped at `max` (`retry_backoff_max`), and
    /// with `jitter` a uniformly random wait in `[0, that]` (full jitter, `retry_jitter`).
    Exponential {
        base: Duration,
        max: Duration,
        jitter: bool,
    },
}

impl RetryPolicy {
    /// The wait before retry number `retries + 1`.
    pub fn delay(&self, retries: u32) -> Duration {
        match self {
            RetryPolicy::Fixed(d) => *d,
            RetryPolicy::Exponential { base, max, jitter } => {
                let factor = 2u32.saturating_pow(retries.min(31));
                let capped = base.saturating_mul(factor).min(*max);
                if *jitter {
                    let ms = u64::try_from(capped.as_millis()).unwrap_or(u64::MAX);
                    Duration::from_millis(rand::rng().random_range(0..=ms))
                } else {
                    capped
                }
            }
        }
    }
}

/// Celery's `rate_limit` ("10/s", "100/m", "1000/h"): at most `count` starts of the task per
/// `per`, per worker process, spaced evenly (a token bucket holding one token, as Celery's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub count: u32,
    pub per: Duration,
}

impl RateLimit {
    /// The time between two starts.
    pub fn interval(&self) -> Duration {
        self.per / self.count.max(1)
    }
}

impl std::str::FromStr for RateLimit {
    type Err = String;

    /// Parses Celery's syntax: a positive whole number, `/`, and `s`, `m` or `h`; a bare number
    /// is per second, as in Celery.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let (count, unit) = text.split_once('/').unwrap_or((text, "s"));
        let count: u32 = count.trim().parse().map_err(|_| {
            format!("rate limit {text:?}: expected <tasks>/<s|m|h>, e.g. \"10/s\" or \"100/m\"")
        })?;
        if count == 0 {
            return Err(format!(
                "rate limit {text:?}: the number of tasks must be at least 1"
            ));
        }
        let per = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            other => {
                return Err(format!(
                    "rate limit {text:?}: unknown unit {other:?} (use s, m or h)"
                ));
            }
        };
        Ok(RateLimit { count, per })
    }
}

/// What an `on_retry` or `on_failure` hook is told.
#[derive(Debug, Clone)]
pub struct TaskFailure {
    pub task_id: String,
    pub task: String,
    pub queue: String,
    /// The handler's error (for a hard time limit, a permanent `TimeLimitExceeded` error).
    pub error: TaskError,
    /// Retries done before this attempt (the message's `retries` header).
    pub retries: u32,
    /// `on_retry`: the wait before the next attempt. `on_failure`: none.
    pub retry_in: Option<Duration>,
    /// `on_failure`: the reason written to the dead letter (`x-shopfds-reason`).
    pub reason: String,
}

/// A callback declared next to a handler (Celery's `on_retry` / `on_failure`), for error
/// reporting or metrics of one's own. It runs on the worker's task, so it must be quick; a hook
/// that panics is logged and does not change what happens to the message.
#[derive(Clone)]
pub struct Hook(Arc<dyn Fn(&TaskFailure) + Send + Sync>);

impl Hook {
    pub fn new(f: impl Fn(&TaskFailure) + Send + Sync + 'static) -> Self {
        Hook(Arc::new(f))
    }

    fn call(&self, event: &TaskFailure, which: &str) {
        let f = &self.0;
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(event))).is_err() {
            tracing::error!(hook = which, task_id = %event.task_id, "task hook panicked");
        }
    }
}

impl fmt::Debug for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Hook(..)")
    }
}

impl PartialEq for Hook {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// Options declared next to a handler (Celery's `@app.task(...)` arguments).
#[derive(Debug, Clone, PartialEq)]
pub struct TaskOptions {
    pub max_retries: u32,
    pub retry: RetryPolicy,
    /// Don't write states and results for this task (fire-and-forget, for throughput). Celery's
    /// `ignore_result`; a message's `ignore_result` header has the same effect. Nothing is
    /// written at all, failures included (Celery's `store_errors_even_if_ignored=False`); the
    /// dead-letter queue and the `on_failure` hook still see failures.
    pub ignore_result: bool,
    /// Override the worker's default limits (a message's own `timelimit` header wins).
    pub time_limit: Option<Duration>,
    pub soft_time_limit: Option<Duration>,
    /// Celery's `rate_limit`: starts of this task per worker process. A message waiting for its
    /// turn holds a concurrency slot, as in Celery.
    pub rate_limit: Option<RateLimit>,
    /// Called after a retry was scheduled.
    pub on_retry: Option<Hook>,
    /// Called when the task failed for good (permanent error, retries spent, hard time limit),
    /// after its FAILURE was recorded and before its message goes to the dead-letter queue.
    pub on_failure: Option<Hook>,
}

impl Default for TaskOptions {
    /// The seed's email task: 3 retries, 60 s apart.
    fn default() -> Self {
        TaskOptions {
            max_retries: 3,
            retry: RetryPolicy::Fixed(Duration::from_secs(60)),
            ignore_result: false,
            time_limit: None,
            soft_time_limit: None,
            rate_limit: None,
            on_retry: None,
            on_failure: None,
        }
    }
}

/// One token bucket per rate-limited task name: the next free start time.
struct RateLimiter {
    interval: Duration,
    next: std::sync::Mutex<Instant>,
}

impl RateLimiter {
    /// Waits for this task's next start slot.
    async fn acquire(&self) {
        let now = Instant::now();
        let slot = {
            let Ok(mut next) = self.next.lock() else {
                return;
            };
            let slot = (*next).max(now);
            *next = slot + self.interval;
            slot
        };
        if slot > now {
            tokio::time::sleep_until(slot.into()).await;
        }
    }
}

pub type HandlerFuture = BoxFuture<'static, Result<Value, TaskError>>;
type Handler = Arc<dyn Fn(TaskContext) -> HandlerFuture + Send + Sync>;

/// Task name → handler and options.
#[derive(Clone, Default)]
pub struct Registry {
    handlers: HashMap<String, (Handler, TaskOptions)>,
}

impl Registry {
    pub fn new() -> Self {
        Registry::default()
    }

    pub fn register<F, Fut>(&mut self, name: &str, options: TaskOptions, handler: F) -> &mut Self
    where
        F: Fn(TaskContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, TaskError>> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |ctx| Box::pin(handler(ctx)));
        self.handlers.insert(name.to_owned(), (handler, options));
        self
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.handlers.keys().map(String::as_str)
    }

    fn get(&self, name: &str) -> Option<&(Handler, TaskOptions)> {
        self.handlers.get(name)
    }
}

/// What a handler gets: the message, the result store, and the soft time limit.
#[derive(Clone)]
pub struct TaskContext {
    pub message: Arc<TaskMessage>,
    pub queue: String,
    pub store: Store,
    /// Cancelled when the soft time limit passes: clean up and return.
    pub soft_limit: CancellationToken,
    /// The broker says this message was delivered before (to this or another worker).
    pub redelivered: bool,
    /// The worker's confirmed publisher, for tasks that fan out more work (a group of chunks).
    pub publisher: Publisher,
}

impl TaskContext {
    pub fn id(&self) -> &str {
        self.message.id()
    }

    /// The typed arguments; an argument error is permanent (retrying cannot fix it).
    pub fn bind<T: TaskArgs>(&self) -> Result<T, TaskError> {
        self.message.bind().map_err(TaskError::permanent)
    }

    /// Celery's `update_state(state="PROGRESS", meta={current, total, message})`.
    pub async fn progress(&self, current: u64, total: u64, message: &str) {
        let update = TaskStateUpdate {
            task_id: self.id().to_owned(),
            name: self.message.task().to_owned(),
            queue: self.queue.clone(),
            state: TaskState::Progress,
            retries: i32::try_from(self.message.headers.retries).unwrap_or(i32::MAX),
            progress: Some(json!({"current": current, "total": total, "message": message})),
            result: None,
            error: None,
            expires_at: None,
        };
        if let Err(e) = self.store.record_task_state(&update).await {
            tracing::warn!(error = %e, task_id = %self.id(), "could not record progress");
        }
    }
}

/// A worker: consumes its queues until `shutdown` fires, then drains.
pub struct Worker {
    broker: BrokerSettings,
    settings: WorkerSettings,
    registry: Arc<Registry>,
    store: Store,
    /// Per rate-limited task name; kept across reconnections.
    limiters: Arc<HashMap<String, RateLimiter>>,
    /// Per consumed queue (same order as `settings.queues`), its own cap on running tasks.
    queue_slots: Vec<Option<Arc<Semaphore>>>,
}

struct Runtime {
    registry: Arc<Registry>,
    store: Store,
    publisher: Publisher,
    settings: WorkerSettings,
    limiters: Arc<HashMap<String, RateLimiter>>,
}

impl Worker {
    pub fn new(
        broker: BrokerSettings,
        settings: WorkerSettings,
        registry: Registry,
        store: Store,
    ) -> Self {
        let now = Instant::now();
        let limiters = registry
            .handlers
            .iter()
            .filter_map(|(name, (_, options))| {
                let limit = options.rate_limit?;
                Some((
                    name.clone(),
                    RateLimiter {
                        interval: limit.interval(),
                        next: std::sync::Mutex::new(now),
                    },
                ))
            })
            .collect();
        let queue_slots = settings
            .queues
            .iter()
            .map(|q| q.concurrency.map(|c| Arc::new(Semaphore::new(c))))
            .collect();
        Worker {
            broker,
            settings,
            registry: Arc::new(registry),
            store,
            limiters: Arc::new(limiters),
            queue_slots,
        }
    }

    /// Runs until `shutdown` is cancelled. A lost connection is re-established with backoff and
    /// the topology declared again; messages that were unacknowledged on it are redelivered by
    /// the broker. On shutdown, consuming stops, running tasks get `shutdown_grace` to finish,
    /// and the messages of those that did not are requeued (`basic.reject` with requeue, so
    /// another worker takes them at once); then it returns `Ok`, so the binary exits 0.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), BrokerError> {
        let semaphore = Arc::new(Semaphore::new(self.settings.concurrency));
        let tracker = TaskTracker::new();
        let abandon = CancellationToken::new();
        while let Some(conn) = connect_with_retry(&self.broker, &shutdown).await {
            match self
                .session(&conn, &semaphore, &tracker, &shutdown, &abandon)
                .await
            {
                Ok(()) => {
                    let _ = conn.close(200, "worker shutdown".into()).await;
                    return Ok(());
                }
                Err(e) => {
                    tracing::warn!(error = %e, "broker connection lost; reconnecting");
                }
            }
        }
        self.drain(&tracker, &abandon).await;
        Ok(())
    }

    async fn drain(&self, tracker: &TaskTracker, abandon: &CancellationToken) {
        tracker.close();
        let running = tracker.len();
        if running > 0 {
            tracing::info!(
                running,
                grace_secs = self.settings.shutdown_grace.as_secs(),
                "waiting for running tasks"
            );
        }
        if tokio::time::timeout(self.settings.shutdown_grace, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                unfinished = tracker.len(),
                "grace period over: unfinished tasks are abandoned and their messages requeued"
            );
            abandon.cancel();
            // Each abandoned task sends its reject; a broken connection requeues them anyway.
            let _ = tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await;
        }
    }

    /// One connection's life. `Ok` means shutdown was requested and running tasks were drained;
    /// `Err` that the connection broke.
    async fn session(
        &self,
        conn: &Connection,
        semaphore: &Arc<Semaphore>,
        tracker: &TaskTracker,
        shutdown: &CancellationToken,
        abandon: &CancellationToken,
    ) -> Result<(), BrokerError> {
        let setup = conn.create_channel().await?;
        topology::declare_for(&setup, &self.broker).await?;
        let _ = setup.close(200, "declared".into()).await;

        let runtime = Arc::new(Runtime {
            registry: self.registry.clone(),
            store: self.store.clone(),
            publisher: Publisher::new(conn).await?,
            settings: self.settings.clone(),
            limiters: self.limiters.clone(),
        });
        let mut streams = Vec::with_capacity(self.settings.queues.len());
        let mut consumers = Vec::with_capacity(self.settings.queues.len());
        for (consumer, slots) in self.settings.queues.iter().zip(&self.queue_slots) {
            let channel = conn.create_channel().await?;
            channel
                .basic_qos(
                    self.settings.prefetch_count(consumer),
                    BasicQosOptions { global: false },
                )
                .await?;
            let tag = format!("{}-{}", self.settings.hostname, consumer.queue);
            let stream = channel
                .basic_consume(
                    consumer.queue.as_str().into(),
                    tag.as_str().into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            consumers.push((channel, tag));
            let queue = consumer.queue.clone();
            streams.push(match slots.clone() {
                None => stream.map(move |d| (queue.clone(), d, None)).boxed(),
                // A queue with its own cap is only read while it has a free slot; the slot
                // travels with the message to the task that runs it.
                Some(slots) => futures::stream::unfold(stream, move |mut stream| {
                    let (queue, slots) = (queue.clone(), slots.clone());
                    async move {
                        let slot = slots.acquire_owned().await.ok()?;
                        let next = stream.next().await?;
                        Some(((queue, next, Some(slot)), stream))
                    }
                })
                .boxed(),
            });
        }
        tracing::info!(hostname = %self.settings.hostname, queues = ?self.settings.queues, concurrency = self.settings.concurrency, "worker consuming");
        let mut deliveries = futures::stream::select_all(streams);
        loop {
            let permit = tokio::select! {
                _ = shutdown.cancelled() => break,
                permit = semaphore.clone().acquire_owned() => permit,
            };
            let Ok(permit) = permit else { break };
            let next = tokio::select! {
                _ = shutdown.cancelled() => break,
                next = deliveries.next() => next,
            };
            match next {
                None => {
                    return Err(BrokerError::Amqp(lapin::Error::from(
                        lapin::ErrorKind::InvalidConnectionState(lapin::ConnectionState::Closed),
                    )));
                }
                Some((_, Err(e), _)) => return Err(BrokerError::Amqp(e)),
                Some((queue, Ok(delivery), slot)) => {
                    let runtime = runtime.clone();
                    let abandon = abandon.clone();
                    tracker.spawn(async move {
                        let acker = delivery.acker.clone();
                        tokio::select! {
                            () = runtime.process(delivery, queue) => {}
                            () = abandon.cancelled() => {
                                if let Err(e) = acker.reject(BasicRejectOptions { requeue: true }).await {
                                    tracing::warn!(error = %e, "requeue failed; the broker will redeliver the message");
                                }
                            }
                        }
                        drop(permit);
                        drop(slot);
                    });
                }
            }
        }
        // Shutdown: tell the broker to stop pushing messages. Running tasks still ack on these
        // channels; prefetched messages never started are requeued when the connection closes.
        drop(deliveries);
        for (channel, tag) in &consumers {
            if let Err(e) = channel
                .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
                .await
            {
                tracing::debug!(error = %e, consumer = %tag, "consumer cancel failed");
            }
        }
        // The channels stay open while tasks drain: a dropped channel closes, and a task that
        // finished afterwards could not ack (its message would run again elsewhere).
        self.drain(tracker, abandon).await;
        drop(consumers);
        Ok(())
    }
}

impl Runtime {
    async fn process(&self, delivery: Delivery, queue: String) {
        let content_type = delivery
            .properties
            .content_type()
            .as_ref()
            .map(|s| s.as_str().to_owned());
        let encoding = delivery
            .properties
            .content_encoding()
            .as_ref()
            .map(|s| s.as_str().to_owned());
        let msg = match TaskMessage::decode(
            content_type.as_deref(),
            encoding.as_deref(),
            delivery_headers(&delivery),
            &delivery.data,
        ) {
            Ok(msg) => msg,
            Err(e) => {
                tracing::warn!(queue = %queue, reason = %e, "unreadable message dead-lettered");
                count(&queue, "unknown", outcome::REJECTED);
                self.dead_letter(
                    &delivery,
                    &queue,
                    delivery_headers(&delivery),
                    &e.to_string(),
                )
                .await;
                return;
            }
        };
        let span = tracing::info_span!("task", otel.name = %format!("run {}", msg.task()), task.name = %msg.task(), task.id = %msg.id(), queue = %queue, retries = msg.headers.retries);
        if let Some(table) = delivery.properties.headers() {
            shopfds_telemetry::propagation::set_parent_from_amqp(&span, table);
        }
        self.run_task(delivery, queue, msg).instrument(span).await;
    }

    async fn run_task(&self, delivery: Delivery, queue: String, msg: TaskMessage) {
        let Some((handler, options)) = self.registry.get(msg.task()) else {
            let reason = format!(
                "unknown task {:?}: no handler registered on this worker",
                msg.task()
            );
            tracing::warn!(reason = %reason, "message dead-lettered");
            count(&queue, msg.task(), outcome::REJECTED);
            self.dead_letter(&delivery, &queue, delivery_headers(&delivery), &reason)
                .await;
            return;
        };
        let record = !(options.ignore_result || msg.headers.ignore_result);
        let now = Utc::now();
        if let Some(expires) = msg.headers.expires.filter(|e| *e < now) {
            tracing::info!(%expires, "expired task revoked");
            if record {
                self.record(&msg, &queue, TaskState::Revoked, None, Some(json!({"exc_type": "TaskRevokedError", "exc_message": format!("expired at {expires}")}))).await;
            }
            count(&queue, msg.task(), outcome::REVOKED);
            ack(&delivery).await;
            return;
        }
        if let Some(eta) = msg.headers.eta {
            let wait = (eta - now).num_milliseconds();
            if wait > 1000 {
                let seconds = u64::try_from(wait).unwrap_or(0).div_ceil(1000);
                let out = self
                    .forward(&delivery, &queue, delivery_headers(&delivery))
                    .delayed(seconds);
                match self.publisher.publish(&out).await {
                    Ok(()) => ack(&delivery).await,
                    Err(e) => {
                        tracing::warn!(error = %e, "could not delay an ETA task; requeued");
                        requeue(&delivery).await;
                    }
                }
                return;
            }
        }
        if let Some(limiter) = self.limiters.get(msg.task()) {
            limiter.acquire().await;
        }
        if record {
            self.record(&msg, &queue, TaskState::Started, None, None)
                .await;
        }

        let message = Arc::new(msg);
        let (hard, soft) = self.limits(&message, options);
        let soft_limit = CancellationToken::new();
        let ctx = TaskContext {
            message: message.clone(),
            queue: queue.clone(),
            store: self.store.clone(),
            soft_limit: soft_limit.clone(),
            redelivered: delivery.redelivered,
            publisher: self.publisher.clone(),
        };
        let started = Instant::now();
        // One timer polled with the handler (no extra task per message): at the soft limit it
        // cancels the handler's token and is moved on to the hard limit, where the handler's
        // future is dropped.
        let run = handler(ctx);
        let timer = tokio::time::sleep(soft);
        tokio::pin!(run, timer);
        let mut soft_fired = false;
        let outcome = loop {
            tokio::select! {
                biased;
                outcome = &mut run => break outcome,
                () = &mut timer => {
                    if !soft_fired {
                        soft_fired = true;
                        soft_limit.cancel();
                        if soft < hard {
                            tracing::warn!(soft_limit_secs = soft.as_secs_f64(), "soft time limit exceeded");
                            timer.as_mut().reset((started + hard).into());
                            continue;
                        }
                    }
                    break Err(TaskError::permanent(format!(
                        "TimeLimitExceeded: hard time limit ({}s) exceeded",
                        hard.as_secs_f64()
                    )));
                }
            }
        };
        shopfds_telemetry::metrics::task_duration_seconds()
            .with_label_values(&[queue.as_str(), message.task()])
            .observe(started.elapsed().as_secs_f64());

        match outcome {
            Ok(result) => {
                if record {
                    self.record(
                        &message,
                        &queue,
                        TaskState::Success,
                        Some(result.clone()),
                        None,
                    )
                    .await;
                }
                if let Err(e) = self.publish_followers(&message, &result).await {
                    tracing::warn!(error = %e, "chord part not counted; message requeued");
                    requeue(&delivery).await;
                    return;
                }
                count(&queue, message.task(), outcome::SUCCEEDED);
                ack(&delivery).await;
            }
            Err(TaskError::Transient {
                message: reason,
                countdown,
            }) if message.headers.retries < options.max_retries => {
                let wait =
                    countdown.unwrap_or_else(|| options.retry.delay(message.headers.retries));
                // Whole seconds, rounded up, at least 1 (the delay tree's granularity).
                let seconds = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
                let mut retry_headers = delivery_headers(&delivery);
                retry_headers.insert("retries".to_owned(), json!(message.headers.retries + 1));
                let eta = Utc::now()
                    + chrono::Duration::seconds(i64::try_from(seconds).unwrap_or(i64::MAX / 1000));
                retry_headers.insert(
                    "eta".to_owned(),
                    json!(eta.to_rfc3339_opts(chrono::SecondsFormat::Micros, false)),
                );
                let out = self
                    .forward(&delivery, &queue, retry_headers)
                    .delayed(seconds);
                match self.publisher.publish(&out).await {
                    Ok(()) => {
                        tracing::warn!(error = %reason, retry_in_secs = seconds, retries = message.headers.retries + 1, "task will be retried");
                        if record {
                            self.record(
                                &message,
                                &queue,
                                TaskState::Retry,
                                None,
                                Some(error_json("TransientError", &reason)),
                            )
                            .await;
                        }
                        count(&queue, message.task(), outcome::RETRIED);
                        if let Some(hook) = &options.on_retry {
                            let error = TaskError::Transient {
                                message: reason.clone(),
                                countdown,
                            };
                            hook.call(
                                &failure(
                                    &message,
                                    &queue,
                                    error,
                                    Some(Duration::from_secs(seconds)),
                                    String::new(),
                                ),
                                "on_retry",
                            );
                        }
                        ack(&delivery).await;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "could not schedule the retry; message requeued");
                        requeue(&delivery).await;
                    }
                }
            }
            Err(err) => {
                let reason = match &err {
                    TaskError::Transient { message: m, .. } => {
                        format!("max retries ({}) exceeded: {m}", options.max_retries)
                    }
                    TaskError::Permanent { message: m } => m.clone(),
                };
                tracing::error!(error = %reason, "task failed");
                if record {
                    self.record(
                        &message,
                        &queue,
                        TaskState::Failure,
                        None,
                        Some(error_json(err.kind(), &reason)),
                    )
                    .await;
                }
                self.publish_failure_followers(&message, &reason).await;
                count(&queue, message.task(), outcome::FAILED);
                if let Some(hook) = &options.on_failure {
                    hook.call(
                        &failure(&message, &queue, err, None, reason.clone()),
                        "on_failure",
                    );
                }
                self.dead_letter(&delivery, &queue, delivery_headers(&delivery), &reason)
                    .await;
            }
        }
    }

    fn limits(&self, msg: &TaskMessage, options: &TaskOptions) -> (Duration, Duration) {
        let from_header = |v: Option<f64>| {
            v.filter(|s| *s > 0.0 && s.is_finite())
                .map(Duration::from_secs_f64)
        };
        let hard = from_header(msg.headers.timelimit.hard())
            .or(options.time_limit)
            .unwrap_or(self.settings.time_limit);
        let soft = from_header(msg.headers.timelimit.soft())
            .or(options.soft_time_limit)
            .unwrap_or(self.settings.soft_time_limit)
            .min(hard);
        (hard, soft)
    }

    /// The delivered message, to be published again to its work queue with `headers`.
    /// A copy of the delivery for `queue` (to be delayed) with `headers`, minus RabbitMQ's
    /// dead-letter record of earlier trips through the delay tree: carried over, a later delay
    /// that passes a delay queue again looks like a dead-letter cycle, and RabbitMQ drops the
    /// message without a word.
    fn forward(
        &self,
        delivery: &Delivery,
        queue: &str,
        mut headers: Map<String, Value>,
    ) -> Outgoing {
        headers.retain(|name, _| !is_dead_letter_record(name));
        Outgoing {
            exchange: queue.to_owned(),
            routing_key: queue.to_owned(),
            headers,
            properties: message_properties(&delivery.properties),
            body: delivery.data.clone(),
        }
    }

    /// Publishes what follows a success, before the message is acked: the next link of the
    /// chain and the callbacks (with the result as first argument), and for a chord header
    /// part, its count; the last part publishes the body with the ordered results. A crash in
    /// between publishes them again with the same task ids, which idempotent handlers absorb.
    /// `Err` when the chord could not be counted or its body not published: the caller requeues
    /// the message, so the part is counted on its next delivery.
    async fn publish_followers(
        &self,
        msg: &TaskMessage,
        result: &Value,
    ) -> Result<(), FollowUpError> {
        let mut planned = Vec::new();
        let mut chain = msg.embed.chain.clone().unwrap_or_default();
        if let Some(next) = chain.pop() {
            let at = Apply {
                chain,
                ..Apply::after(&msg.headers, vec![result.clone()])
            };
            plan(&mut planned, &next, at);
        }
        for callback in msg.embed.callbacks.iter().flatten() {
            plan(
                &mut planned,
                callback,
                Apply::after(&msg.headers, vec![result.clone()]),
            );
        }
        self.publish_planned(&planned).await;

        let (Some(body), Some(group_id)) = (&msg.embed.chord, &msg.headers.group) else {
            return Ok(());
        };
        let Some(size) = body.chord_size() else {
            tracing::warn!(group_id = %group_id, body = %body.task, "chord part without chord_size (a stock client's chord needs a Celery result backend): the body cannot be counted here");
            return Ok(());
        };
        let part = ChordPart {
            group_id,
            size,
            task_id: msg.id(),
            group_index: msg.headers.group_index,
            result,
        };
        let progress = self
            .store
            .chord_part_succeeded(&part, |results| async move {
                let planned = apply(
                    body,
                    Apply::after(&msg.headers, vec![Value::Array(results)]),
                )?;
                let outgoing: Vec<Outgoing> = planned
                    .iter()
                    .map(|p| Outgoing::task(&p.message, &p.queue))
                    .collect();
                for result in self.publisher.publish_batch(&outgoing).await {
                    result?;
                }
                Ok::<(), FollowUpError>(())
            })
            .await;
        match progress {
            Ok(ChordProgress::Completed { results }) => {
                tracing::info!(group_id = %group_id, parts = results.len(), body = %body.task, "chord complete: body published");
                Ok(())
            }
            Ok(progress) => {
                tracing::debug!(group_id = %group_id, ?progress, "chord part counted");
                Ok(())
            }
            Err(ChordError::Publish(e)) => Err(e),
            Err(ChordError::Store(e)) => Err(FollowUpError::Store(e)),
        }
    }

    /// What follows a task that failed for good: its errbacks, called with its id (Celery's
    /// `link_error` on a task-message errback), and for a chord header part, the chord's
    /// failure: once per chord, the body's result becomes FAILURE (`ChordError`) and the body's
    /// own errbacks are called with the body's id. The body never runs.
    async fn publish_failure_followers(&self, msg: &TaskMessage, reason: &str) {
        let mut planned = Vec::new();
        let failed_id = Value::String(msg.id().to_owned());
        for errback in msg.embed.errbacks.iter().flatten() {
            plan(
                &mut planned,
                errback,
                Apply::after(&msg.headers, vec![failed_id.clone()]),
            );
        }
        if let (Some(body), Some(group_id)) = (&msg.embed.chord, &msg.headers.group) {
            let size = body.chord_size().unwrap_or(1);
            match self
                .store
                .chord_part_failed(group_id, size, msg.id(), reason)
                .await
            {
                Ok(true) => {
                    let chord_reason = format!("Dependency {} raised {reason}", msg.id());
                    tracing::warn!(group_id = %group_id, body = %body.task, reason = %chord_reason, "chord failed: its body will not run");
                    if let Some(body_id) = body.task_id() {
                        self.record_chord_failure(body, body_id, &chord_reason)
                            .await;
                        let body_id = Value::String(body_id.to_owned());
                        let errbacks: Vec<Signature> = body
                            .options
                            .get("link_error")
                            .cloned()
                            .and_then(|v| serde_json::from_value(v).ok())
                            .unwrap_or_default();
                        for errback in &errbacks {
                            plan(
                                &mut planned,
                                errback,
                                Apply::after(&msg.headers, vec![body_id.clone()]),
                            );
                        }
                    }
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(error = %e, group_id = %group_id, "could not record the chord's failure");
                }
            }
        }
        self.publish_planned(&planned).await;
    }

    async fn record_chord_failure(&self, body: &Signature, body_id: &str, reason: &str) {
        let expires = chrono::Duration::from_std(self.settings.result_expires)
            .unwrap_or(chrono::Duration::hours(1));
        let update = TaskStateUpdate {
            task_id: body_id.to_owned(),
            name: body.task.clone(),
            queue: body.queue(),
            state: TaskState::Failure,
            retries: 0,
            progress: None,
            result: None,
            error: Some(error_json("ChordError", reason)),
            expires_at: Some(Utc::now() + expires),
        };
        if let Err(e) = self.store.record_task_state(&update).await {
            tracing::warn!(error = %e, "could not record the chord body's failure");
        }
    }

    async fn publish_planned(&self, planned: &[Planned]) {
        if planned.is_empty() {
            return;
        }
        let outgoing: Vec<Outgoing> = planned
            .iter()
            .map(|p| Outgoing::task(&p.message, &p.queue))
            .collect();
        for (out, result) in outgoing
            .iter()
            .zip(self.publisher.publish_batch(&outgoing).await)
        {
            if let Err(e) = result {
                tracing::error!(error = %e, exchange = %out.exchange, "could not publish a follow-up task");
            }
        }
    }

    /// Copies the message to `failed.<queue>` with the reason, then acks it. If that publish
    /// fails, the message is rejected instead, and the queue's own dead-letter arguments still
    /// bring it to `failed.<queue>` (without our reason header).
    async fn dead_letter(
        &self,
        delivery: &Delivery,
        queue: &str,
        mut headers: Map<String, Value>,
        reason: &str,
    ) {
        headers.insert(REASON_HEADER.to_owned(), Value::String(reason.to_owned()));
        headers.insert(
            ORIGINAL_QUEUE_HEADER.to_owned(),
            Value::String(queue.to_owned()),
        );
        headers.insert(
            FAILED_AT_HEADER.to_owned(),
            Value::String(Utc::now().to_rfc3339()),
        );
        let failed = dead_letter_queue(queue);
        let out = Outgoing {
            exchange: DEAD_LETTER_EXCHANGE.to_owned(),
            routing_key: failed,
            headers,
            properties: message_properties(&delivery.properties),
            body: delivery.data.clone(),
        };
        match self.publisher.publish(&out).await {
            Ok(()) => ack(delivery).await,
            Err(e) => {
                tracing::warn!(error = %e, "dead-letter publish failed; rejecting to the queue's DLX");
                if let Err(e) = delivery.reject(BasicRejectOptions { requeue: false }).await {
                    tracing::warn!(error = %e, "reject failed; the broker will redeliver");
                }
            }
        }
    }

    async fn record(
        &self,
        msg: &TaskMessage,
        queue: &str,
        state: TaskState,
        result: Option<Value>,
        error: Option<Value>,
    ) {
        let expires = chrono::Duration::from_std(self.settings.result_expires)
            .unwrap_or(chrono::Duration::hours(1));
        let update = TaskStateUpdate {
            task_id: msg.id().to_owned(),
            name: msg.task().to_owned(),
            queue: queue.to_owned(),
            state,
            retries: i32::try_from(msg.headers.retries).unwrap_or(i32::MAX),
            progress: None,
            result,
            error,
            expires_at: Some(Utc::now() + expires),
        };
        if let Err(e) = self.store.record_task_state(&update).await {
            tracing::warn!(error = %e, state = %state, "could not record task state");
        }
    }
}

/// Why what follows a task could not be published.
#[derive(Debug, thiserror::Error)]
enum FollowUpError {
    #[error(transparent)]
    Canvas(#[from] CanvasError),
    #[error(transparent)]
    Publish(#[from] crate::PublishError),
    #[error(transparent)]
    Store(#[from] shopfds_store::StoreError),
}

/// Adds the messages that start `sig` to `planned`; a malformed signature is logged and skipped
/// (it came from the producer; failing this task for it would not fix it).
fn plan(planned: &mut Vec<Planned>, sig: &Signature, at: Apply<'_>) {
    match apply(sig, at) {
        Ok(messages) => planned.extend(messages),
        Err(e) => tracing::error!(error = %e, task = %sig.task, "follow-up signature skipped"),
    }
}

fn failure(
    msg: &TaskMessage,
    queue: &str,
    error: TaskError,
    retry_in: Option<Duration>,
    reason: String,
) -> TaskFailure {
    TaskFailure {
        task_id: msg.id().to_owned(),
        task: msg.task().to_owned(),
        queue: queue.to_owned(),
        error,
        retries: msg.headers.retries,
        retry_in,
        reason,
    }
}

/// The delivery's headers as JSON. Read again where needed rather than kept per message: most
/// messages succeed and never need them after decoding.
fn delivery_headers(delivery: &Delivery) -> Map<String, Value> {
    delivery
        .properties
        .headers()
        .as_ref()
        .map(table_to_json)
        .unwrap_or_default()
}

/// Headers RabbitMQ adds when it dead-letters a message (`x-death`, `x-first-death-*`,
/// `x-last-death-*`).
fn is_dead_letter_record(header: &str) -> bool {
    header == "x-death"
        || header.starts_with("x-first-death-")
        || header.starts_with("x-last-death-")
}

fn error_json(kind: &str, message: &str) -> Value {
    json!({"exc_type": kind, "exc_message": message})
}

fn count(queue: &str, task: &str, outcome: &str) {
    shopfds_telemetry::metrics::tasks_total()
        .with_label_values(&[queue, task, outcome])
        .inc();
}

async fn ack(delivery: &Delivery) {
    if let Err(e) = delivery.ack(BasicAckOptions::default()).await {
        tracing::warn!(error = %e, "ack failed; the broker will redeliver the message");
    }
}

async fn requeue(delivery: &Delivery) {
    if let Err(e) = delivery.reject(BasicRejectOptions { requeue: true }).await {
        tracing::warn!(error = %e, "requeue failed; the broker will redeliver the message");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_backoff_doubles_up_to_the_cap() {
        let p = RetryPolicy::Exponential {
            base: Duration::from_secs(1),
            max: Duration::from_secs(600),
            jitter: false,
        };
        let waits: Vec<u64> = (0..5).map(|r| p.delay(r).as_secs()).collect();
        assert_eq!(waits, vec![1, 2, 4, 8, 16]);
        assert_eq!(p.delay(20), Duration::from_secs(600));
    }

    #[test]
    fn full_jitter_stays_within_the_capped_delay() {
        let p = RetryPolicy::Exponential {
            base: Duration::from_secs(1),
            max: Duration::from_secs(600),
            jitter: true,
        };
        let samples: Vec<Duration> = (0..200).map(|_| p.delay(3)).collect();
        assert!(samples.iter().all(|d| *d <= Duration::from_secs(8)));
        assert!(
            samples.iter().any(|d| *d < Duration::from_secs(4)),
            "jitter spreads the waits"
        );
    }
}
