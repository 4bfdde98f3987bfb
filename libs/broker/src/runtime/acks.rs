//! Acknowledgements of one consumer channel, coalesced. Acking every message on its own costs
//! about as much CPU as everything else the worker does per task (measured by `make bench`: a
//! bare consumer acking each message drains at ~60 % of one acking with `multiple`), so the
//! channel's settlements go through one task that acks with `multiple: true` where it can.
//!
//! The rules, which keep every ack exact:
//! - every delivery is registered ([`Acks::delivered`]) before its task starts, in delivery
//!   order, and settled exactly once ([`Acks::settle`]);
//! - acks of the contiguous run of settled deliveries below the oldest one still running are
//!   sent as one `basic.ack(multiple)` naming the highest of them (a tag RabbitMQ still holds);
//! - acks above a delivery still running wait behind it at most [`HOLD`], then go one by one, so
//!   a slow task neither holds finished messages unacked for long nor fills the prefetch window;
//! - requeues and rejects go at once, one by one (`basic.reject`);
//! - everything is sent in order on the channel by this one task, awaited before the next, so a
//!   later `multiple` ack never overtakes an earlier frame.

use std::collections::BTreeSet;
use std::time::Duration;

use lapin::Channel;
use lapin::options::{BasicAckOptions, BasicRejectOptions};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How long an ack may wait behind a delivery still running before it is sent on its own.
pub const HOLD: Duration = Duration::from_millis(50);

/// What becomes of a delivery at the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    Ack,
    /// Back to the queue (`basic.reject` with requeue).
    Requeue,
    /// To the queue's dead-letter exchange (`basic.reject` without requeue).
    Reject,
}

enum Event {
    Delivered(u64),
    Settled(u64, Settle),
}

/// The handle tasks settle their deliveries through. Cheap to clone.
#[derive(Clone)]
pub struct Acks {
    events: mpsc::UnboundedSender<Event>,
}

impl Acks {
    /// Starts the channel's acking task; it ends once every handle is dropped and what they
    /// settled is sent.
    pub fn spawn(channel: Channel) -> (Acks, JoinHandle<()>) {
        let (events, queue) = mpsc::unbounded_channel();
        (Acks { events }, tokio::spawn(run(channel, queue)))
    }

    /// Registers a delivery before its task starts (in delivery order).
    pub fn delivered(&self, tag: u64) {
        let _ = self.events.send(Event::Delivered(tag));
    }

    /// Settles a registered delivery.
    pub fn settle(&self, tag: u64, how: Settle) {
        if self.events.send(Event::Settled(tag, how)).is_err() {
            tracing::warn!(
                tag,
                "the channel's acks have stopped; the broker will redeliver"
            );
        }
    }
}

/// Which acks to send now: the plan of one flush, worked out without I/O.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Flush {
    /// `basic.ack(multiple)` with this tag.
    pub multiple: Option<u64>,
    /// `basic.ack` one by one.
    pub single: Vec<u64>,
}

/// The bookkeeping: deliveries running, and acks not yet sent.
#[derive(Debug, Default)]
pub struct Ledger {
    running: BTreeSet<u64>,
    acked: BTreeSet<u64>,
    /// Since when the oldest ack held behind a running delivery has waited.
    held_since: Option<Instant>,
}

impl Ledger {
    pub fn delivered(&mut self, tag: u64) {
        self.running.insert(tag);
    }

    /// Records an ack to send; a requeue or reject only leaves the running set (it is sent by
    /// the caller at once). `false` for a tag that is not running (settled already: e.g. the
    /// runtime's panic net after a settlement): nothing must be sent for it, since the broker
    /// closes a channel that settles a tag twice.
    pub fn settled(&mut self, tag: u64, how: Settle) -> bool {
        if !self.running.remove(&tag) {
            return false;
        }
        if how == Settle::Ack {
            self.acked.insert(tag);
        }
        true
    }

    /// The acks to send at `now`.
    pub fn flush(&mut self, now: Instant) -> Flush {
        let oldest_running = self.running.first().copied().unwrap_or(u64::MAX);
        let held = self.acked.split_off(&oldest_running);
        let mut plan = Flush {
            multiple: self.acked.last().copied(),
            single: Vec::new(),
        };
        self.acked = held;
        if self.acked.is_empty() {
            self.held_since = None;
        } else {
            let since = *self.held_since.get_or_insert(now);
            if now.duration_since(since) >= HOLD {
                plan.single = std::mem::take(&mut self.acked).into_iter().collect();
                self.held_since = None;
            }
        }
        plan
    }

    /// When the held acks must go, if any are held.
    pub fn deadline(&self) -> Option<Instant> {
        self.held_since.map(|since| since + HOLD)
    }
}

