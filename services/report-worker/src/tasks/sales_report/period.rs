//! The days a sales report covers, in the shop's time zone (Asia/Seoul): checked before any
//! work (a start after the end, or more than `MAX_REPORT_DAYS` days, is refused for good), and
//! "yesterday" for the daily report.

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Asia::Seoul;
use serde_json::{Value, json};
use shopfds_broker::TaskError;
use shopfds_protocol::payloads::GenerateSalesReport;

/// The time zone whose calendar days a report counts (the IANA name PostgreSQL is given).
pub const TIME_ZONE: &str = "Asia/Seoul";

/// A checked period: `start` to `end`, both included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub start: NaiveDate,
    pub end: NaiveDate,
    /// Days covered, at least 1.
    pub days: i64,
}

impl Period {
    /// The period of `args`, or the permanent error naming the argument at fault.
    pub fn of(args: &GenerateSalesReport) -> Result<Period, TaskError> {
        let days = args.days().map_err(TaskError::permanent)?;
        Ok(Period {
            start: args.start_date,
            end: args.end_date,
            days,
        })
    }

    /// Every day of the period, in order.
    pub fn each_day(&self) -> impl Iterator<Item = NaiveDate> + '_ {
        self.start.iter_days().take_while(|day| *day <= self.end)
    }

    /// `2026-11-01 ~ 2026-11-07`, or the one day.
    pub fn label(&self) -> String {
        if self.start == self.end {
            self.start.to_string()
        } else {
            format!("{} ~ {}", self.start, self.end)
        }
    }

    /// The result's `period`.
    pub fn json(&self) -> Value {
        json!({
            "start_date": self.start,
            "end_date": self.end,
            "days": self.days,
            "time_zone": TIME_ZONE,
        })
    }
}

/// The day before `now`'s day in Seoul: what the daily report covers.
pub fn yesterday(now: DateTime<Utc>) -> Result<NaiveDate, TaskError> {
    now.with_timezone(&Seoul)
        .date_naive()
        .pred_opt()
        .ok_or_else(|| TaskError::permanent(format!("no day before {now}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn day(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn yesterday_is_counted_in_seoul_not_in_utc() {
        // 14:59 UTC is 23:59 in Seoul: still the 30th there.
        assert_eq!(
            yesterday(at("2026-11-30T14:59:59Z")).unwrap(),
            day("2026-11-29")
        );
        // 15:00 UTC is midnight in Seoul: the 1st has begun, yesterday is the 30th.
        assert_eq!(
            yesterday(at("2026-11-30T15:00:00Z")).unwrap(),
            day("2026-11-30")
        );
        // Just after midnight UTC it is 09:00 in Seoul, the same day.
        assert_eq!(
            yesterday(at("2026-12-01T00:00:01Z")).unwrap(),
            day("2026-11-30")
        );
        assert_eq!(
            yesterday(at("2026-11-30T23:59:59Z")).unwrap(),
            day("2026-11-30")
        );
        // Across a year and a leap day.
        assert_eq!(
            yesterday(at("2026-12-31T15:00:00Z")).unwrap(),
            day("2026-12-31")
        );
        assert_eq!(
            yesterday(at("2028-02-29T16:00:00Z")).unwrap(),
            day("2028-02-29")
        );
        assert_eq!(
            yesterday(at("2028-02-29T14:00:00Z")).unwrap(),
            day("2028-02-28")
        );
    }

    #[test]
    fn the_zone_given_to_postgresql_is_the_one_counted_here() {
        assert_eq!(Seoul.name(), TIME_ZONE);
    }

    #[test]
    fn a_backwards_or_overlong_period_is_refused_for_good() {
        let args = |start: &str, end: &str| GenerateSalesReport {
            start_date: day(start),
            end_date: day(end),
            user_id: None,
        };
        let period = Period::of(&args("2026-11-01", "2026-11-07")).unwrap();
        assert_eq!(period.days, 7);
        assert_eq!(period.each_day().count(), 7);
        assert_eq!(period.label(), "2026-11-01 ~ 2026-11-07");
        for (start, end, field) in [
            ("2026-11-21", "2026-11-01", "start_date"),
            ("2025-01-01", "2026-12-31", "end_date"),
        ] {
            match Period::of(&args(start, end)) {
                Err(TaskError::Permanent { message }) => {
                    assert!(message.contains(field), "{message}")
                }
                other => panic!("{start}..{end}: {other:?}"),
            }
        }
    }
}
