//! The tasks this worker runs, registered with their options.

pub mod order_confirmation;

use std::sync::Arc;

use shopfds_broker::Registry;

use crate::mail::Mailer;

pub fn register(registry: &mut Registry, mailer: Arc<Mailer>) {
    order_confirmation::register(registry, mailer);
}
