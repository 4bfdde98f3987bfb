//! `register_shipment(order_id)`: the order's shipment booked with the shipping partner once, its
//! tracking number kept on the order.
//!
//! Once per order: an order that already has a tracking number is not booked again, and the
//! partner call carries `Idempotency-Key: shipment-<order id>`, so a retry after a call whose
//! answer was lost books nothing twice. A blocked order is not shipped. The partner's temporary
//! failures (5xx, 429 after its `Retry-After`, timeouts) spend this task's retries; its refusals
//! (other 4xx) dead-letter the message with the partner's answer (see [`crate::partner`]). With
//! `SHIPPING_PARTNER_RATE_LIMIT`, every replica's calls together stay within that many per second
//! (the store's `rate_limits`): a task waits its turn before calling.

use std::time::Duration;

use serde_json::{Value, json};
use shopfds_broker::{RetryPolicy, Task, TaskContext, TaskError, TaskOptions};
use shopfds_protocol::payloads::OrderTask;
use shopfds_protocol::tasks::REGISTER_SHIPMENT;
use shopfds_results::database_error as database;
use shopfds_store::{Slot, Store};

use crate::partner::{Partner, PartnerError};

/// The name the partner's calls are counted under (`rate_limit_windows`).
const RATE_LIMIT: &str = "shipping-partner";

/// Longest a task waits in line for a slot before it gives the worker back and retries later.
const MOST_WAIT: Duration = Duration::from_secs(30);

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
    if let Some(per_second) = partner.rate_limit() {
        wait_for_slot(store, per_second).await?;
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

/// Waits for a slot of the partner's shared rate limit; after [`MOST_WAIT`] in line, a retry in
/// a second (the partner is that busy with this shop's other replicas).
async fn wait_for_slot(store: &Store, per_second: u32) -> Result<(), TaskError> {
    let limits = store.rate_limits();
    let deadline = tokio::time::Instant::now() + MOST_WAIT;
    loop {
        match limits
            .acquire(RATE_LIMIT, per_second)
            .await
            .map_err(database)?
        {
            Slot::Granted { .. } => return Ok(()),
            Slot::Wait(wait) if tokio::time::Instant::now() + wait < deadline => {
                tokio::time::sleep(wait).await;
            }
            Slot::Wait(_) => {
                return Err(TaskError::Transient {
                    message: format!(
                        "the shipping partner's rate limit ({per_second}/s) stayed full for {}s",
                        MOST_WAIT.as_secs()
                    ),
                    countdown: Some(Duration::from_secs(1)),
                });
            }
        }
    }
}
