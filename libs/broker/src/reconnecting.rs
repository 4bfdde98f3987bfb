//! A confirmed publisher that outlives its connection. [`Publisher`] dies with its channel, and
//! its caller has to reconnect by hand; [`ReconnectingPublisher`] keeps the broker settings,
//! reconnects with backoff when the connection or channel is lost (a broker restart, an operator's
//! `close_all_connections`, a network cut), declares the topology again, and publishes once more
//! every message whose confirm never came.
//!
//! Delivery is at least once: a message whose confirm was lost in the outage may already be in
//! the queue, and is then delivered twice. Consumers are idempotent (once-only guards keyed by
//! task id or business key), so that is the safe side to err on. Confirms stay pipelined: a batch
//! is sent whole, then its confirms are awaited, and only the unconfirmed part is sent again.

use std::sync::Arc;
use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use lapin::Connection;
use tokio::sync::{Mutex, watch};
use tokio::time::Instant;

use crate::amqp::connect;
use crate::connected::connection::PUBLISHER;
use crate::publisher::{Outgoing, Publisher};
use crate::{BrokerError, BrokerSettings, BrokerState, PublishError, topology};

/// Cheap to clone: clones share one connection and its confirm channel.
#[derive(Clone)]
pub struct ReconnectingPublisher {
    inner: Arc<Inner>,
}

struct Inner {
    settings: BrokerSettings,
    declare_topology: bool,
    retry_for: Duration,
    confirm_timeout: Duration,
    session: Mutex<Option<Session>>,
    /// Sessions begun so far; numbers them.
    generations: AtomicU64,
    /// Connections successfully opened.
    opened: AtomicU64,
    /// For `shopfds_broker_connected{connection="publisher"}`, reported from the first attempt
    /// on (a publisher never used is not counted as disconnected).
    state: watch::Sender<BrokerState>,
    reported: Once,
}

/// One connection's publisher; `generation` tells a stale failure report from a fresh one.
struct Session {
    generation: u64,
    connection: Connection,
    publisher: Publisher,
}

impl ReconnectingPublisher {
    /// A publisher that connects on first use. It declares the topology on every connection (as
    /// the workers and the relay do), keeps trying for 60 s per call, and counts a confirm
    /// missing after 15 s as lost.
    pub fn new(settings: BrokerSettings) -> Self {
        ReconnectingPublisher {
            inner: Arc::new(Inner {
                settings,
                declare_topology: true,
                retry_for: Duration::from_secs(60),
                confirm_timeout: Duration::from_secs(15),
                session: Mutex::new(None),
                generations: AtomicU64::new(0),
                opened: AtomicU64::new(0),
                state: crate::state::channel().0,
                reported: Once::new(),
            }),
        }
    }

    /// How long one `publish` call keeps reconnecting and publishing again before it gives up
    /// with [`PublishError::GaveUp`] (the caller still holds the message, e.g. in the outbox).
    pub fn with_retry_for(self, window: Duration) -> Self {
        self.rebuild(|inner| inner.retry_for = window)
    }

    /// How long after a batch is sent a missing confirm counts as lost.
    pub fn with_confirm_timeout(self, timeout: Duration) -> Self {
        self.rebuild(|inner| inner.confirm_timeout = timeout)
    }

    /// Don't declare the topology on connect (the caller's exchanges are declared elsewhere).
    pub fn without_topology(self) -> Self {
        self.rebuild(|inner| inner.declare_topology = false)
    }

    fn rebuild(self, change: impl FnOnce(&mut Inner)) -> Self {
        let mut inner = Inner {
            settings: self.inner.settings.clone(),
            declare_topology: self.inner.declare_topology,
            retry_for: self.inner.retry_for,
            confirm_timeout: self.inner.confirm_timeout,
            session: Mutex::new(None),
            generations: AtomicU64::new(0),
            opened: AtomicU64::new(0),
            state: crate::state::channel().0,
            reported: Once::new(),
        };
        change(&mut inner);
        ReconnectingPublisher {
            inner: Arc::new(inner),
        }
    }

    /// Connects now (with backoff, within the retry window) instead of on first publish.
    pub async fn connect(&self) -> Result<(), PublishError> {
        let deadline = Instant::now() + self.inner.retry_for;
        self.current(deadline).await.map(|_| ())
    }

    /// Connections opened so far: 1 after the first publish, one more after each reconnect.
    pub fn connections_opened(&self) -> u64 {
        self.inner.opened.load(Ordering::Relaxed)
    }

    /// Publishes one message and waits for its confirm, reconnecting as needed.
    pub async fn publish(&self, msg: &Outgoing) -> Result<(), PublishError> {
        self.publish_batch(std::slice::from_ref(msg))
            .await
            .pop()
            .unwrap_or(Err(PublishError::Closed))
    }

