//! Why a task started late: the time between a task being planned and its handler starting,
//! split into phases (`shopfds_task_wait_seconds{queue,task,phase}` and the task span's
//! `wait.*` attributes):
//!
//! | phase | from | to |
//! |---|---|---|
//! | `outbox` | written to the outbox ([`PLANNED_HEADER`]) | published by the relay ([`SENT_HEADER`]) |
//! | `eta` / `retry_backoff` | published | its `eta` (a countdown; a retry's backoff when `retries > 0`) |
//! | `broker` | published, or its eta | delivered to this worker |
//! | `prefetch` | delivered | a concurrency slot free |
//! | `rate_limit` | slot | its rate-limit turn |
//!
//! Every Rust publisher stamps [`SENT_HEADER`] (ms since the epoch) on each publish, a retry or
//! eta copy included, and copies drop [`PLANNED_HEADER`], so the outbox wait is counted once.
//! A message from another publisher (a Python client) has no stamps: only its prefetch and
//! rate-limit phases are known. Clocks of different hosts differ: a negative span counts as 0.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use shopfds_telemetry::metrics::phase;

/// When the message was last published (ms since the epoch): set by every Rust publisher.
pub const SENT_HEADER: &str = "x-shopfds-sent";
/// When the outbox row was written (ms since the epoch): set by the relay, dropped by copies.
pub const PLANNED_HEADER: &str = "x-shopfds-planned";

/// What is known of one message's way to its start.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    pub planned: Option<DateTime<Utc>>,
    pub sent: Option<DateTime<Utc>>,
    pub eta: Option<DateTime<Utc>>,
    pub retries: u32,
    pub delivered: Option<DateTime<Utc>>,
    /// Waited for a slot after delivery, and for the rate limit after that.
    pub prefetch: Duration,
    pub rate_limit: Duration,
}

/// Reads a timestamp header (ms since the epoch).
pub fn stamp(headers: &Map<String, Value>, name: &str) -> Option<DateTime<Utc>> {
    headers
        .get(name)
        .and_then(Value::as_i64)
        .and_then(DateTime::from_timestamp_millis)
}

fn between(from: DateTime<Utc>, to: DateTime<Utc>) -> Duration {
    (to - from).to_std().unwrap_or(Duration::ZERO)
}

impl Timeline {
    /// The phases that are known, each with its time.
    pub fn phases(&self) -> Vec<(&'static str, Duration)> {
        let mut out = Vec::with_capacity(5);
        if let (Some(planned), Some(sent)) = (self.planned, self.sent) {
            out.push((phase::OUTBOX, between(planned, sent)));
        }
        if let (Some(sent), Some(delivered)) = (self.sent, self.delivered) {
            let held_until = match self.eta {
                Some(eta) if eta > sent => {
                    let hold = if self.retries > 0 {
                        phase::RETRY_BACKOFF
                    } else {
                        phase::ETA
                    };
                    out.push((hold, between(sent, eta.min(delivered))));
                    eta
                }
                _ => sent,
            };
            out.push((phase::BROKER, between(held_until, delivered)));
        }
        out.push((phase::PREFETCH, self.prefetch));
        out.push((phase::RATE_LIMIT, self.rate_limit));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp_millis(1_700_000_000_000 + ms)
    }

    #[test]
    fn a_relayed_task_splits_into_outbox_broker_prefetch_and_rate_limit() {
        let t = Timeline {
            planned: at(0),
            sent: at(40),
            delivered: at(45),
            prefetch: Duration::from_millis(100),
            rate_limit: Duration::from_millis(7),
            ..Timeline::default()
        };
        assert_eq!(
            t.phases(),
            vec![
                (phase::OUTBOX, Duration::from_millis(40)),
                (phase::BROKER, Duration::from_millis(5)),
                (phase::PREFETCH, Duration::from_millis(100)),
                (phase::RATE_LIMIT, Duration::from_millis(7)),
            ]
        );
    }

    #[test]
    fn a_retry_is_held_for_its_backoff_then_waits_in_the_broker() {
        let t = Timeline {
            sent: at(0),
            eta: at(2_000),
            retries: 1,
            delivered: at(2_300),
            ..Timeline::default()
        };
        assert_eq!(
            t.phases()[0],
            (phase::RETRY_BACKOFF, Duration::from_millis(2_000))
        );
        assert_eq!(t.phases()[1], (phase::BROKER, Duration::from_millis(300)));
        let countdown = Timeline { retries: 0, ..t };
        assert_eq!(countdown.phases()[0].0, phase::ETA);
    }

    #[test]
    fn a_foreign_message_has_only_the_phases_seen_here_and_clock_skew_counts_zero() {
        let foreign = Timeline::default();
        let names: Vec<_> = foreign.phases().into_iter().map(|(p, _)| p).collect();
        assert_eq!(names, vec![phase::PREFETCH, phase::RATE_LIMIT]);
        let skewed = Timeline {
            sent: at(50),
            delivered: at(10),
            ..Timeline::default()
        };
        assert_eq!(skewed.phases()[0], (phase::BROKER, Duration::ZERO));
    }
}
