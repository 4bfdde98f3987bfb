//! The `/readyz` checks of a service that uses RabbitMQ and a database, so every binary reports
//! the same checks under the same names (`database`, `broker`).

use shopfds_telemetry::ops::{self, Check, Readiness};

use crate::BrokerSettings;

/// `database`: the given check (`SELECT 1` on the service's pool); `broker`: a fresh connection
/// to `broker` opened and closed. Each check is bounded by [`Readiness::run`]'s timeout.
pub fn readiness(database: Check, broker: &BrokerSettings) -> Readiness {
    let broker = broker.clone();
    Readiness::new().with("database", database).with(
        "broker",
        ops::check(move || {
            let broker = broker.clone();
            async move { crate::amqp::ping(&broker).await }
        }),
    )
}