    /// Publishes every message with pipelined confirms. Messages whose confirm does not come
    /// (connection lost, channel closed, nack, timeout) are published again on a new connection
    /// until confirmed or the retry window ends; an unroutable message is reported at once. The
    /// result for each message is in the same position as the message.
    pub async fn publish_batch(&self, msgs: &[Outgoing]) -> Vec<Result<(), PublishError>> {
        let deadline = Instant::now() + self.inner.retry_for;
        let mut results: Vec<Option<Result<(), PublishError>>> =
            msgs.iter().map(|_| None).collect();
        let mut todo: Vec<usize> = (0..msgs.len()).collect();
        let mut delay = self.inner.settings.reconnect_min;
        let mut last_error = String::new();
        while !todo.is_empty() {
            let (generation, publisher) = match self.current(deadline).await {
                Ok(current) => current,
                Err(e) => {
                    last_error = e.to_string();
                    break;
                }
            };
            let batch: Vec<&Outgoing> = todo.iter().filter_map(|i| msgs.get(*i)).collect();
            let outcomes = publisher
                .publish_batch_within(&batch, self.inner.confirm_timeout)
                .await;
            let mut again = Vec::new();
            for (i, outcome) in todo.iter().zip(outcomes) {
                match outcome {
                    Err(e) if e.is_retryable() => {
                        last_error = e.to_string();
                        again.push(*i);
                    }
                    done => {
                        if let Some(slot) = results.get_mut(*i) {
                            *slot = Some(done);
                        }
                    }
                }
            }
            todo = again;
            if todo.is_empty() || Instant::now() >= deadline {
                break;
            }
            tracing::warn!(
                unconfirmed = todo.len(),
                error = %last_error,
                "messages not confirmed; publishing them again"
            );
            let lost = !publisher.is_usable();
            self.invalidate(generation).await;
            if !lost {
                // A nack or a timeout on a live channel: start afresh after a pause, so a broker
                // that refuses is not hammered.
                tokio::time::sleep(delay.min(deadline.saturating_duration_since(Instant::now())))
                    .await;
                delay = (delay * 2).min(self.inner.settings.reconnect_max);
            }
        }
        let window = self.inner.retry_for;
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(PublishError::GaveUp {
                        window,
                        last_error: last_error.clone(),
                    })
                })
            })
            .collect()
    }

    /// The open session's publisher, or a new connection made with backoff until `deadline`.
    async fn current(&self, deadline: Instant) -> Result<(u64, Publisher), PublishError> {
        let mut session = self.inner.session.lock().await;
        if let Some(s) = session.as_ref()
            && s.publisher.is_usable()
        {
            return Ok((s.generation, s.publisher.clone()));
        }
        self.inner.reported.call_once(|| {
            crate::connected::report(PUBLISHER, self.inner.state.subscribe());
        });
        let generation = self.inner.generations.fetch_add(1, Ordering::Relaxed);
        if let Some(old) = session.take() {
            self.inner.state.send_replace(BrokerState::Disconnected(
                "the publishing channel closed".to_owned(),
            ));
            close_quietly(old.connection).await;
        }
        let mut delay = self.inner.settings.reconnect_min;
        loop {
            match self.open().await {
                Ok((connection, publisher)) => {
                    self.inner.opened.fetch_add(1, Ordering::Relaxed);
                    self.inner.state.send_replace(BrokerState::Declared);
                    if generation > 0 {
                        tracing::info!(generation, "publisher reconnected");
                    }
                    *session = Some(Session {
                        generation,
                        connection,
                        publisher: publisher.clone(),
                    });
                    return Ok((generation, publisher));
                }
                Err(e) => {
                    self.inner
                        .state
                        .send_replace(BrokerState::Disconnected(e.to_string()));
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(PublishError::GaveUp {
                            window: self.inner.retry_for,
                            last_error: e.to_string(),
                        });
                    }
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "publisher cannot reach the broker");
                    tokio::time::sleep(delay.min(left)).await;
                    delay = (delay * 2).min(self.inner.settings.reconnect_max);
                }
            }
        }
    }

    async fn open(&self) -> Result<(Connection, Publisher), BrokerError> {
        let connection = connect(&self.inner.settings).await?;
        let setup = async {
            if self.inner.declare_topology {
                let channel = connection.create_channel().await?;
                topology::declare_for(&channel, &self.inner.settings).await?;
                let _ = channel.close(200, "declared".into()).await;
            }
            Publisher::new(&connection).await
        };
        match setup.await {
            Ok(publisher) => Ok((connection, publisher)),
            Err(e) => {
                close_quietly(connection).await;
                Err(e)
            }
        }
    }

    /// Drops the session if it is still generation `generation` (another caller may already
    /// have replaced it).
    async fn invalidate(&self, generation: u64) {
        let mut session = self.inner.session.lock().await;
        if session.as_ref().is_some_and(|s| s.generation == generation)
            && let Some(old) = session.take()
        {
            self.inner.state.send_replace(BrokerState::Disconnected(
                "messages not confirmed; reconnecting".to_owned(),
            ));
            close_quietly(old.connection).await;
        }
    }
}

async fn close_quietly(connection: Connection) {
    if connection.status().connected() {
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            connection.close(200, "publisher reconnecting".into()),
        )
        .await;
    }
}
