//! Waiting for quiet: after the last order and fault, the run is over once every accepted
//! task is in a final state and the outbox is relayed, or once the limit passes (a task stuck
//! for good is then reported, not waited for).

use std::time::{Duration, Instant};

use sqlx::PgPool;

use crate::ledger::{self, Accepted};

const POLL: Duration = Duration::from_secs(1);

/// Returns how long it waited.
pub async fn wait(db: &PgPool, prefix: &str, accepted: &Accepted, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if let Ok(orders) = ledger::orders(db, prefix, accepted).await
            && orders.non_final(accepted) == 0
            && orders.unsent_outbox == 0
        {
            break;
        }
        if start.elapsed() >= limit {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    start.elapsed()
}
