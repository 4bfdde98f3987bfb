//! The bytes a worker holds in deliveries not yet settled, and the pause that bounds them
//! (`WORKER_PREFETCH_BYTES`).
//!
//! RabbitMQ bounds what it pushes to a consumer by count only: `basic.qos` `prefetch_size` is
//! not implemented, and a new `prefetch_count` on a channel (per consumer, `global: false`)
//! applies only to consumers created after it, never to the one already consuming; channel-wide
//! (`global: true`) QoS is refused by quorum queues. So a prefetch of 50 lets 50 messages of
//! 20 MB into memory, and lowering the count takes a new consumer anyway. The budget does the
//! one thing that works for every queue type: while the bodies of delivered, unsettled
//! messages add up to the budget or more, each queue's consumer is cancelled (`basic.cancel`:
//! the broker stops pushing; what it already sent still arrives and runs, and nothing held is
//! requeued); once they are down to half the budget, each queue is consumed again.
//!
//! The bound: the budget, plus what was already on the wire when the consumers were cancelled
//! (at most the prefetch count of messages, each within `WORKER_MAX_MESSAGE_BYTES`). A single
//! message larger than the budget still runs: the worker pauses while it holds it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::stream::{BoxStream, StreamExt};
use lapin::message::Delivery;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Consumer};
use tokio::sync::watch;

/// The worker's budget; one per worker, shared by its queues and kept across reconnections
/// (a message of the last connection still running holds its bytes).
#[derive(Debug)]
pub struct Budget {
    limit: usize,
    held: AtomicUsize,
    /// `true` while consuming is paused.
    paused: watch::Sender<bool>,
}

/// Bytes held by one delivery until it is settled (dropped).
#[derive(Debug)]
pub struct Held {
    budget: Arc<Budget>,
    bytes: usize,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.budget.release(self.bytes);
    }
}

impl Budget {
    pub fn new(limit: usize) -> Arc<Budget> {
        Arc::new(Budget {
            limit: limit.max(1),
            held: AtomicUsize::new(0),
            paused: watch::channel(false).0,
        })
    }

    /// Counts `bytes` as held until the returned guard is dropped; pauses consuming once the
    /// budget is reached.
    pub fn hold(self: &Arc<Self>, bytes: usize) -> Held {
        let now = add(&self.held, bytes);
        if now >= self.limit {
            self.paused.send_if_modified(|paused| {
                let changed = !*paused;
                if changed {
                    tracing::info!(
                        held_bytes = now,
                        budget_bytes = self.limit,
                        "prefetch byte budget reached: consumers paused until messages settle"
                    );
                }
                *paused = true;
                changed
            });
        }
        Held {
            budget: self.clone(),
            bytes,
        }
    }

    fn release(&self, bytes: usize) {
        let now = sub(&self.held, bytes);
        if now <= self.limit / 2 {
            self.paused.send_if_modified(|paused| {
                let changed = *paused;
                if changed {
                    tracing::info!(held_bytes = now, "prefetch byte budget: consuming again");
                }
                *paused = false;
                changed
            });
        }
    }

    /// Bytes held now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Registers a consumer of `queue` on `channel` and returns its deliveries, paused and
    /// resumed by this budget. The first `basic.consume` happens here, so a refused consumer
    /// fails the session's setup.
    pub async fn consume(
        self: &Arc<Self>,
        channel: Channel,
        queue: String,
        tag: String,
    ) -> Result<BoxStream<'static, Result<Delivery, lapin::Error>>, lapin::Error> {
        let consumer = basic_consume(&channel, &queue, &tag).await?;
        let paused = self.paused.subscribe();
        let state = Paced {
            channel,
            queue,
            tag,
            paused,
            state: State::Consuming(consumer),
        };
        Ok(futures::stream::unfold(state, Paced::next).boxed())
    }
}

