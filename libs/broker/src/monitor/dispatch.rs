//! Sending events without making a task wait: a task's event is put on a bounded in-memory queue
//! ([`Events::send`] never awaits) and one publisher loop per worker sends them on the current
//! connection's events channel, without publisher confirms (events are advisory, as in Celery,
//! whose events are transient too). While the broker is unreachable, or when the queue is full,
//! events are dropped and counted in the log, never held against the tasks.
//!
//! Worker events (online, heartbeat, offline) are always sent, as a stock worker sends them
//! unless started `--without-heartbeat`. Task events are sent only while switched on
//! (`WORKER_SEND_TASK_EVENTS`, or the `enable_events` control command): switched off, a task
//! event costs one atomic load.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel};
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::clock::Clock;
use super::event::{self, Sender};

/// Events waiting to be published; past this, new ones are dropped.
const QUEUE: usize = 10_000;

pub struct Events {
    sender: Sender,
    tasks_on: AtomicBool,
    queue: mpsc::Sender<(String, Value)>,
    pending: Mutex<Option<mpsc::Receiver<(String, Value)>>>,
    dropped: AtomicU64,
}

impl Events {
    pub fn new(hostname: &str, task_events: bool) -> Events {
        let (queue, pending) = mpsc::channel(QUEUE);
        Events {
            sender: Sender::new(hostname),
            tasks_on: AtomicBool::new(task_events),
            queue,
            pending: Mutex::new(Some(pending)),
            dropped: AtomicU64::new(0),
        }
    }

    pub fn sender(&self) -> &Sender {
        &self.sender
    }

    /// Whether task events are being sent.
    pub fn tasks_enabled(&self) -> bool {
        self.tasks_on.load(Ordering::Relaxed)
    }

    /// Switches task events on or off; whether that changed anything.
    pub fn set_tasks_enabled(&self, on: bool) -> bool {
        self.tasks_on.swap(on, Ordering::Relaxed) != on
    }

    /// Queues a task event made by `fields`, if task events are on (`fields` is not called
    /// otherwise).
    pub fn task(&self, clock: &Clock, kind: &str, fields: impl FnOnce() -> Value) {
        if self.tasks_enabled() {
            self.send(clock, kind, fields());
        }
    }

    /// Queues an event; dropped if the queue is full.
    pub fn send(&self, clock: &Clock, kind: &str, fields: Value) {
        let event = self
            .sender
            .event(kind, clock.forward(), chrono::Utc::now(), fields);
        if self.queue.try_send((kind.to_owned(), event)).is_err() {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed);
            if n.is_power_of_two() {
                tracing::warn!(dropped = n + 1, "event queue full: events dropped");
            }
        }
    }

    /// Publishes queued events on whichever channel `channel` holds until `stop` fires; runs
    /// once per worker (a second call returns at once).
    pub async fn run(
        &self,
        mut channel: watch::Receiver<Option<Channel>>,
        stop: CancellationToken,
    ) {
        let Some(mut pending) = self.pending.lock().ok().and_then(|mut p| p.take()) else {
            return;
        };
        loop {
            let next = tokio::select! {
                () = stop.cancelled() => return,
                next = pending.recv() => next,
            };
            let Some((kind, event)) = next else { return };
            let current = channel.borrow_and_update().clone();
            match current {
                Some(ch) if ch.status().connected() => {
                    if let Err(e) = publish(&ch, &self.sender.hostname, &kind, &event).await {
                        tracing::debug!(error = %e, kind, "event not sent");
                    }
                }
                _ => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// Publishes one event as a stock worker does: JSON, transient, header `hostname`.
pub async fn publish(
    channel: &Channel,
    hostname: &str,
    kind: &str,
    event: &Value,
) -> Result<(), lapin::Error> {
    let body = serde_json::to_vec(event).unwrap_or_default();
    let mut headers = FieldTable::default();
    headers.insert(
        "hostname".into(),
        AMQPValue::LongString(hostname.as_bytes().to_vec().into()),
    );
    let properties = BasicProperties::default()
        .with_content_type(ShortString::from("application/json"))
        .with_content_encoding(ShortString::from("utf-8"))
        .with_delivery_mode(1)
        .with_headers(headers);
    channel
        .basic_publish(
            event::EXCHANGE.into(),
            event::routing_key(kind).as_str().into(),
            BasicPublishOptions::default(),
            &body,
            properties,
        )
        .await?;
    Ok(())
}
