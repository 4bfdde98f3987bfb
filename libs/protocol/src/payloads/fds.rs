//! Arguments of the fraud-detection tasks on queue `fds`.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::message::TaskArgs;

/// `evaluate_transaction(order_id)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvaluateTransaction {
    pub order_id: Uuid,
}

impl TaskArgs for EvaluateTransaction {
    const PARAMS: &'static [&'static str] = &["order_id"];
    const REQUIRED: &'static [&'static str] = &["order_id"];
}

/// `batch_fds_evaluation(transaction_ids=None, date=None)`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchFdsEvaluation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_ids: Option<Vec<Uuid>>,
    /// `YYYY-MM-DD`, a day in Asia/Seoul.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date: Option<NaiveDate>,
}

impl TaskArgs for BatchFdsEvaluation {
    const PARAMS: &'static [&'static str] = &["transaction_ids", "date"];
    const REQUIRED: &'static [&'static str] = &[];
}

/// `update_threat_intelligence(url=None)`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateThreatIntelligence {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

impl TaskArgs for UpdateThreatIntelligence {
    const PARAMS: &'static [&'static str] = &["url"];
    const REQUIRED: &'static [&'static str] = &[];
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::payloads::test_support::{bind, culprit, round_trips};

    const ORDER: &str = "5f0c6a52-7c0e-4d8a-9d0b-3a1c2b4e5f60";

    #[test]
    fn evaluate_transaction_needs_an_order_id() {
        let args: EvaluateTransaction = bind(json!([ORDER]), json!({})).unwrap();
        assert_eq!(args.order_id.to_string(), ORDER);
        round_trips(&args);
        assert_eq!(
            culprit::<EvaluateTransaction>(json!([]), json!({})),
            "order_id"
        );
        // The old Python stub's parameter name is refused, not ignored.
        assert_eq!(
            culprit::<EvaluateTransaction>(json!([]), json!({"transaction_id": ORDER})),
            "transaction_id"
        );
    }

    #[test]
    fn batch_fds_evaluation_takes_a_chunk_a_day_or_nothing() {
        let planner: BatchFdsEvaluation = bind(json!([]), json!({})).unwrap();
        assert_eq!(planner, BatchFdsEvaluation::default());
        assert!(planner.to_kwargs().is_empty());

        let chunk: BatchFdsEvaluation = bind(json!([[ORDER]]), json!({})).unwrap();
        assert_eq!(chunk.transaction_ids.as_deref().map(<[Uuid]>::len), Some(1));
        round_trips(&chunk);

        let day: BatchFdsEvaluation = bind(json!([null, "2025-06-01"]), json!({})).unwrap();
        assert_eq!(day.date, NaiveDate::from_ymd_opt(2025, 6, 1));
        round_trips(&day);

        assert_eq!(
            culprit::<BatchFdsEvaluation>(json!([]), json!({"date": "June 1st"})),
            "date"
        );
        assert_eq!(
            culprit::<BatchFdsEvaluation>(json!([["not-a-uuid"]]), json!({})),
            "transaction_ids[0]"
        );
    }

    #[test]
    fn update_threat_intelligence_takes_an_optional_url() {
        let none: UpdateThreatIntelligence = bind(json!([]), json!({})).unwrap();
        assert_eq!(none.url, None);
        let url: UpdateThreatIntelligence =
            bind(json!(["https://feeds.example/intel.json"]), json!({})).unwrap();
        assert_eq!(url.url.as_deref(), Some("https://feeds.example/intel.json"));
        round_trips(&url);
        assert_eq!(
            culprit::<UpdateThreatIntelligence>(json!([]), json!({"url": 1})),
            "url"
        );
    }
}
