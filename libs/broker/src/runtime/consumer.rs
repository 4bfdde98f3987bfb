//! The [`Worker`]: connections and consumers. It consumes the configured queues with a prefetch
//! per queue and a cap on tasks running at once (over all queues, and optionally per queue),
//! hands each delivery to [`Runtime::process`], and on shutdown stops consuming and drains.
//!
//! The loop, and what ends each turn of it:
//! - connect, with capped exponential backoff between failed attempts ([`Backoff`]);
//! - set up a session: declare the topology, open the publisher, set each queue's prefetch and
//!   register its consumer. A failure here (the broker refuses the topology, e.g. a queue that
//!   exists with other arguments: [`BrokerError::Inequivalent`]) is logged at error level once
//!   per attempt, the connection is closed and the worker waits the next backoff delay before
//!   connecting again, so a broken setup never turns into a reconnect storm;
//! - consume. A lost connection is re-established at once (the backoff starts over, since this
//!   session did consume); messages unacknowledged on it are redelivered by the broker.
//!
//! The shutdown token is raced against every await of that loop (connect, each setup step,
//! backoff, consume), so SIGTERM stops a worker that never got to consume at once. On shutdown
//! while consuming, consuming stops, running tasks get `shutdown_grace` to finish, and the
//! messages of those that did not are requeued (`basic.reject` with requeue, so another worker
//! takes them at once); then `run` returns `Ok`, so the binary exits 0.
//!
//! The worker publishes its [`BrokerState`] ([`Worker::broker_state`]) for `/readyz`:
//! `Consuming` only while its consumers are registered on a live connection.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{BoxStream, SelectAll};
use futures::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{BasicCancelOptions, BasicQosOptions};
use lapin::{Channel, Connection};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::acks::{Acks, Settle};
use super::backend::ResultBackend;
use super::budget::Budget;
use super::execute::Executor;
use super::gate::Gate;
use super::process::{Arrival, RateLimiter, Runtime};
use super::task::Registry;
use crate::amqp::{Backoff, close_quietly, connect_with_backoff, millis};
use crate::monitor::control::Effect;
use crate::monitor::{self, Monitor, Pool, RevokeStore, dispatch, pidbox};
use crate::publisher::Publisher;
use crate::{BrokerError, BrokerSettings, BrokerState, QueueConsumer, WorkerSettings, topology};
use shopfds_telemetry::ops::Check;

/// How long a consumer cancel may take at shutdown before the worker stops waiting for it.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(2);

/// After the publishing channel alone was lost, how long the tasks in flight may take to settle
/// their messages before the session is re-established (a longer task is redelivered, as on any
/// lost connection).
const PUBLISHER_LOST_SETTLE: Duration = Duration::from_secs(5);

/// One queue's deliveries: the queue's name, its channel's acks, the delivery, and the queue's
/// own slot if capped.
type QueueDelivery = (
    String,
    Acks,
    (Result<Delivery, lapin::Error>, Arrival, Prefetched),
    Option<OwnedSemaphorePermit>,
);

/// One delivery counted in `shopfds_prefetched_messages` until dropped (settled, or dropped
/// unsettled at the end of a session, when the broker requeues it).
pub struct Prefetched(prometheus::IntGauge);

impl Prefetched {
    fn new(gauge: &prometheus::IntGauge) -> Prefetched {
        gauge.inc();
        Prefetched(gauge.clone())
    }
}