async fn run(channel: Channel, mut queue: mpsc::UnboundedReceiver<Event>) {
    let mut ledger = Ledger::default();
    let mut events = Vec::with_capacity(256);
    loop {
        let received = match ledger.deadline() {
            Some(at) => tokio::select! {
                n = queue.recv_many(&mut events, 256) => Some(n),
                () = tokio::time::sleep_until(at) => None,
            },
            None => Some(queue.recv_many(&mut events, 256).await),
        };
        if received == Some(0) {
            break;
        }
        for event in events.drain(..) {
            match event {
                Event::Delivered(tag) => ledger.delivered(tag),
                Event::Settled(tag, how) => {
                    if !ledger.settled(tag, how) {
                        tracing::warn!(
                            tag,
                            ?how,
                            "a delivery settled twice; the second is ignored"
                        );
                    } else if how != Settle::Ack {
                        reject(&channel, tag, how == Settle::Requeue).await;
                    }
                }
            }
        }
        send(&channel, ledger.flush(Instant::now())).await;
    }
    // Every handle is gone: what is still held goes now.
    let mut last = ledger.flush(Instant::now());
    last.single.extend(std::mem::take(&mut ledger.acked));
    send(&channel, last).await;
}

async fn send(channel: &Channel, plan: Flush) {
    if let Some(tag) = plan.multiple {
        ack(channel, tag, true).await;
    }
    for tag in plan.single {
        ack(channel, tag, false).await;
    }
}

async fn ack(channel: &Channel, tag: u64, multiple: bool) {
    if let Err(e) = channel.basic_ack(tag, BasicAckOptions { multiple }).await {
        tracing::warn!(error = %e, tag, multiple, "ack failed; the broker will redeliver");
    }
}

async fn reject(channel: &Channel, tag: u64, requeue: bool) {
    if let Err(e) = channel
        .basic_reject(tag, BasicRejectOptions { requeue })
        .await
    {
        tracing::warn!(error = %e, tag, requeue, "reject failed; the broker will redeliver");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger(delivered: impl IntoIterator<Item = u64>) -> Ledger {
        let mut l = Ledger::default();
        for tag in delivered {
            l.delivered(tag);
        }
        l
    }

    #[test]
    fn a_contiguous_run_of_acks_goes_as_one_multiple_ack() {
        let now = Instant::now();
        let mut l = ledger(1..=5);
        for tag in [2, 1, 3] {
            l.settled(tag, Settle::Ack);
        }
        assert_eq!(
            l.flush(now),
            Flush {
                multiple: Some(3),
                single: vec![]
            }
        );
        assert_eq!(l.flush(now), Flush::default(), "nothing is sent twice");
    }

    #[test]
    fn acks_behind_a_running_delivery_wait_then_go_one_by_one() {
        let now = Instant::now();
        let mut l = ledger(1..=4);
        l.settled(3, Settle::Ack);
        l.settled(4, Settle::Ack);
        assert_eq!(l.flush(now), Flush::default(), "1 and 2 still run");
        assert_eq!(l.deadline(), Some(now + HOLD));
        assert_eq!(
            l.flush(now + HOLD),
            Flush {
                multiple: None,
                single: vec![3, 4]
            }
        );
        assert_eq!(l.deadline(), None);
        // The slow ones end: their own acks, no tag twice.
        l.settled(1, Settle::Ack);
        l.settled(2, Settle::Ack);
        assert_eq!(
            l.flush(now + HOLD),
            Flush {
                multiple: Some(2),
                single: vec![]
            }
        );
    }

    #[test]
    fn a_requeued_delivery_is_never_covered_by_a_multiple_ack() {
        let now = Instant::now();
        let mut l = ledger(1..=3);
        l.settled(1, Settle::Ack);
        l.settled(2, Settle::Requeue);
        l.settled(3, Settle::Ack);
        // 2 left the broker's unacked set with its reject; a multiple ack up to 3 acks 1 and 3.
        assert_eq!(
            l.flush(now),
            Flush {
                multiple: Some(3),
                single: vec![]
            }
        );
        let mut l = ledger(1..=2);
        l.settled(2, Settle::Reject);
        l.settled(1, Settle::Ack);
        assert_eq!(
            l.flush(now),
            Flush {
                multiple: Some(1),
                single: vec![]
            },
            "the multiple ack names a tag the broker still holds"
        );
    }

    #[test]
    fn a_second_settlement_of_a_tag_is_refused_and_sends_nothing() {
        let now = Instant::now();
        let mut l = ledger(1..=2);
        assert!(l.settled(1, Settle::Ack));
        assert!(!l.settled(1, Settle::Reject), "settled already");
        assert!(!l.settled(7, Settle::Ack), "never delivered");
        assert!(l.settled(2, Settle::Ack));
        assert_eq!(
            l.flush(now),
            Flush {
                multiple: Some(2),
                single: vec![]
            }
        );
    }
}
