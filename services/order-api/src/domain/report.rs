//! `POST /v1/reports/sales` body (`{start_date, end_date, user_id?}`), checked into the task's
//! arguments: dates as `YYYY-MM-DD` calendar days, the period rule the worker applies too (a
//! start after the end, or more than `MAX_REPORT_DAYS` days, is a 422 naming the field), and
//! `user_id` one line of at most 254 characters (blank is absent).

use chrono::NaiveDate;
use serde::{Deserialize, Deserializer};
use shopfds_protocol::payloads::GenerateSalesReport;

use super::text::{Line, blank_is_none};
use crate::error::ApiError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SalesReportRequest {
    start_date: Day,
    end_date: Day,
    #[serde(default, deserialize_with = "blank_is_none")]
    user_id: Option<Line<254>>,
}

/// A calendar day written `YYYY-MM-DD`.
#[derive(Debug, Clone, Copy)]
struct Day(NaiveDate);

impl<'de> Deserialize<'de> for Day {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Day, D::Error> {
        let raw = String::deserialize(d)?;
        let text = raw.trim();
        // `%Y` alone would take five-digit and signed years.
        let well_formed = text.len() == 10 && text.chars().all(|c| c.is_ascii_digit() || c == '-');
        well_formed
            .then(|| NaiveDate::parse_from_str(text, "%Y-%m-%d").ok())
            .flatten()
            .map(Day)
            .ok_or_else(|| {
                let shown: String = text.chars().take(40).collect();
                serde::de::Error::custom(format!(
                    "must be a calendar date written YYYY-MM-DD, not {shown:?}"
                ))
            })
    }
}

/// The checked body: the arguments of `generate_sales_report`.
pub fn parse_sales_report(body: &[u8]) -> Result<GenerateSalesReport, ApiError> {
    let request: SalesReportRequest = super::json::from_body(body)?;
    let args = GenerateSalesReport {
        start_date: request.start_date.0,
        end_date: request.end_date.0,
        user_id: request.user_id.map(|u| u.as_str().to_owned()),
    };
    args.days()
        .map_err(|e| ApiError::validation(e.field, e.message))?;
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(body: &str) -> String {
        match parse_sales_report(body.as_bytes()) {
            Err(ApiError::Validation { field, .. }) => field,
            other => panic!("{body}: {other:?}"),
        }
    }

    #[test]
    fn a_good_body_becomes_the_task_arguments() {
        let args = parse_sales_report(
            br#"{"start_date": "2026-11-01", "end_date": "2026-11-07", "user_id": " u-1 "}"#,
        )
        .unwrap();
        assert_eq!(args.start_date.to_string(), "2026-11-01");
        assert_eq!(args.end_date.to_string(), "2026-11-07");
        assert_eq!(args.user_id.as_deref(), Some("u-1"));
        let blank = parse_sales_report(
            br#"{"start_date": "2026-11-01", "end_date": "2026-11-01", "user_id": ""}"#,
        )
        .unwrap();
        assert_eq!(blank.user_id, None);
    }

    #[test]
    fn every_refusal_names_its_field() {
        for (body, field) in [
            (r#"{"end_date": "2026-11-07"}"#, "start_date"),
            (r#"{"start_date": "2026-11-01"}"#, "end_date"),
            (
                r#"{"start_date": "2026-11-31", "end_date": "2026-12-01"}"#,
                "start_date",
            ),
            (
                r#"{"start_date": "2026-11-01", "end_date": "07/11/2026"}"#,
                "end_date",
            ),
            (
                r#"{"start_date": "+2026-11-01", "end_date": "2026-11-07"}"#,
                "start_date",
            ),
            (
                r#"{"start_date": 20261101, "end_date": "2026-11-07"}"#,
                "start_date",
            ),
            (
                r#"{"start_date": "2026-11-08", "end_date": "2026-11-07"}"#,
                "start_date",
            ),
            (
                r#"{"start_date": "2025-01-01", "end_date": "2026-11-07"}"#,
                "end_date",
            ),
            (
                r#"{"start_date": "2026-11-01", "end_date": "2026-11-07", "user": "x"}"#,
                "user",
            ),
            (
                r#"{"start_date": "2026-11-01", "end_date": "2026-11-07", "user_id": 7}"#,
                "user_id",
            ),
            ("[]", "body"),
            ("{", "body"),
        ] {
            assert_eq!(field_of(body), field, "{body}");
        }
    }
}
