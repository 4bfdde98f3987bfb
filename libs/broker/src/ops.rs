//! The `/readyz` checks of a service that uses both PostgreSQL and RabbitMQ, so every binary
//! reports the same two checks under the same names (`database`, `broker`).

use shopfds_store::Store;
use shopfds_telemetry::ops::{self, Readiness};

use crate::BrokerSettings;

/// `database`: `SELECT 1` on `store`'s pool; `broker`: a fresh connection to `broker` opened and
/// closed. Each check is bounded by [`Readiness::run`]'s timeout.
pub fn readiness(store: &Store, broker: &BrokerSettings) -> Readiness {
    let store = store.clone();
    let broker = broker.clone();
    Readiness::new()
        .with(
            "database",
            ops::check(move || {
                let store = store.clone();
                async move { store.ping().await.map_err(|e| e.to_string()) }
            }),
        )
        .with(
            "broker",
            ops::check(move || {
                let broker = broker.clone();
                async move { crate::amqp::ping(&broker).await }
            }),
        )
}