impl Drop for Prefetched {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// One consumed queue's consumer: its channel and tag (kept open while tasks drain) and its
/// acking task, which ends once the last task settled its delivery.
struct QueueConsumerHandle {
    queue: String,
    channel: Channel,
    tag: String,
    acker: JoinHandle<()>,
    /// Cancelled by the `cancel_consumer` command: its stream's end is no lost connection.
    cancelled: bool,
}

/// What a session set up: the runtime bound to its connection, each consumer's channel and tag
/// (kept open while tasks drain), and the merged deliveries.
struct Session {
    runtime: Arc<Runtime>,
    consumers: Vec<QueueConsumerHandle>,
    deliveries: SelectAll<BoxStream<'static, QueueDelivery>>,
    /// The channel events go out on (worker-offline is sent on it at shutdown).
    events: Channel,
    /// The mailbox's task: answers remote control until aborted with the session.
    pidbox: AbortOnDrop,
    /// What control commands ask of the session (consumers to add or cancel).
    effects: mpsc::UnboundedReceiver<Effect>,
}

/// Aborts the task when dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How one connection's session ended.
enum SessionEnd {
    /// Shutdown while consuming: consumers cancelled, running tasks drained or abandoned.
    Drained,
    /// Shutdown before consuming began.
    Interrupted,
    /// The session failed; `consumed` says whether it had got as far as consuming.
    Failed { consumed: bool, error: BrokerError },
}

/// A worker: consumes its queues until `shutdown` fires, then drains.
pub struct Worker {
    broker: BrokerSettings,
    settings: WorkerSettings,
    registry: Arc<Registry>,
    backend: Arc<dyn ResultBackend>,
    /// Per task name; kept across reconnections.
    limiters: Arc<HashMap<String, RateLimiter>>,
    /// Per configured queue with a cap of its own, its cap on running tasks.
    queue_slots: HashMap<String, Arc<Semaphore>>,
    /// Tasks running at once over all queues (grown and shrunk by remote control).
    pool: Pool,
    /// Where revokes outlive restarts; without one they live in memory, as in Celery.
    revoke_store: Option<Arc<dyn RevokeStore>>,
    /// Bytes of delivered, unsettled messages (`WORKER_PREFETCH_BYTES`).
    budget: Arc<Budget>,
    state: watch::Sender<BrokerState>,
    /// The worker's own dependencies besides the broker, probed while one is down.
    probes: Vec<(String, Check)>,
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
            .filter_map(|q| Some((q.queue.clone(), Arc::new(Semaphore::new(q.concurrency?)))))
            .collect();
        let budget = Budget::new(settings.prefetch_bytes);
        Worker {
            broker,
            budget,
            pool: Pool::new(settings.concurrency),
            revoke_store: None,
            settings,
            registry: Arc::new(registry),
            backend,
            limiters: Arc::new(limiters),
            queue_slots,
            state: crate::connected::channel(crate::connected::connection::WORKER),
            probes: Vec::new(),
        }
    }

    /// Adds a dependency of the worker's own (its database) that the [`Gate`] probes while it
    /// is down; the result backend's own [`ResultBackend::ping`] is always probed.
    pub fn with_probe(mut self, name: &str, check: Check) -> Self {
        self.probes.push((name.to_owned(), check));
        self
    }

    /// Keeps revokes in `store`, so they outlive restarts and reach workers that were offline
    /// ([`crate::monitor::revoke`]).
    pub fn with_revoke_store(mut self, store: Arc<dyn RevokeStore>) -> Self {
        self.revoke_store = Some(store);
        self
    }

    /// The state of this worker's broker connection, kept current by [`Worker::run`]: read it
    /// for readiness (no I/O; see [`crate::state`]).
    pub fn broker_state(&self) -> watch::Receiver<BrokerState> {
        self.state.subscribe()
    }

