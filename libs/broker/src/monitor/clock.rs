//! The Lamport clock every event and control reply carries (Celery's `app.clock`): forwarded on
//! each message sent, moved past any clock value received.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Clock(AtomicU64);

impl Clock {
    /// The next value, for a message about to be sent.
    pub fn forward(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed).saturating_add(1)
    }

    /// Moves past `other` (a received message's clock); the new value.
    pub fn adjust(&self, other: u64) -> u64 {
        let mut current = self.0.load(Ordering::Relaxed);
        loop {
            let next = current.max(other).saturating_add(1);
            match self
                .0
                .compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return next,
                Err(seen) => current = seen,
            }
        }
    }

    pub fn value(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_and_moves_past_what_it_hears() {
        let clock = Clock::default();
        assert_eq!(clock.forward(), 1);
        assert_eq!(clock.adjust(10), 11);
        assert_eq!(clock.adjust(3), 12);
        assert_eq!(clock.value(), 12);
    }
}
