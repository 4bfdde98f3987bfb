//! `shopfds_broker_connected{connection}`: 1 while this process's broker connection of that kind
//! is set up, 0 while it is not, read from the same [`BrokerState`] `/readyz` reads.
//!
//! The owner of a connection hands a receiver of its state to [`report`] once; the gauge is
//! computed when `/metrics` is scraped (a collector of its own in the process-wide registry), so
//! it can never disagree with readiness and costs nothing between scrapes. `connection` is
//! `worker` (a [`crate::Worker`]: 1 while consuming), `topology`
//! ([`crate::service::keep_topology`]: 1 while declared on a live connection), `relay` (the
//! outbox relay) or `publisher` (a [`crate::ReconnectingPublisher`], which connects on demand:
//! absent before its first publish, and a connection lost while it is idle shows only at its
//! next publish). Several owners of one kind in a process (tests) give 1 only if all are set
//! up; an owner that is gone (its sender dropped) no longer counts, and a kind without owners
//! has no sample.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntGaugeVec, Opts};
use tokio::sync::watch;

use crate::BrokerState;

/// `connection` label values.
pub mod connection {
    pub const WORKER: &str = "worker";
    pub const TOPOLOGY: &str = "topology";
    pub const RELAY: &str = "relay";
    pub const PUBLISHER: &str = "publisher";
}

struct Connected {
    gauge: IntGaugeVec,
    watched: Mutex<Watched>,
}

/// `None` only if the gauge could not be built (a programming mistake the crate's tests hit):
/// the process then runs without it.
static CONNECTED: LazyLock<Option<Arc<Connected>>> = LazyLock::new(|| {
    let gauge = IntGaugeVec::new(
        Opts::new(
            "shopfds_broker_connected",
            "1 while this process's broker connection of this kind is set up (worker: \
             consuming; topology, relay: declared; publisher: as of its last publish), 0 while \
             it connects, is lost or shuts down.",
        ),
        &["connection"],
    );
    let connected = match gauge {
        Ok(gauge) => Arc::new(Connected {
            gauge,
            watched: Mutex::new(Vec::new()),
        }),
        Err(error) => {
            tracing::error!(%error, "shopfds_broker_connected not available");
            return None;
        }
    };
    let registered =
        shopfds_telemetry::metrics::registry().register(Box::new(Handle(connected.clone())));
    if let Err(error) = registered {
        tracing::error!(%error, "shopfds_broker_connected not registered");
    }
    Some(connected)
});

/// Counts `state` in `shopfds_broker_connected{connection}` for as long as its sender lives.
pub fn report(connection: &'static str, state: watch::Receiver<BrokerState>) {
    if let Some(c) = CONNECTED.as_ref() {
        c.lock().push((connection, state));
    }
}

/// A new state channel (see [`crate::state::channel`]) already [`report`]ed as `connection`.
pub fn channel(connection: &'static str) -> watch::Sender<BrokerState> {
    let (state, watched) = crate::state::channel();
    report(connection, watched);
    state
}

type Watched = Vec<(&'static str, watch::Receiver<BrokerState>)>;

impl Connected {
    fn lock(&self) -> MutexGuard<'_, Watched> {
        // The list stays valid whatever a panicking holder did: it only pushes and retains.
        self.watched.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What the registry holds (the registry takes ownership; the `LazyLock` keeps the other `Arc`).
struct Handle(Arc<Connected>);

impl Collector for Handle {
    fn desc(&self) -> Vec<&Desc> {
        self.0.gauge.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.0.collect_now()
    }
}

impl Connected {
    fn collect_now(&self) -> Vec<MetricFamily> {
        let mut watched = self.lock();
        watched.retain(|(_, state)| state.has_changed().is_ok());
        let mut by_kind: BTreeMap<&str, bool> = BTreeMap::new();
        for (connection, state) in watched.iter() {
            let ready = state.borrow().is_ready();
            *by_kind.entry(connection).or_insert(true) &= ready;
        }
        self.gauge.reset();
        for (connection, ready) in by_kind {
            self.gauge
                .with_label_values(&[connection])
                .set(i64::from(ready));
        }
        self.gauge.collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(connection: &str) -> Option<i64> {
        shopfds_telemetry::metrics::registry()
            .gather()
            .iter()
            .filter(|f| f.name() == "shopfds_broker_connected")
            .flat_map(|f| f.get_metric().to_vec())
            .find(|m| m.get_label().iter().any(|l| l.value() == connection))
            .map(|m| m.get_gauge().get_value() as i64)
    }

    #[test]
    fn follows_the_state_and_forgets_an_owner_that_is_gone() {
        let state = channel("test_kind");
        assert_eq!(sample("test_kind"), Some(0), "connecting is not connected");
        state.send_replace(BrokerState::Consuming);
        assert_eq!(sample("test_kind"), Some(1));
        let second = channel("test_kind");
        assert_eq!(sample("test_kind"), Some(0), "one of two owners not set up");
        second.send_replace(BrokerState::Declared);
        assert_eq!(sample("test_kind"), Some(1));
        state.send_replace(BrokerState::Disconnected("connection reset".into()));
        assert_eq!(sample("test_kind"), Some(0));
        drop(state);
        assert_eq!(
            sample("test_kind"),
            Some(1),
            "a dropped owner no longer counts"
        );
        drop(second);
        assert_eq!(sample("test_kind"), None);
    }
}
