//! What a service's own broker connection is doing, for `/readyz`.
//!
//! The owner of the connection (a [`crate::Worker`], or [`crate::service::run_declare_only`])
//! publishes a [`BrokerState`] through a `tokio::sync::watch` as it connects, declares,
//! consumes, loses the connection and stops; the readiness check only reads the latest value.
//! A probe therefore costs no I/O and opens no connection, and it reports the connection the
//! service actually works on rather than whether a new one could be opened.
//!
//! Transitions: `Connecting` at start; `Consuming` (a worker) or `Declared` (a service that does
//! not consume) once set up; `Disconnected(reason)` after a failed attempt or a lost connection,
//! kept while retrying with backoff (so the probe shows the last reason) until set up again;
//! `Stopped` once shutdown began. Only `Consuming` and `Declared` are ready.

use std::fmt;

use tokio::sync::watch;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerState {
    /// Not set up yet, and no attempt has failed so far.
    Connecting,
    /// Connected, topology declared, a consumer registered on every configured queue.
    Consuming,
    /// Connected and the topology declared; nothing is consumed on this connection.
    Declared,
    /// The last attempt failed or the connection was lost, for this reason; retrying.
    Disconnected(String),
    /// Shutdown began: no longer consuming.
    Stopped,
}

impl BrokerState {
    pub fn is_ready(&self) -> bool {
        matches!(self, BrokerState::Consuming | BrokerState::Declared)
    }

    /// The readiness verdict: `Err` with a reason an operator can act on unless ready.
    pub fn readiness(&self) -> Result<(), String> {
        if self.is_ready() {
            Ok(())
        } else {
            Err(self.to_string())
        }
    }
}

impl fmt::Display for BrokerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BrokerState::Connecting => f.write_str("connecting to the broker"),
            BrokerState::Consuming => f.write_str("consuming"),
            BrokerState::Declared => f.write_str("connected, topology declared"),
            BrokerState::Disconnected(reason) => write!(f, "not connected (retrying): {reason}"),
            BrokerState::Stopped => f.write_str("shutting down"),
        }
    }
}

/// A new state channel starting at [`BrokerState::Connecting`].
pub fn channel() -> (watch::Sender<BrokerState>, watch::Receiver<BrokerState>) {
    watch::channel(BrokerState::Connecting)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_set_up_connection_is_ready_and_the_reason_is_kept() {
        assert_eq!(BrokerState::Consuming.readiness(), Ok(()));
        assert_eq!(BrokerState::Declared.readiness(), Ok(()));
        assert!(BrokerState::Connecting.readiness().is_err());
        assert_eq!(
            BrokerState::Disconnected("connection refused".into()).readiness(),
            Err("not connected (retrying): connection refused".to_owned())
        );
        assert_eq!(
            BrokerState::Stopped.readiness(),
            Err("shutting down".to_owned())
        );
    }
}
