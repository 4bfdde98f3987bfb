//! `register_shipment(order_id)`: the order's shipment booked with the shipping partner once, its
//! tracking number kept on the order.
//!
//! Once per order: an order that already has a tracking number is not booked again, and the
//! partner call carries `Idempotency-Key: shipment-<order id>`, so a retry after a call whose
//! answer was lost books nothing twice. A blocked order is not shipped. The partner's temporary
//! failures (5xx, 429 after its `Retry-After`, timeouts) spend this task's retries; its refusals
//! (other 4xx) dead-letter the message with the partner's answer (see [`crate::partner`]).

use std::time::Duration;

use serde_json::{Value, json};
use shopfds_broker::{RetryPolicy, Task, TaskContext, TaskError, TaskOptions};
use shopfds_protocol::payloads::OrderTask;
use shopfds_protocol::tasks::REGISTER_SHIPMENT;
use shopfds_results::database_error as database;
use shopfds_store::Store;

use crate::partner::{Partner, PartnerError};

/// Retried 5 times with exponential backoff from 2 s (up to 10 min) and jitter.
pub fn options() -> TaskOptions {
    TaskOptions {
        max_retries: 5,
        retry: RetryPolicy::Exponential {
            base: Duration::from_secs(2),
            max: Duration::from_secs(600),
            jitter: true,
        },
        ..TaskOptions::default()
    }
}

pub struct RegisterShipment {
    pub partner: Partner,
    pub store: Store,
}

impl Task for RegisterShipment {
    const NAME: &'static str = REGISTER_SHIPMENT;
    type Args = OrderTask;

    fn options(&self) -> TaskOptions {
        options()
    }

    async fn run(&self, args: OrderTask, ctx: TaskContext) -> Result<Value, TaskError> {
        run(&self.store, &self.partner, args, &ctx).await
    }
}

pub async fn run(
    store: &Store,
    partner: &Partner,
    OrderTask { order_id }: OrderTask,
    ctx: &TaskContext,
) -> Result<Value, TaskError> {
    let orders = store.orders();
    let order = orders
        .get(order_id)
        .await
        .map_err(database)?
        .ok_or_else(|| TaskError::permanent(format!("order {order_id} not found")))?;
    if let Some(tracking) = &order.tracking_number {
        tracing::info!(%order_id, "shipment already registered; not booking again");
        return Ok(json!({"status": "already_registered", "tracking_number": tracking}));
    }
    if order.status == "blocked" {
        tracing::info!(%order_id, "order blocked; no shipment registered");
        return Ok(
            json!({"status": "not_registered", "reason": "order blocked by fraud detection"}),
        );
    }
    // The booking and its record are one span: a time limit or the end of the shutdown grace
    // never falls between the partner's answer and the tracking number being kept.
    let shipment = ctx
        .effect(async {
            let shipment = partner.register(&order).await.map_err(|e| match e {
                PartnerError::Retry { message, after } => TaskError::Transient {
                    message,
                    countdown: after,
                },
                PartnerError::Refused(reason) => TaskError::permanent(reason),
            })?;
            orders
                .set_tracking_number(order_id, &shipment.tracking_number)
                .await
                .map_err(database)?;
            Ok::<_, TaskError>(shipment)
        })
        .await?;
    tracing::info!(%order_id, tracking_number = %shipment.tracking_number, "shipment registered");
    Ok(json!({
        "status": "registered",
        "tracking_number": shipment.tracking_number,
        "carrier": shipment.carrier,
    }))
}
