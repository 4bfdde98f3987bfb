//! Side effects that must not be cut in half: a task wraps the span from its external call (the
//! mail handed to SMTP, the shipment booked) to the record that says it happened in
//! [`TaskContext::effect`](super::task::TaskContext::effect). While one runs, neither the hard
//! time limit nor the end of the shutdown grace period drops the task: they take effect when the
//! span ends (or the task returns), so a side effect that succeeded is never run again because
//! its bookkeeping was interrupted.
//!
//! What remains is a process death (SIGKILL, OOM, power) between the external call's success and
//! the record's commit; README's "Fault tolerance" gives its size.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

/// The effect spans of one task run.
#[derive(Debug, Clone, Default)]
pub struct Effects(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    active: AtomicUsize,
    ended: Notify,
}

impl Effects {
    /// Runs `effect` as a span that is not interrupted.
    pub async fn run<F: Future>(&self, effect: F) -> F::Output {
        let _span = Span::enter(self);
        effect.await
    }

    /// Whether a span is running.
    pub fn active(&self) -> bool {
        self.0.active.load(Ordering::SeqCst) > 0
    }

    /// Returns once no span runs.
    pub async fn idle(&self) {
        loop {
            let ended = self.0.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            if !self.active() {
                return;
            }
            ended.await;
        }
    }
}

/// Counts one running span; dropped when it ends (returned, failed or dropped with the task).
struct Span<'a>(&'a Effects);

impl<'a> Span<'a> {
    fn enter(effects: &'a Effects) -> Self {
        effects.0.active.fetch_add(1, Ordering::SeqCst);
        Span(effects)
    }
}

impl Drop for Span<'_> {
    fn drop(&mut self) {
        self.0.0.active.fetch_sub(1, Ordering::SeqCst);
        self.0.0.ended.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn idle_waits_for_the_running_span() {
        let effects = Effects::default();
        assert!(!effects.active());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let running = effects.clone();
        let task = tokio::spawn(async move { running.run(async { rx.await.is_ok() }).await });
        while !effects.active() {
            tokio::task::yield_now().await;
        }
        let idle = effects.idle();
        tokio::pin!(idle);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), &mut idle)
                .await
                .is_err(),
            "idle while a span runs"
        );
        tx.send(()).ok();
        idle.await;
        assert!(task.await.unwrap_or(false));
        assert!(!effects.active());
    }
}
