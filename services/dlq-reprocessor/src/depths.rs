//! `shopfds_dead_letter_messages{queue}`: the depth of every `failed.<queue>` and
//! `parked.<queue>`, read every `DLQ_DEPTH_INTERVAL_SECS` on one broker connection kept for it
//! (not one per reading, which would show in `shopfds_broker_connects_total`).
//!
//! A reading that fails (broker away, a queue deleted under it) closes that connection, keeps
//! the last values and is tried again on a new connection at the next interval; the depths
//! are then as old as the last reading that worked, and the broker's own alerts say why.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::workbench::{self, QueueDepth, Workbench, parked_queue};

/// Reads the depths every `every` until `shutdown`, setting the gauge after each reading.
pub async fn sample(workbench: &Workbench, every: Duration, shutdown: CancellationToken) {
    let mut conn: Option<lapin::Connection> = None;
    loop {
        let open = match conn.take() {
            Some(c) if c.status().connected() => Ok(c),
            _ => workbench.connect().await,
        };
        match open {
            Ok(c) => match workbench::depths_on(&c).await {
                Ok(depths) => {
                    publish(&depths);
                    conn = Some(c);
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot read the dead-letter queues' depths; trying again");
                    let _ = c.close(200, "depth reading failed".into()).await;
                }
            },
            Err(error) => {
                tracing::warn!(%error, "cannot read the dead-letter queues' depths; trying again");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(every) => {}
        }
    }
    if let Some(c) = conn {
        let _ = c.close(200, "shutdown".into()).await;
    }
}

fn publish(depths: &[QueueDepth]) {
    let gauge = shopfds_telemetry::metrics::dead_letter_messages();
    for d in depths {
        let failed = shopfds_protocol::names::dead_letter_queue(&d.queue);
        gauge
            .with_label_values(&[failed.as_str()])
            .set(i64::from(d.dead_letters));
        gauge
            .with_label_values(&[parked_queue(&d.queue).as_str()])
            .set(i64::from(d.parked));
    }
}
