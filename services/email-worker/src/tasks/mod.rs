//! The tasks this worker runs, registered with their options.

pub mod health;
pub mod invoice_email;
pub mod order_confirmation;
pub mod shipment;

use std::sync::Arc;

use shopfds_broker::Registry;
use shopfds_documents::Storage;
use shopfds_store::Store;

use crate::mail::Mailer;
use crate::partner::Partner;

/// Registers every task of this worker with its dependencies; `worker` is its node name.
pub fn register(
    registry: &mut Registry,
    mailer: Arc<Mailer>,
    partner: Partner,
    storage: Option<Storage>,
    store: Store,
    worker: &str,
) {
    registry.task(order_confirmation::SendOrderConfirmation {
        mailer: mailer.clone(),
        store: store.clone(),
    });
    registry.task(invoice_email::SendInvoice {
        mailer: mailer.clone(),
        store: store.clone(),
        storage,
    });
    registry.task(shipment::RegisterShipment {
        partner: partner.clone(),
        store: store.clone(),
    });
    registry.task(health::HealthCheckTask {
        store,
        mailer,
        partner,
        worker: worker.to_owned(),
    });
}

/// What a mail task answers when its once-only record says the mail went out before: the first
/// send's result, its `status` made `already_sent`.
fn already_sent(first: &serde_json::Value) -> serde_json::Value {
    let mut result = first.clone();
    if let Some(obj) = result.as_object_mut() {
        obj.insert("status".to_owned(), serde_json::json!("already_sent"));
    }
    result
}
