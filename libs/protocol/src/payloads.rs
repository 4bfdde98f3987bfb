//! Typed keyword arguments of the tasks, so a handler never reads a JSON map by hand.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::message::TaskArgs;

/// `send_order_confirmation_email(order_id)`, `generate_invoice_pdf(order_id)`,
/// `send_invoice_email(order_id)`, `register_shipment(order_id)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderTask {
    pub order_id: Uuid,
}

impl TaskArgs for OrderTask {
    const PARAMS: &'static [&'static str] = &["order_id"];
}