    /// Runs until `shutdown` is cancelled (see the module docs). Returns `Ok` on shutdown,
    /// whatever state the broker connection was in.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), BrokerError> {
        let monitor = Arc::new(Monitor::new(monitor::Parts {
            broker: self.broker.clone(),
            settings: self.settings.clone(),
            registry: self.registry.clone(),
            limiters: self.limiters.clone(),
            pool: self.pool.clone(),
            store: self.revoke_store.clone(),
            backend: self.backend.name().to_owned(),
        }));
        monitor.set_shutdown(shutdown.clone());
        let (events_channel, events_rx) = watch::channel(None);
        let background = CancellationToken::new();
        let _stop_background = background.clone().drop_guard();
        tokio::spawn({
            let (monitor, stop) = (monitor.clone(), background.clone());
            async move { monitor.events.run(events_rx, stop).await }
        });
        tokio::spawn(tick(monitor.clone(), background.clone()));
        let semaphore = self.pool.permits().clone();
        let tracker = TaskTracker::new();
        let abandon = CancellationToken::new();
        let gate = self.gate();
        let mut backoff = Backoff::new(&self.broker);
        while let Some(conn) =
            connect_with_backoff(&self.broker, &shutdown, &mut backoff, &self.state).await
        {
            let end = self
                .session(
                    &conn,
                    &semaphore,
                    &tracker,
                    &shutdown,
                    (&abandon, &gate, &monitor, &events_channel),
                )
                .await;
            match end {
                SessionEnd::Drained => {
                    close_quietly(&conn, "worker shutdown").await;
                    return Ok(());
                }
                SessionEnd::Interrupted => {
                    close_quietly(&conn, "worker shutdown").await;
                    break;
                }
                SessionEnd::Failed { consumed, error } => {
                    close_quietly(&conn, "session failed").await;
                    self.state
                        .send_replace(BrokerState::Disconnected(error.to_string()));
                    if consumed {
                        backoff.reset();
                        tracing::warn!(error = %error, "broker connection lost; reconnecting");
                    } else {
                        tracing::error!(error = %error, retry_in_ms = millis(backoff.peek()), "cannot start consuming; retrying after the delay");
                        if !backoff.wait(&shutdown).await {
                            break;
                        }
                    }
                }
            }
        }
        self.state.send_replace(BrokerState::Stopped);
        self.drain(&tracker, &abandon).await;
        gate.stop();
        Ok(())
    }

    /// The dependency gate: the configured probes and the result backend's ping.
    fn gate(&self) -> Gate {
        let backend = self.backend.clone();
        let ping: Check = Arc::new(move || {
            let backend = backend.clone();
            async move { backend.ping().await.map_err(|e| e.to_string()) }.boxed()
        });
        let mut probes = self.probes.clone();
        probes.push((format!("results ({})", self.backend.name()), ping));
        Gate::new(probes)
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
            .is_ok()
        {
            return;
        }
        tracing::warn!(
            unfinished = tracker.len(),
            "grace period over: unfinished tasks are abandoned and their messages requeued, \
             except those inside a side effect, which finish it first"
        );
        abandon.cancel();
        // Abandoned tasks send their rejects at once; a task inside a side effect and its
        // record gets `effect_grace` more (a broken connection requeues the rest anyway).
        let wait = self.settings.effect_grace.max(Duration::from_secs(5));
        if tokio::time::timeout(wait, tracker.wait()).await.is_err() {
            tracing::error!(
                unfinished = tracker.len(),
                "tasks still unfinished after the effect grace period (a side effect whose \
                 record cannot be written): the worker stops anyway, their messages will be \
                 redelivered and those effects may run again"
            );
        }
    }

    /// One connection's life: set up (raced against `shutdown`), then consume until the
    /// connection breaks or `shutdown` fires.
    async fn session(
        &self,
        conn: &Connection,
        semaphore: &Arc<Semaphore>,
        tracker: &TaskTracker,
        shutdown: &CancellationToken,
        (abandon, gate, monitor, events_channel): (
            &CancellationToken,
            &Gate,
            &Arc<Monitor>,
            &watch::Sender<Option<Channel>>,
        ),
    ) -> SessionEnd {
        let setup = tokio::select! {
            _ = shutdown.cancelled() => return SessionEnd::Interrupted,
            setup = self.setup(conn, abandon, gate, monitor) => setup,
        };
        let Session {
            runtime,
            mut consumers,
            mut deliveries,
            events,
            pidbox: _pidbox,
            mut effects,
        } = match setup {
            Ok(session) => session,
            Err(error) => {
                return SessionEnd::Failed {
                    consumed: false,
                    error,
                };
            }
        };
        events_channel.send_replace(Some(events.clone()));
        monitor.heartbeat("worker-online");
        self.state.send_replace(BrokerState::Consuming);
        tracing::info!(hostname = %self.settings.hostname, queues = ?self.settings.queues, concurrency = self.pool.size(), backend = self.backend.name(), task_events = monitor.events.tasks_enabled(), "worker consuming");
        let consumed = self
            .consume(
                conn,
                (&mut deliveries, &mut consumers, &mut effects),
                &runtime,
                semaphore,
                tracker,
                (shutdown, abandon),
            )
            .await;
        events_channel.send_replace(None);
        if let Err(error) = consumed {
            if matches!(error, BrokerError::PublisherLost(_)) && conn.status().connected() {
                // Only the publishing channel is gone (a follow-up to a missing exchange closes
                // it): the tasks in flight settle their messages on their own channels before
                // the session ends, so a task that succeeded is not redelivered, and run again,
                // for want of its ack.
                drop(deliveries);
                cancel_consumers(&consumers).await;
                let deadline = tokio::time::Instant::now() + PUBLISHER_LOST_SETTLE;
                while !tracker.is_empty() && tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                for consumer in consumers {
                    let _ = tokio::time::timeout(CANCEL_TIMEOUT, consumer.acker).await;
                }
            }
            return SessionEnd::Failed {
                consumed: true,
                error,
            };
        }
        self.state.send_replace(BrokerState::Stopped);
        // Shutdown: tell the broker to stop pushing messages. Running tasks still ack on these
        // channels; prefetched messages never started are requeued when the connection closes.
        drop(deliveries);
        cancel_consumers(&consumers).await;
        // The channels stay open while tasks drain: a dropped channel closes, and a task that
        // finished afterwards could not ack (its message would run again elsewhere).
        self.drain(tracker, abandon).await;
        // The last settlements are sent before the channels go.
        let mut channels = Vec::with_capacity(consumers.len());
        for consumer in consumers {
            if tokio::time::timeout(CANCEL_TIMEOUT, consumer.acker)
                .await
                .is_err()
            {
                tracing::warn!("acks still unsent at shutdown; the broker will redeliver");
            }
            channels.push(consumer.channel);
        }
        drop(channels);
        // Monitors mark the worker offline at once rather than after missed heartbeats.
        let offline = monitor.events.sender().event(
            "worker-offline",
            monitor.clock.forward(),
            chrono::Utc::now(),
            monitor.worker_fields(),
        );
        let hostname = &monitor.hostname;
        let send = dispatch::publish(&events, hostname, "worker-offline", &offline);
        let _ = tokio::time::timeout(CANCEL_TIMEOUT, send).await;
        SessionEnd::Drained
    }

    /// Declares the topology, opens the publisher, starts the mailbox (which first takes in the
    /// revokes that waited), and registers a consumer per queue.
    async fn setup(
        &self,
        conn: &Connection,
        abandon: &CancellationToken,
        gate: &Gate,
        monitor: &Arc<Monitor>,
    ) -> Result<Session, BrokerError> {
        let setup = conn.create_channel().await?;
        topology::declare_for(&setup, &self.broker).await?;
        let _ = setup.close(200, "declared".into()).await;

        let (effects_tx, effects) = mpsc::unbounded_channel();
        let pidbox = AbortOnDrop(pidbox::start(monitor.clone(), conn, effects_tx).await?);
        let events = conn.create_channel().await?;

        let runtime = Arc::new(Runtime {
            registry: self.registry.clone(),
            settings: self.settings.clone(),
            limiters: self.limiters.clone(),
            monitor: monitor.clone(),
            executor: Executor {
                backend: self.backend.clone(),
                publisher: Publisher::new(conn).await?,
                hostname: Arc::from(self.settings.hostname.as_str()),
                result_expires: self.settings.result_expires,
                publisher_lost: CancellationToken::new(),
                gate: gate.clone(),
                abandon: abandon.clone(),
            },
        });
        let queues = monitor.queues.lock().map(|q| q.clone()).unwrap_or_default();
        let mut streams = Vec::with_capacity(queues.len());
        let mut consumers = Vec::with_capacity(queues.len());
        for consumer in &queues {
            let (handle, stream) = self.open_queue(conn, consumer).await?;
            consumers.push(handle);
            streams.push(stream);
        }
        Ok(Session {
            runtime,
            consumers,
            deliveries: futures::stream::select_all(streams),
            events,
            pidbox,
            effects,
        })
    }

    /// Starts consuming one queue on a channel of its own, with its prefetch. Deliveries are
    /// taken from the broker as they arrive (stamped with the time, for the prefetch wait) and
    /// handed on in order.
    async fn open_queue(
        &self,
        conn: &Connection,
        consumer: &QueueConsumer,
    ) -> Result<(QueueConsumerHandle, BoxStream<'static, QueueDelivery>), BrokerError> {
        let channel = conn.create_channel().await?;
        channel
            .basic_qos(
                self.settings.prefetch_count(consumer),
                BasicQosOptions { global: false },
            )
            .await?;
        let tag = format!("{}-{}", self.settings.hostname, consumer.queue);
        let mut stream = self
            .budget
            .consume(channel.clone(), consumer.queue.clone(), tag.clone())
            .await?;
        let (acks, acker) = Acks::spawn(channel.clone());
        let gauge = shopfds_telemetry::metrics::prefetched_messages()
            .with_label_values(&[consumer.queue.as_str()]);
        let (arrived, taken) = futures::channel::mpsc::unbounded();
        tokio::spawn(async move {
            while let Some(delivery) = stream.next().await {
                let item = (delivery, Arrival::now(), Prefetched::new(&gauge));
                if arrived.unbounded_send(item).is_err() {
                    break;
                }
            }
        });
        let queue = consumer.queue.clone();
        let stream = match self.queue_slots.get(&consumer.queue).cloned() {
            None => taken
                .map(move |d| (queue.clone(), acks.clone(), d, None))
                .boxed(),
            // A queue with its own cap is only read while it has a free slot; the slot
            // travels with the message to the task that runs it.
            Some(slots) => futures::stream::unfold(taken, move |mut taken| {
                let (queue, acks, slots) = (queue.clone(), acks.clone(), slots.clone());
                async move {
                    let slot = slots.acquire_owned().await.ok()?;
                    let next = taken.next().await?;
                    Some(((queue, acks, next, Some(slot)), taken))
                }
            })
            .boxed(),
        };
        let handle = QueueConsumerHandle {
            queue: consumer.queue.clone(),
            channel,
            tag,
            acker,
            cancelled: false,
        };
        Ok((handle, stream))
    }

    /// Carries out what a control command asked of the session.
    async fn apply_effect(
        &self,
        conn: &Connection,
        effect: Effect,
        deliveries: &mut SelectAll<BoxStream<'static, QueueDelivery>>,
        consumers: &mut Vec<QueueConsumerHandle>,
        monitor: &Monitor,
    ) -> Result<(), BrokerError> {
        match effect {
            Effect::AddConsumer(queue) => {
                if consumers.iter().any(|c| c.queue == queue && !c.cancelled) {
                    return Ok(());
                }
                let consumer = self
                    .settings
                    .queues
                    .iter()
                    .find(|q| q.queue == queue)
                    .cloned()
                    .unwrap_or_else(|| QueueConsumer {
                        queue: queue.clone(),
                        prefetch_multiplier: self
                            .settings
                            .queues
                            .first()
                            .map_or(1, |q| q.prefetch_multiplier),
                        concurrency: None,
                    });
                // A queue that does not exist closes the channel it was consumed on, not
                // the session: declared passively first, on a channel of its own.
                let probe = conn.create_channel().await?;
                let exists = probe
                    .queue_declare(
                        queue.as_str().into(),
                        lapin::options::QueueDeclareOptions {
                            passive: true,
                            ..Default::default()
                        },
                        lapin::types::FieldTable::default(),
                    )
                    .await;
                if let Err(e) = exists {
                    tracing::error!(queue = %queue, error = %e, "add_consumer: no such queue");
                    return Ok(());
                }
                let _ = probe.close(200, "checked".into()).await;
                let (handle, stream) = self.open_queue(conn, &consumer).await?;
                consumers.push(handle);
                deliveries.push(stream);
                if let Ok(mut queues) = monitor.queues.lock() {
                    queues.push(consumer);
                }
                tracing::info!(queue = %queue, "consuming from a queue added by remote control");
            }
            Effect::CancelConsumer(queue) => {
                let Some(consumer) = consumers
                    .iter_mut()
                    .find(|c| c.queue == queue && !c.cancelled)
                else {
                    return Ok(());
                };
                consumer.cancelled = true;
                cancel_consumers(std::slice::from_ref(consumer)).await;
                if let Ok(mut queues) = monitor.queues.lock() {
                    queues.retain(|q| q.queue != queue);
                }
                tracing::info!(queue = %queue, "no longer consuming from a queue, by remote control");
            }
            Effect::None | Effect::Shutdown => {}
        }
        Ok(())
    }

    /// Hands deliveries to the runtime until `shutdown` fires (`Ok`) or the connection breaks;
    /// carries out control commands' effects between deliveries.
    async fn consume(
        &self,
        conn: &Connection,
        (deliveries, consumers, effects): (
            &mut SelectAll<BoxStream<'static, QueueDelivery>>,
            &mut Vec<QueueConsumerHandle>,
            &mut mpsc::UnboundedReceiver<Effect>,
        ),
        runtime: &Arc<Runtime>,
        semaphore: &Arc<Semaphore>,
        tracker: &TaskTracker,
        (shutdown, abandon): (&CancellationToken, &CancellationToken),
    ) -> Result<(), BrokerError> {
        let publisher_lost = runtime.executor.publisher_lost.clone();
        let lost = || BrokerError::PublisherLost("reconnecting for a fresh channel".to_owned());
        let gate = &runtime.executor.gate;
        let monitor = &runtime.monitor;
        loop {
            // While a dependency is down, no message is taken (see [`Gate`]).
            if !gate.is_open() {
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = publisher_lost.cancelled() => return Err(lost()),
                    _ = gate.opened(shutdown) => {}
                }
            }
            let permit = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = publisher_lost.cancelled() => return Err(lost()),
                Some(effect) = effects.recv() => {
                    self.apply_effect(conn, effect, deliveries, consumers, monitor).await?;
                    continue;
                }
                permit = semaphore.clone().acquire_owned() => permit,
            };
            let Ok(permit) = permit else { return Ok(()) };
            let next = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = publisher_lost.cancelled() => return Err(lost()),
                Some(effect) = effects.recv() => {
                    self.apply_effect(conn, effect, deliveries, consumers, monitor).await?;
                    continue;
                }
                next = deliveries.next(), if !deliveries.is_empty() => next,
            };
            match next {
                // The last queue's consumer was cancelled by remote control: nothing to take
                // until a queue is added (or shutdown).
                None if consumers.iter().all(|c| c.cancelled) => continue,
                None => {
                    return Err(BrokerError::Amqp(lapin::Error::from(
                        lapin::ErrorKind::InvalidConnectionState(lapin::ConnectionState::Closed),
                    )));
                }
                Some((_, _, (Err(e), _, _), _)) => return Err(BrokerError::Amqp(e)),
                Some((queue, acks, (Ok(delivery), arrival, prefetched), queue_slot)) => {
                    let runtime = runtime.clone();
                    let abandon = abandon.clone();
                    let slot: Vec<_> = std::iter::once(permit).chain(queue_slot).collect();
                    // Registered in delivery order, before the task can settle it.
                    let tag = delivery.delivery_tag;
                    acks.delivered(tag);
                    // Counted until the task below has settled the delivery.
                    let held = self.budget.hold(delivery.data.len());
                    let on_panic = acks.clone();
                    tracker.spawn(async move {
                        let processed = std::panic::AssertUnwindSafe(
                            runtime.process(delivery, acks, queue, slot, (abandon, arrival)),
                        )
                        .catch_unwind()
                        .await;
                        drop(held);
                        drop(prefetched);
                        // A bug of the runtime's own (a handler's panic is already a FAILURE)
                        // must not leave the message unacked for good: the queue's dead-letter
                        // arguments take it to `failed.<queue>`.
                        if processed.is_err() {
                            tracing::error!(tag, "the runtime panicked on a message; rejected to its dead-letter queue");
                            on_panic.settle(tag, Settle::Reject);
                        }
                    });
                }
            }
        }
    }
}

/// Every [`monitor::revoke::SYNC_SECS`]: a heartbeat, and the revokes other workers stored.
async fn tick(monitor: Arc<Monitor>, stop: CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_secs(monitor::revoke::SYNC_SECS));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        monitor.heartbeat("worker-heartbeat");
        match monitor.revoked.sync().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(new = n, "revokes stored by other workers learned"),
            Err(e) => tracing::debug!(error = %e, "cannot read stored revokes"),
        }
    }
}

/// Tells the broker to stop pushing messages to these consumers (their channels stay open, so
/// tasks in flight can still settle on them).
async fn cancel_consumers(consumers: &[QueueConsumerHandle]) {
    for QueueConsumerHandle { channel, tag, .. } in consumers {
        let cancel = channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default());
        match tokio::time::timeout(CANCEL_TIMEOUT, cancel).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(error = %e, consumer = %tag, "consumer cancel failed")
            }
            Err(_) => tracing::debug!(consumer = %tag, "consumer cancel unanswered"),
        }
    }
}
