//! A schedule: which task, with which keyword arguments, when. "When" is a crontab expression
//! (five fields: minute, hour, day of month, month, day of week, with `*/5`, `1-5`, lists and
//! names, read by the `croner` crate) evaluated in the scheduler's time zone, or a fixed
//! interval in seconds counted from the Unix epoch (so every replica agrees on the slots).
//!
//! Cron times are wall-clock times of the zone: on a day a zone springs forward, a time in the
//! skipped hour runs once, at the moment the clock jumps (02:30 → 03:00); on a day it falls back,
//! a time that happens twice runs once (the first), as croner evaluates them. Asia/Seoul has no
//! such days.

use std::str::FromStr;

use chrono::{DateTime, Duration, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use serde_json::{Map, Value};
use shopfds_store::ScheduleRow;

/// What to do with runs missed while no scheduler was up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missed {
    /// Publish none of them: the schedule resumes at its next time.
    Skip,
    /// Publish the most recent of them, once.
    Latest,
}

impl FromStr for Missed {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "skip" => Ok(Missed::Skip),
            "latest" => Ok(Missed::Latest),
            other => Err(format!("missed must be skip or latest, not {other:?}")),
        }
    }
}

impl Missed {
    pub fn as_str(self) -> &'static str {
        match self {
            Missed::Skip => "skip",
            Missed::Latest => "latest",
        }
    }
}

#[derive(Debug, Clone)]
pub enum When {
    Cron(Box<Cron>),
    Every(u32),
}

/// A schedule, checked: its expression parses, its interval is positive.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub name: String,
    pub task: String,
    pub when: When,
    pub kwargs: Map<String, Value>,
    pub queue: String,
    pub missed: Missed,
    pub enabled: bool,
}

impl Schedule {
    /// A stored schedule, checked; the error names the schedule and what is wrong.
    pub fn from_row(row: &ScheduleRow) -> Result<Schedule, String> {
        let fail = |what: String| format!("schedule {:?}: {what}", row.name);
        let when = match (&row.cron, row.every_secs) {
            (Some(expr), None) => When::Cron(Box::new(parse_cron(expr).map_err(fail)?)),
            (None, Some(secs)) => When::Every(
                u32::try_from(secs)
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| fail(format!("every_secs must be positive, not {secs}")))?,
            ),
            _ => return Err(fail("needs exactly one of cron and every_secs".to_owned())),
        };
        let kwargs = match &row.kwargs {
            Value::Object(map) => map.clone(),
            Value::Null => Map::new(),
            other => return Err(fail(format!("kwargs must be a JSON object, not {other}"))),
        };
        Ok(Schedule {
            name: row.name.clone(),
            task: row.task.clone(),
            when,
            kwargs,
            queue: row.queue.clone(),
            missed: row.missed.parse().map_err(fail)?,
            enabled: row.enabled,
        })
    }

    /// The planned times after `after` up to and including `until`, oldest first, at most
    /// `limit` of them.
    pub fn times_between(
        &self,
        after: DateTime<Utc>,
        until: DateTime<Utc>,
        tz: Tz,
        limit: usize,
    ) -> Vec<DateTime<Utc>> {
        let mut out = Vec::new();
        let mut from = after;
        while out.len() < limit {
            match self.next_after(from, tz) {
                Some(next) if next <= until => {
                    out.push(next);
                    from = next;
                }
                _ => break,
            }
        }
        out
    }

    /// The first planned time after `after`.
    pub fn next_after(&self, after: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        match &self.when {
            When::Every(secs) => {
                let secs = i64::from(*secs);
                let next = (after.timestamp().div_euclid(secs) + 1).checked_mul(secs)?;
                Utc.timestamp_opt(next, 0).single()
            }
            When::Cron(cron) => cron
                .find_next_occurrence(&after.with_timezone(&tz), false)
                .ok()
                .map(|t| t.with_timezone(&Utc)),
        }
    }

    /// The next `n` planned times after `after`, in the zone (for `beat-scheduler list`).
    pub fn next_runs(&self, after: DateTime<Utc>, tz: Tz, n: usize) -> Vec<DateTime<Tz>> {
        let far = after + Duration::days(366 * 5);
        self.times_between(after, far, tz, n)
            .into_iter()
            .map(|t| t.with_timezone(&tz))
            .collect()
    }

    /// `cron "0 0 * * *"` or `every 10 s`.
    pub fn describe_when(&self) -> String {
        match &self.when {
            When::Cron(cron) => format!("cron {:?}", cron.pattern.to_string()),
            When::Every(secs) => format!("every {secs} s"),
        }
    }
}

