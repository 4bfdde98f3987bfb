//! The tasks this worker runs, registered with their options.

pub mod order_confirmation;
pub mod shipment;

use std::sync::Arc;

use shopfds_broker::Registry;
use shopfds_store::Store;

use crate::mail::Mailer;
use crate::partner::Partner;

/// Registers every task of this worker with its dependencies.
pub fn register(registry: &mut Registry, mailer: Arc<Mailer>, partner: Partner, store: Store) {
    registry.task(order_confirmation::SendOrderConfirmation {
        mailer,
        store: store.clone(),
    });
    registry.task(shipment::RegisterShipment { partner, store });
}
