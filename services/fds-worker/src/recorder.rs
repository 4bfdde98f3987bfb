//! Records every decision in `fds_results` without slowing the Score path: the RPC hands the
//! result to a bounded channel (never waiting), and one background writer inserts whatever has
//! queued up in a single statement. When the channel is full the result is dropped, logged and
//! counted (`shopfds_fds_results_dropped_total`): an order must not wait for bookkeeping.
//!
//! The writer stops once every [`ResultRecorder`] clone is dropped, after writing what is queued.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use shopfds_store::{FdsResults, NewFdsResult};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::metrics;

/// Largest batch the writer inserts at once.
const MAX_BATCH: usize = 500;

/// The sending side; cheap to clone.
#[derive(Debug, Clone)]
pub struct ResultRecorder {
    tx: mpsc::Sender<NewFdsResult>,
    dropped: Arc<AtomicU64>,
}

impl ResultRecorder {
    /// Starts the writer with room for `capacity` waiting results.
    pub fn spawn(store: FdsResults, capacity: usize) -> (ResultRecorder, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let writer = tokio::spawn(write_batches(store, rx));
        (
            ResultRecorder {
                tx,
                dropped: Arc::new(AtomicU64::new(0)),
            },
            writer,
        )
    }

    /// Queues `result` for writing; never waits.
    pub fn record(&self, result: NewFdsResult) {
        match self.tx.try_send(result) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(result)) => {
                let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                metrics::results_dropped_total().inc();
                // One line per power of two keeps a sustained overload from flooding the log.
                if dropped.is_power_of_two() {
                    tracing::warn!(
                        order_id = %result.order_id,
                        dropped,
                        "fds result not recorded: the writer is behind"
                    );
                }
            }
            Err(mpsc::error::TrySendError::Closed(result)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                metrics::results_dropped_total().inc();
                tracing::warn!(order_id = %result.order_id, "fds result writer has stopped");
            }
        }
    }

    /// Results dropped by this recorder (and its clones) so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

async fn write_batches(store: FdsResults, mut rx: mpsc::Receiver<NewFdsResult>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        if let Err(e) = store.record_many(&batch).await {
            metrics::results_write_failed_total().inc_by(batch.len() as u64);
            tracing::error!(error = %e, lost = batch.len(), "cannot record fds results");
        }
        batch.clear();
    }
    tracing::debug!("fds result writer stopped");
}
