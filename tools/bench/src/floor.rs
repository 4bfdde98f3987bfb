//! The floor: the fastest bare lapin consumer of pre-filled persistent messages we could write,
//! with manual acks (no `no_ack`: the broker holds every message until it is acknowledged, as
//! for a worker) and the same prefetch as every other contender. Nothing is decoded and no task
//! runs, so no worker can drain faster on the same broker.
//!
//! Each [`FLOOR_VARIANTS`] entry acknowledges differently; the harness drains one pre-fill with
//! each and keeps the fastest for the measured runs:
//! - `ack each`: every delivery acked on its own, acks in flight together (up to the prefetch);
//! - `multiple ack every K` (K = prefetch/4 and prefetch/2): the consume loop acks with
//!   `multiple: true` every K deliveries and the last one, awaiting that ack: one ack frame per
//!   K messages;
//! - `multiple ack every K, detached` (K = prefetch/4): the same, but the ack is queued with
//!   `Channel::basic_ack` and not waited for, so the loop never waits for lapin's I/O thread
//!   (`Acker::ack` cannot be used so: lapin runs those as concurrent tasks, a later `multiple`
//!   ack can overtake an earlier one and the broker closes the channel, unknown delivery tag).
//!
//! On the 2-core development machine the multiple-ack variants drain 40–55 % faster than
//! `ack each` and use 35–45 % less CPU per message; which of them wins varies from run to run
//! (within ~15 %), K = prefetch/4 most often.
//!
//! A drain is timed from its first delivery to its last ack; its CPU is this whole process's
//! (user + system, lapin's I/O thread included), as nothing else runs in it meanwhile.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use shopfds_broker::BrokerSettings;

use crate::proc_stat;

/// A drain that has not finished by then has failed.
pub const LIMIT: Duration = Duration::from_secs(300);

/// How the bare consumer acknowledges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloorAck {
    /// Each delivery on its own, acks in flight together.
    Each,
    /// `multiple: true` every prefetch / `divisor` deliveries, awaited in the consume loop, or
    /// (`detached`) queued on the channel so the loop never waits for lapin's I/O thread.
    MultipleEvery { divisor: u16, detached: bool },
}

pub const FLOOR_VARIANTS: [FloorAck; 4] = [
    FloorAck::Each,
    FloorAck::MultipleEvery {
        divisor: 4,
        detached: false,
    },
    FloorAck::MultipleEvery {
        divisor: 2,
        detached: false,
    },
    FloorAck::MultipleEvery {
        divisor: 4,
        detached: true,
    },
];

impl FloorAck {
    fn every(self, prefetch: u16) -> usize {
        match self {
            FloorAck::Each => 1,
            FloorAck::MultipleEvery { divisor, .. } => usize::from((prefetch / divisor).max(1)),
        }
    }

    pub fn describe(self, prefetch: u16) -> String {
        match self {
            FloorAck::Each => "lapin, ack each".to_owned(),
            FloorAck::MultipleEvery { detached, .. } => format!(
                "lapin, multiple ack every {}{}",
                self.every(prefetch),
                if detached { ", detached" } else { "" }
            ),
        }
    }
}

/// One floor drain's figures.
#[derive(Debug, Clone, Copy)]
pub struct FloorDrain {
    pub took: Duration,
    pub cpu: Duration,
}

/// Consumes and acknowledges `n` messages of `queue` (already there) on a connection of its own.
pub async fn drain(
    broker: &BrokerSettings,
    queue: &str,
    prefetch: u16,
    n: usize,
    ack: FloorAck,
) -> anyhow::Result<FloorDrain> {
    let conn = shopfds_broker::amqp::connect(broker).await?;
    let channel = conn.create_channel().await?;
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    let first = OnceLock::new();
    let cpu = proc_stat::cpu_of(std::process::id());
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "floor".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    match ack {
        FloorAck::Each => {
            let mut acked = (&mut consumer)
                .take(n)
                .map(|delivery| {
                    first.get_or_init(Instant::now);
                    async move {
                        delivery?.ack(BasicAckOptions::default()).await?;
                        Ok::<(), lapin::Error>(())
                    }
                })
                .buffer_unordered(usize::from(prefetch));
            for _ in 0..n {
                tokio::time::timeout(LIMIT, acked.next())
                    .await
                    .context("floor drain stalled")?
                    .context("consumer ended")??;
            }
        }
        FloorAck::MultipleEvery { detached, .. } => {
            let every = ack.every(prefetch);
            // Detached acks go straight to the channel (`Channel::basic_ack`, whose first poll
            // queues the frame, so they leave in order: a later `multiple` ack never overtakes
            // an earlier one) and are completed at the end. Through `Acker::ack` they could
            // overtake: lapin runs those as concurrent internal tasks, and the broker then
            // refuses the earlier tag (PRECONDITION_FAILED, unknown delivery tag).
            let mut pending = futures::stream::FuturesUnordered::new();
            for seen in 1..=n {
                let delivery = tokio::time::timeout(LIMIT, consumer.next())
                    .await
                    .context("floor drain stalled")?
                    .context("consumer ended")??;
                first.get_or_init(Instant::now);
                if seen % every == 0 || seen == n {
                    let multiple = BasicAckOptions { multiple: true };
                    if detached {
                        let (channel, tag) = (channel.clone(), delivery.delivery_tag);
                        let mut ack =
                            Box::pin(async move { channel.basic_ack(tag, multiple).await });
                        if let std::task::Poll::Ready(done) = futures::poll!(ack.as_mut()) {
                            done?;
                        } else {
                            pending.push(ack);
                        }
                    } else {
                        delivery.ack(multiple).await?;
                    }
                }
            }
            while let Some(done) = pending.next().await {
                done?;
            }
        }
    }
    let ended = Instant::now();
    let cpu = proc_stat::cpu_of(std::process::id()).saturating_sub(cpu);
    let _ = channel.close(200, "drained".into()).await;
    let _ = conn.close(200, "drained".into()).await;
    Ok(FloorDrain {
        took: ended.duration_since(*first.get().context("no delivery")?),
        cpu,
    })
}
