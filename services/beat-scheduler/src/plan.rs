//! The scheduling decision, without I/O or a clock of its own: given the schedules, the latest
//! slot each has published and the time now, which slots are due. Every replica runs it each
//! tick; the database lets one replica's claim of a slot through (see `shopfds_store::beat`).
//!
//! A schedule that has published before continues from its latest slot. The runs between that
//! slot and now are due, except after downtime: a slot planned more than [`GRACE`] ago was
//! missed, and the schedule's policy decides: `skip` publishes none of the missed ones,
//! `latest` the most recent of them, once. A schedule that never published starts now (no
//! backlog from before it existed).

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;

use crate::schedule::{Missed, Schedule};

/// A slot planned at most this long ago is on time (a tick that came late, a replica taking
/// over); older ones were missed.
pub const GRACE: Duration = Duration::seconds(30);

/// The most slots one schedule publishes in one tick (an interval of a second after a long
/// stop with a `skip` policy still yields only those within the grace).
const MOST_PER_TICK: usize = 64;

/// One slot to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    pub schedule: String,
    pub planned_at: DateTime<Utc>,
}

/// The slots due at `now`.
pub fn due(
    schedules: &[Schedule],
    last: &HashMap<String, DateTime<Utc>>,
    now: DateTime<Utc>,
    tz: Tz,
) -> Vec<Due> {
    let mut out = Vec::new();
    for schedule in schedules.iter().filter(|s| s.enabled) {
        let Some(from) = last.get(&schedule.name).copied() else {
            // Never published: the first slot is the one at `now`, if there is one exactly now.
            if let Some(at) = schedule.next_after(now - Duration::seconds(1), tz)
                && at <= now
            {
                out.push(Due {
                    schedule: schedule.name.clone(),
                    planned_at: at,
                });
            }
            continue;
        };
        let times = schedule.times_between(from, now, tz, usize::MAX);
        let (missed, on_time): (Vec<_>, Vec<_>) = times.into_iter().partition(|t| now - *t > GRACE);
        let mut chosen: Vec<DateTime<Utc>> = Vec::new();
        if schedule.missed == Missed::Latest
            && on_time.is_empty()
            && let Some(latest) = missed.last()
        {
            chosen.push(*latest);
        }
        chosen.extend(on_time.into_iter().take(MOST_PER_TICK));
        out.extend(chosen.into_iter().map(|planned_at| Due {
            schedule: schedule.name.clone(),
            planned_at,
        }));
    }
    out
}

#[cfg(test)]
mod tests {
    use chrono_tz::Asia::Seoul;
    use serde_json::Map;

    use super::*;
    use crate::schedule::{When, parse_cron};

    fn schedule(name: &str, when: When, missed: Missed) -> Schedule {
        Schedule {
            name: name.to_owned(),
            task: "health_check".to_owned(),
            when,
            kwargs: Map::new(),
            queue: "default".to_owned(),
            missed,
            enabled: true,
        }
    }

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn a_new_schedule_starts_now_and_then_continues_slot_by_slot() {
        let every = schedule("health", When::Every(10), Missed::Skip);
        let mut last = HashMap::new();
        // Not exactly on a slot: nothing yet, and no backlog.
        assert!(
            due(
                std::slice::from_ref(&every),
                &last,
                utc("2026-12-05T00:00:05Z"),
                Seoul
            )
            .is_empty()
        );
        // On a slot.
        let first = due(
            std::slice::from_ref(&every),
            &last,
            utc("2026-12-05T00:00:10Z"),
            Seoul,
        );
        assert_eq!(first[0].planned_at, utc("2026-12-05T00:00:10Z"));
        last.insert("health".to_owned(), first[0].planned_at);
        // A tick 25 s later: the two slots since.
        let next = due(&[every], &last, utc("2026-12-05T00:00:35Z"), Seoul);
        let times: Vec<_> = next.iter().map(|d| d.planned_at).collect();
        assert_eq!(
            times,
            [utc("2026-12-05T00:00:20Z"), utc("2026-12-05T00:00:30Z")]
        );
    }

    #[test]
    fn after_downtime_skip_publishes_nothing_missed_and_latest_the_last_once() {
        let nightly = |missed| {
            schedule(
                "nightly",
                When::Cron(Box::new(parse_cron("0 0 * * *").unwrap())),
                missed,
            )
        };
        let mut last = HashMap::new();
        // Published 2026-12-01 00:00 KST; down until 2026-12-05 12:00 KST.
        last.insert("nightly".to_owned(), utc("2026-11-30T15:00:00Z"));
        let now = utc("2026-12-05T03:00:00Z");
        assert!(due(&[nightly(Missed::Skip)], &last, now, Seoul).is_empty());
        let latest = due(&[nightly(Missed::Latest)], &last, now, Seoul);
        assert_eq!(latest.len(), 1);
        assert_eq!(latest[0].planned_at, utc("2026-12-04T15:00:00Z")); // 12-05 00:00 KST
        // Once it is published, the next tick has nothing more.
        last.insert("nightly".to_owned(), latest[0].planned_at);
        assert!(due(&[nightly(Missed::Latest)], &last, now, Seoul).is_empty());
    }

    #[test]
    fn a_late_tick_within_the_grace_still_publishes_on_both_policies() {
        let every = schedule("health", When::Every(10), Missed::Skip);
        let mut last = HashMap::new();
        last.insert("health".to_owned(), utc("2026-12-05T00:00:00Z"));
        let times: Vec<_> = due(&[every], &last, utc("2026-12-05T00:00:25Z"), Seoul)
            .iter()
            .map(|d| d.planned_at)
            .collect();
        assert_eq!(
            times,
            [utc("2026-12-05T00:00:10Z"), utc("2026-12-05T00:00:20Z")]
        );
    }

    #[test]
    fn a_paused_schedule_publishes_nothing() {
        let mut every = schedule("health", When::Every(10), Missed::Latest);
        every.enabled = false;
        let mut last = HashMap::new();
        last.insert("health".to_owned(), utc("2026-12-05T00:00:00Z"));
        assert!(due(&[every], &last, utc("2026-12-05T01:00:00Z"), Seoul).is_empty());
    }
}
