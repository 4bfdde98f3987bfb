//! Arguments of the report tasks on queue `reports`, and the rule for a report's period that
//! the producer (order-api's `POST /v1/reports/sales`) and the worker both apply.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::message::TaskArgs;

/// The longest period one sales report covers, in days (a leap year fits).
pub const MAX_REPORT_DAYS: i64 = 366;

/// Why a report's period is refused: the argument at fault and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ReportRangeError {
    /// `start_date` (after the end) or `end_date` (too far after the start).
    pub field: &'static str,
    pub message: String,
}

/// `generate_sales_report(start_date, end_date, user_id=None)`: the sales of the days from
/// `start_date` to `end_date`, both `YYYY-MM-DD`; `user_id` is whom the report is for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateSalesReport {
    pub start_date: NaiveDate,
    pub end_date: NaiveDate,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
}

impl TaskArgs for GenerateSalesReport {
    const PARAMS: &'static [&'static str] = &["start_date", "end_date", "user_id"];
    const REQUIRED: &'static [&'static str] = &["start_date", "end_date"];
}

impl GenerateSalesReport {
    /// The number of days covered (both ends included), or why the period is refused: a start
    /// after the end, or more than [`MAX_REPORT_DAYS`] days.
    pub fn days(&self) -> Result<i64, ReportRangeError> {
        if self.start_date > self.end_date {
            return Err(ReportRangeError {
                field: "start_date",
                message: format!(
                    "start_date {} is after end_date {}",
                    self.start_date, self.end_date
                ),
            });
        }
        let days = (self.end_date - self.start_date).num_days() + 1;
        if days > MAX_REPORT_DAYS {
            return Err(ReportRangeError {
                field: "end_date",
                message: format!(
                    "the period {} to {} has {days} days; a report covers at most \
                     {MAX_REPORT_DAYS}",
                    self.start_date, self.end_date
                ),
            });
        }
        Ok(days)
    }
}

/// `generate_daily_sales_report()`: yesterday's sales report (Asia/Seoul), for the scheduler;
/// takes no arguments.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateDailySalesReport {}

impl TaskArgs for GenerateDailySalesReport {
    const PARAMS: &'static [&'static str] = &[];
    const REQUIRED: &'static [&'static str] = &[];
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::payloads::test_support::{bind, culprit, round_trips};

    #[test]
    fn binds_a_python_call_positionally_and_by_keyword() {
        // A Python caller's `generate_sales_report.delay(start_date, end_date, user_id)`.
        let positional: GenerateSalesReport =
            bind(json!(["2026-11-01", "2026-11-21", "u-1"]), json!({})).unwrap();
        let keywords: GenerateSalesReport = bind(
            json!([]),
            json!({"start_date": "2026-11-01", "end_date": "2026-11-21", "user_id": "u-1"}),
        )
        .unwrap();
        assert_eq!(positional, keywords);
        assert_eq!(
            positional.start_date,
            NaiveDate::from_ymd_opt(2026, 11, 1).unwrap()
        );
        assert_eq!(
            positional.end_date,
            NaiveDate::from_ymd_opt(2026, 11, 21).unwrap()
        );
        assert_eq!(positional.user_id.as_deref(), Some("u-1"));
        round_trips(&positional);
        assert_eq!(
            positional.to_kwargs(),
            *json!({"start_date": "2026-11-01", "end_date": "2026-11-21", "user_id": "u-1"})
                .as_object()
                .unwrap()
        );

        let anonymous: GenerateSalesReport =
            bind(json!(["2026-11-01", "2026-11-21"]), json!({})).unwrap();
        assert_eq!(anonymous.user_id, None);
    }

    fn report(start: &str, end: &str) -> GenerateSalesReport {
        GenerateSalesReport {
            start_date: start.parse().unwrap(),
            end_date: end.parse().unwrap(),
            user_id: None,
        }
    }

    #[test]
    fn a_period_runs_forward_and_at_most_366_days() {
        assert_eq!(report("2026-11-01", "2026-11-01").days(), Ok(1));
        assert_eq!(report("2026-11-01", "2026-11-30").days(), Ok(30));
        assert_eq!(report("2024-01-01", "2024-12-31").days(), Ok(366));
        let backwards = report("2026-11-21", "2026-11-01").days().unwrap_err();
        assert_eq!(backwards.field, "start_date");
        assert!(backwards.message.contains("after"), "{backwards}");
        let long = report("2025-01-01", "2026-01-02").days().unwrap_err();
        assert_eq!(long.field, "end_date");
        assert!(long.message.contains("at most 366"), "{long}");
    }

    #[test]
    fn the_daily_report_takes_nothing() {
        let args: GenerateDailySalesReport = bind(json!([]), json!({})).unwrap();
        round_trips(&args);
        assert_eq!(
            culprit::<GenerateDailySalesReport>(json!([]), json!({"date": "2026-11-01"})),
            "date"
        );
    }

    #[test]
    fn names_a_missing_or_malformed_date() {
        assert_eq!(
            culprit::<GenerateSalesReport>(json!(["2026-11-01"]), json!({})),
            "end_date"
        );
        assert_eq!(
            culprit::<GenerateSalesReport>(json!(["2026-11-01", "21/11/2026"]), json!({})),
            "end_date"
        );
        assert_eq!(
            culprit::<GenerateSalesReport>(json!(["2026-02-30", "2026-03-01"]), json!({})),
            "start_date"
        );
        assert_eq!(
            culprit::<GenerateSalesReport>(
                json!(["2026-11-01", "2026-11-21"]),
                json!({"user_id": 7})
            ),
            "user_id"
        );
    }
}
