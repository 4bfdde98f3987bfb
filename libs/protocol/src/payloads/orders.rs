//! Arguments of the order tasks: the confirmation email, the invoice PDF and its email, the
//! shipment registration (the per-order canvas, planned by order-api's `domain::plan`).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::message::TaskArgs;

/// `send_order_confirmation_email(order_id)`, `generate_invoice_pdf(order_id)`,
/// `register_shipment(order_id)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderTask {
    pub order_id: Uuid,
}

impl TaskArgs for OrderTask {
    const PARAMS: &'static [&'static str] = &["order_id"];
    const REQUIRED: &'static [&'static str] = &["order_id"];
}

/// `send_invoice_email(invoice=None, *, order_id)`.
///
/// In the order canvas it is the link after `generate_invoice_pdf` in a chain, and Celery passes
/// that task's result as its first positional argument: `invoice`. Sent on its own it has only
/// `order_id` (a keyword argument: Python allows no required parameter after `invoice=None`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendInvoiceEmail {
    /// `generate_invoice_pdf`'s result, whatever JSON it is; `None` when sent on its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invoice: Option<Value>,
    pub order_id: Uuid,
}

impl TaskArgs for SendInvoiceEmail {
    const PARAMS: &'static [&'static str] = &["invoice", "order_id"];
    const REQUIRED: &'static [&'static str] = &["order_id"];
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::payloads::test_support::{bind, culprit, round_trips};

    const ORDER: &str = "5f0c6a52-7c0e-4d8a-9d0b-3a1c2b4e5f60";

    #[test]
    fn order_task_binds_by_keyword_and_by_position() {
        let by_keyword: OrderTask = bind(json!([]), json!({"order_id": ORDER})).unwrap();
        let by_position: OrderTask = bind(json!([ORDER]), json!({})).unwrap();
        assert_eq!(by_keyword, by_position);
        assert_eq!(by_keyword.order_id.to_string(), ORDER);
        assert_eq!(culprit::<OrderTask>(json!([]), json!({})), "order_id");
        round_trips(&by_keyword);
    }

    #[test]
    fn send_invoice_email_takes_the_pdf_result_of_its_chain_first() {
        let result = json!({"order_id": ORDER, "invoice": "invoices/o.pdf"});
        let chained: SendInvoiceEmail =
            bind(json!([result.clone()]), json!({"order_id": ORDER})).unwrap();
        assert_eq!(chained.invoice, Some(result));
        assert_eq!(chained.order_id.to_string(), ORDER);
        round_trips(&chained);

        let alone: SendInvoiceEmail = bind(json!([]), json!({"order_id": ORDER})).unwrap();
        assert_eq!(alone.invoice, None);
        assert_eq!(
            alone.to_kwargs(),
            *json!({"order_id": ORDER}).as_object().unwrap()
        );
        let both_positional: SendInvoiceEmail = bind(json!([null, ORDER]), json!({})).unwrap();
        assert_eq!(both_positional, alone);

        // A lone positional order id is the invoice, as in Python; then order_id is missing.
        assert_eq!(
            culprit::<SendInvoiceEmail>(json!([ORDER]), json!({})),
            "order_id"
        );
        assert_eq!(
            culprit::<SendInvoiceEmail>(json!([]), json!({"order_id": ORDER, "pdf": "x"})),
            "pdf"
        );
    }
}
