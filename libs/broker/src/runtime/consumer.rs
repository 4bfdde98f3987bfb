//! The [`Worker`]: connections and consumers. It consumes the configured queues with a prefetch
//! per queue and a cap on tasks running at once (over all queues, and optionally per queue),
//! hands each delivery to [`Runtime::process`], and on shutdown stops consuming and drains.
//!
//! A lost connection is re-established with backoff and the topology declared again; messages
//! unacknowledged on it are redelivered by the broker. On shutdown, consuming stops, running
//! tasks get `shutdown_grace` to finish, and the messages of those that did not are requeued
//! (`basic.reject` with requeue, so another worker takes them at once); then `run` returns `Ok`,
//! so the binary exits 0.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lapin::Connection;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::backend::ResultBackend;
use super::execute::Executor;
use super::process::{RateLimiter, Runtime};
use super::task::Registry;
use crate::amqp::connect_with_retry;
use crate::publisher::Publisher;
use crate::{BrokerError, BrokerSettings, WorkerSettings, topology};

/// A worker: consumes its queues until `shutdown` fires, then drains.
pub struct Worker {
    broker: BrokerSettings,
    settings: WorkerSettings,
    registry: Arc<Registry>,
    backend: Arc<dyn ResultBackend>,
    /// Per rate-limited task name; kept across reconnections.
    limiters: Arc<HashMap<String, RateLimiter>>,
    /// Per consumed queue (same order as `settings.queues`), its own cap on running tasks.
    queue_slots: Vec<Option<Arc<Semaphore>>>,
}

impl Worker {
    pub fn new(
        broker: BrokerSettings,
        settings: WorkerSettings,
        registry: Registry,
        backend: Arc<dyn ResultBackend>,
    ) -> Self {
        let limiters = RateLimiter::for_registry(&registry);
        let queue_slots = settings
            .queues
            .iter()
            .map(|q| q.concurrency.map(|c| Arc::new(Semaphore::new(c))))
            .collect();
        Worker {
            broker,
            settings,
            registry: Arc::new(registry),
            backend,
            limiters: Arc::new(limiters),
            queue_slots,
        }
    }

    /// Runs until `shutdown` is cancelled (see the module docs).
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
            settings: self.settings.clone(),
            limiters: self.limiters.clone(),
            executor: Executor {
                backend: self.backend.clone(),
                publisher: Publisher::new(conn).await?,
                hostname: self.settings.hostname.clone(),
                result_expires: self.settings.result_expires,
            },
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
        tracing::info!(hostname = %self.settings.hostname, queues = ?self.settings.queues, concurrency = self.settings.concurrency, backend = self.backend.name(), "worker consuming");
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
                Some((queue, Ok(delivery), queue_slot)) => {
                    let runtime = runtime.clone();
                    let abandon = abandon.clone();
                    let slot: Vec<_> = std::iter::once(permit).chain(queue_slot).collect();
                    tracker.spawn(async move {
                        runtime.process(delivery, queue, slot, abandon).await;
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
