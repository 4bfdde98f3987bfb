//! The `/readyz` checks of a service that uses RabbitMQ and a database, so every binary reports
//! the same checks under the same names (`database`, `broker`).
//!
//! `broker` reads the state the service's own connection publishes ([`crate::state`]): no I/O
//! and no connection per probe, and ready only while that connection is set up (a worker:
//! consuming), not merely while the broker would accept a new connection.

use shopfds_telemetry::ops::{self, Check, Readiness};
use tokio::sync::watch;

use crate::BrokerState;

/// `database`: the given check (`SELECT 1` on the service's pool); `broker`: [`broker_check`].
pub fn readiness(database: Check, broker: watch::Receiver<BrokerState>) -> Readiness {
    Readiness::new()
        .with("database", database)
        .with("broker", broker_check(broker))
}

/// Ready while the latest [`BrokerState`] is; otherwise its description (with the last error).
pub fn broker_check(state: watch::Receiver<BrokerState>) -> Check {
    ops::check(move || {
        let verdict = state.borrow().readiness();
        async move { verdict }
    })
}