/// A five-field crontab expression; seconds and years are refused (Celery's `crontab` has
/// neither).
pub fn parse_cron(expr: &str) -> Result<Cron, String> {
    let fields = expr.split_whitespace().count();
    if fields != 5 {
        return Err(format!(
            "cron {expr:?} has {fields} fields; five are expected (minute hour day-of-month month day-of-week)"
        ));
    }
    Cron::from_str(expr).map_err(|e| format!("cron {expr:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use chrono_tz::America::New_York;
    use chrono_tz::Asia::Seoul;

    use super::*;

    fn cron(expr: &str) -> Schedule {
        Schedule {
            name: "t".to_owned(),
            task: "health_check".to_owned(),
            when: When::Cron(Box::new(parse_cron(expr).unwrap())),
            kwargs: Map::new(),
            queue: "default".to_owned(),
            missed: Missed::Skip,
            enabled: true,
        }
    }

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn local(times: &[DateTime<Tz>]) -> Vec<String> {
        times
            .iter()
            .map(|t| t.format("%Y-%m-%d %H:%M %Z").to_string())
            .collect()
    }

    #[test]
    fn the_seed_schedules_run_at_their_times_in_seoul() {
        let now = utc("2026-12-05T15:20:00Z"); // Sunday 00:20 in Seoul
        assert_eq!(
            local(&cron("0 0 * * *").next_runs(now, Seoul, 2)),
            ["2026-12-07 00:00 KST", "2026-12-08 00:00 KST"]
        );
        assert_eq!(
            local(&cron("0 0 * * 0").next_runs(now, Seoul, 2)),
            ["2026-12-13 00:00 KST", "2026-12-20 00:00 KST"]
        );
        assert_eq!(
            local(&cron("30 * * * *").next_runs(now, Seoul, 2)),
            ["2026-12-06 00:30 KST", "2026-12-06 01:30 KST"]
        );
        assert_eq!(
            local(&cron("0 9 * * *").next_runs(now, Seoul, 1)),
            ["2026-12-06 09:00 KST"]
        );
    }

    #[test]
    fn steps_ranges_days_of_week_and_of_month() {
        let now = utc("2026-12-04T23:58:00Z"); // Saturday 08:58 in Seoul
        assert_eq!(
            local(&cron("*/5 9 * * *").next_runs(now, Seoul, 3)),
            [
                "2026-12-05 09:00 KST",
                "2026-12-05 09:05 KST",
                "2026-12-05 09:10 KST"
            ]
        );
        // Weekdays only: from Saturday to Monday.
        assert_eq!(
            local(&cron("0 9 * * 1-5").next_runs(now, Seoul, 2)),
            ["2026-12-07 09:00 KST", "2026-12-08 09:00 KST"]
        );
        assert_eq!(
            local(&cron("0 6 1,15 * *").next_runs(now, Seoul, 3)),
            [
                "2026-12-15 06:00 KST",
                "2027-01-01 06:00 KST",
                "2027-01-15 06:00 KST"
            ]
        );
    }

    #[test]
    fn daylight_saving_days_in_new_york() {
        // 2027-03-14: 02:00 EST jumps to 03:00 EDT, so 02:30 does not exist that day: it runs
        // once, when the clock jumps.
        let before = utc("2027-03-13T05:00:00Z"); // 00:00 EST on the 13th
        assert_eq!(
            local(&cron("30 2 * * *").next_runs(before, New_York, 3)),
            [
                "2027-03-13 02:30 EST",
                "2027-03-14 03:00 EDT",
                "2027-03-15 02:30 EDT"
            ]
        );
        // 09:00 is 14:00 UTC before the change and 13:00 UTC after.
        let nine = cron("0 9 * * *").times_between(
            utc("2027-03-13T00:00:00Z"),
            utc("2027-03-16T00:00:00Z"),
            New_York,
            10,
        );
        assert_eq!(
            nine,
            [
                utc("2027-03-13T14:00:00Z"),
                utc("2027-03-14T13:00:00Z"),
                utc("2027-03-15T13:00:00Z")
            ]
        );
        // 2027-11-07: 02:00 EDT falls back to 01:00 EST, so 01:30 happens twice; it runs once.
        let fall = cron("30 1 * * *").times_between(
            utc("2027-11-06T12:00:00Z"),
            utc("2027-11-08T12:00:00Z"),
            New_York,
            10,
        );
        assert_eq!(fall.len(), 2, "{fall:?}");
        assert_eq!(fall[0], utc("2027-11-07T05:30:00Z"));
        assert_eq!(fall[1], utc("2027-11-08T06:30:00Z"));
    }

    #[test]
    fn intervals_count_from_the_epoch() {
        let every = Schedule {
            when: When::Every(10),
            ..cron("* * * * *")
        };
        let times = every.times_between(
            utc("2026-12-05T00:00:03Z"),
            utc("2026-12-05T00:00:30Z"),
            Seoul,
            10,
        );
        assert_eq!(
            times,
            [
                utc("2026-12-05T00:00:10Z"),
                utc("2026-12-05T00:00:20Z"),
                utc("2026-12-05T00:00:30Z")
            ]
        );
    }

    #[test]
    fn bad_schedules_are_named() {
        let row = |cron: Option<&str>, every: Option<i32>| ScheduleRow {
            name: "nightly".to_owned(),
            task: "batch_fds_evaluation".to_owned(),
            cron: cron.map(str::to_owned),
            every_secs: every,
            kwargs: Value::Object(Map::new()),
            queue: "fds".to_owned(),
            missed: "skip".to_owned(),
            enabled: true,
            source: "file".to_owned(),
        };
        for (bad, expected) in [
            (row(Some("0 0 * *"), None), "five are expected"),
            (row(Some("0 0 * * * *"), None), "five are expected"),
            (row(Some("61 0 * * *"), None), "cron"),
            (row(None, Some(0)), "positive"),
            (row(None, None), "exactly one"),
            (row(Some("0 0 * * *"), Some(5)), "exactly one"),
        ] {
            let err = Schedule::from_row(&bad).unwrap_err();
            assert!(
                err.contains("\"nightly\"") && err.contains(expected),
                "{err}"
            );
        }
    }
}
