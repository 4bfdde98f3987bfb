//! Arguments of the report tasks on queue `reports`.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::message::TaskArgs;

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