async fn basic_consume(
    channel: &Channel,
    queue: &str,
    tag: &str,
) -> Result<Consumer, lapin::Error> {
    channel
        .basic_consume(
            queue.into(),
            tag.into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
}

enum State {
    Consuming(Consumer),
    /// Cancelled: what the broker sent before its cancel-ok is still taken.
    Draining(Consumer),
    Paused,
    Ended,
}

/// One queue's consumer under the budget.
struct Paced {
    channel: Channel,
    queue: String,
    tag: String,
    paused: watch::Receiver<bool>,
    state: State,
}

type Next = Option<(Result<Delivery, lapin::Error>, Paced)>;

impl Paced {
    async fn next(mut self) -> Next {
        loop {
            match std::mem::replace(&mut self.state, State::Ended) {
                State::Consuming(mut consumer) => {
                    if *self.paused.borrow_and_update() {
                        let cancel = self
                            .channel
                            .basic_cancel(self.tag.as_str().into(), BasicCancelOptions::default())
                            .await;
                        if let Err(e) = cancel {
                            return Some((Err(e), self));
                        }
                        tracing::debug!(queue = %self.queue, "consumer paused");
                        self.state = State::Draining(consumer);
                        continue;
                    }
                    tokio::select! {
                        next = consumer.next() => {
                            let next = next?;
                            self.state = State::Consuming(consumer);
                            return Some((next, self));
                        }
                        changed = self.paused.changed() => {
                            if changed.is_err() {
                                return None;
                            }
                            self.state = State::Consuming(consumer);
                        }
                    }
                }
                State::Draining(mut consumer) => match consumer.next().await {
                    Some(next) => {
                        self.state = State::Draining(consumer);
                        return Some((next, self));
                    }
                    None => self.state = State::Paused,
                },
                State::Paused => {
                    // A paused queue has no consumer whose end would tell of a lost connection.
                    let (resumed, lost) = tokio::select! {
                        resumed = self.paused.wait_for(|paused| !*paused) => (resumed.is_ok(), false),
                        () = closed(&self.channel) => (false, true),
                    };
                    if lost {
                        let closed = lapin::ErrorKind::InvalidConnectionState(
                            lapin::ConnectionState::Closed,
                        );
                        return Some((Err(closed.into()), self));
                    }
                    if !resumed {
                        return None;
                    }
                    match basic_consume(&self.channel, &self.queue, &self.tag).await {
                        Ok(consumer) => {
                            tracing::debug!(queue = %self.queue, "consumer resumed");
                            self.state = State::Consuming(consumer);
                        }
                        Err(e) => return Some((Err(e), self)),
                    }
                }
                State::Ended => return None,
            }
        }
    }
}

/// Returns once `channel` is no longer open (checked every second).
async fn closed(channel: &Channel) {
    let mut every = tokio::time::interval(CHANNEL_CHECK);
    loop {
        every.tick().await;
        if !channel.status().connected() {
            return;
        }
    }
}

/// How often a paused queue checks that its channel is still open.
const CHANNEL_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

fn add(counter: &AtomicUsize, bytes: usize) -> usize {
    let before = counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
            Some(v.saturating_add(bytes))
        })
        .unwrap_or_default();
    before.saturating_add(bytes)
}

fn sub(counter: &AtomicUsize, bytes: usize) -> usize {
    let before = counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
            Some(v.saturating_sub(bytes))
        })
        .unwrap_or_default();
    before.saturating_sub(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_pauses_when_reached_and_resumes_at_half() {
        let budget = Budget::new(100);
        let paused = budget.paused.subscribe();
        let a = budget.hold(60);
        assert!(!*paused.borrow());
        let b = budget.hold(40);
        assert!(*paused.borrow(), "100 of 100 held");
        drop(a);
        assert_eq!(budget.held(), 40);
        assert!(!*paused.borrow(), "40 is under half");
        let c = budget.hold(70);
        assert!(*paused.borrow());
        drop(b);
        assert!(*paused.borrow(), "70 is over half");
        drop(c);
        assert!(!*paused.borrow());
        assert_eq!(budget.held(), 0);
    }
}
