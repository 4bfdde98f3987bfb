//! The dependency gate: while a dependency of the worker itself (its database, its result
//! backend) is unreachable, the worker takes no new messages, and the tasks that met the outage
//! wait here instead of spending their retries.
//!
//! A task whose handler answered [`TaskError::Unavailable`](super::options::TaskError), or whose
//! final state the result backend could not write, [`close`](Gate::close)s the gate. Closing
//! starts one prober, which runs the worker's probes (the same checks as `/readyz`'s
//! `database`, and the result backend's own) with a growing pause between rounds (250 ms
//! doubling to 5 s) until all of them answer, and then opens the gate. The consume loop waits
//! for an open gate before it takes each next delivery, so messages stay in the queue (or, if
//! already prefetched, unstarted) for as long as the outage lasts; no task fails because of it.

use std::sync::Arc;
use std::time::Duration;

use shopfds_telemetry::ops::Check;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The first pause between two probe rounds; it doubles up to [`PROBE_MAX`].
const PROBE_FIRST: Duration = Duration::from_millis(250);
const PROBE_MAX: Duration = Duration::from_secs(5);
/// One probe's longest answer before it counts as down.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the gate is closed: the dependency and what it answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    pub dependency: String,
    pub reason: String,
}

/// Shared by every task of a worker (kept across reconnections).
#[derive(Clone)]
pub struct Gate {
    probes: Arc<Vec<(String, Check)>>,
    state: Arc<watch::Sender<Option<Closed>>>,
    /// Cancelled when the worker stops: the prober ends.
    stop: CancellationToken,
}

impl Gate {
    /// An open gate with these probes. Without probes, a closed gate opens again after one
    /// pause ([`PROBE_FIRST`], doubling while it keeps being closed) — a requeue with a delay.
    pub fn new(probes: Vec<(String, Check)>) -> Gate {
        Gate {
            probes: Arc::new(probes),
            state: Arc::new(watch::channel(None).0),
            stop: CancellationToken::new(),
        }
    }

    /// Whether messages may be taken.
    pub fn is_open(&self) -> bool {
        self.state.borrow().is_none()
    }

    /// Closes the gate because `dependency` failed with `reason`, and starts probing, unless it
    /// is closed already.
    pub fn close(&self, dependency: &str, reason: &str) {
        let closed = Closed {
            dependency: dependency.to_owned(),
            reason: reason.to_owned(),
        };
        let newly = self.state.send_if_modified(|state| {
            if state.is_some() {
                return false;
            }
            *state = Some(closed.clone());
            true
        });
        if !newly {
            return;
        }
        tracing::warn!(
            dependency,
            reason,
            "a dependency of the worker is unreachable: no new messages are taken until it answers; tasks that met it keep their retries"
        );
        shopfds_telemetry::metrics::worker_dependency_down()
            .with_label_values(&[dependency])
            .set(1);
        let gate = self.clone();
        tokio::spawn(async move { gate.probe_until_open(closed).await });
    }

    /// Waits until the gate is open; `false` if `cancel` fired first.
    pub async fn opened(&self, cancel: &CancellationToken) -> bool {
        let mut watched = self.state.subscribe();
        tokio::select! {
            open = watched.wait_for(Option::is_none) => open.is_ok(),
            () = cancel.cancelled() => false,
        }
    }

    /// Ends the prober (the worker is stopping).
    pub fn stop(&self) {
        self.stop.cancel();
    }

    async fn probe_until_open(&self, closed: Closed) {
        let mut pause = PROBE_FIRST;
        loop {
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = self.stop.cancelled() => return,
            }
            match self.probe().await {
                Ok(()) => break,
                Err(reason) => {
                    tracing::debug!(%reason, retry_in_ms = pause.as_millis(), "dependency still unreachable");
                    pause = (pause * 2).min(PROBE_MAX);
                }
            }
        }
        shopfds_telemetry::metrics::worker_dependency_down()
            .with_label_values(&[closed.dependency.as_str()])
            .set(0);
        tracing::info!(dependency = %closed.dependency, "the dependency answers again: taking messages");
        self.state.send_replace(None);
    }

    /// Every probe, concurrently; the first failure as `name: reason`.
    async fn probe(&self) -> Result<(), String> {
        let rounds = self.probes.iter().map(|(name, check)| async move {
            match tokio::time::timeout(PROBE_TIMEOUT, check()).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(reason)) => Err(format!("{name}: {reason}")),
                Err(_) => Err(format!("{name}: timed out")),
            }
        });
        futures::future::join_all(rounds)
            .await
            .into_iter()
            .collect::<Result<Vec<()>, String>>()
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures::FutureExt;

    use super::*;

    /// A probe that fails `failures` times, then answers.
    fn flaky(failures: usize) -> (Check, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let check: Check = Arc::new(move || {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < failures {
                    Err("connection refused".to_owned())
                } else {
                    Ok(())
                }
            }
            .boxed()
        });
        (check, calls)
    }

    #[tokio::test]
    async fn a_closed_gate_opens_once_every_probe_answers() {
        let (check, calls) = flaky(3);
        let gate = Gate::new(vec![("database".to_owned(), check)]);
        assert!(gate.is_open());
        gate.close("database", "pool timed out");
        assert!(!gate.is_open());
        // Closing again while closed starts no second prober.
        gate.close("database", "pool timed out");
        assert!(gate.opened(&CancellationToken::new()).await);
        assert!(gate.is_open());
        assert_eq!(
            calls.load(Ordering::SeqCst),
            4,
            "three failures, then the answer"
        );
    }

    #[tokio::test]
    async fn waiting_for_the_gate_ends_on_cancel() {
        let (check, _) = flaky(usize::MAX);
        let gate = Gate::new(vec![("database".to_owned(), check)]);
        gate.close("database", "down");
        let cancel = CancellationToken::new();
        cancel.cancel();
        assert!(!gate.opened(&cancel).await);
        gate.stop();
    }
}
