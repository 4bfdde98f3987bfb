//! `send_order_confirmation_email(order_id)`: the customer's order confirmation, sent once.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use shopfds_broker::{RetryPolicy, Task, TaskContext, TaskError, TaskOptions};
use shopfds_protocol::payloads::OrderTask;
use shopfds_protocol::tasks::SEND_ORDER_CONFIRMATION_EMAIL;
use shopfds_store::Store;

use crate::mail::{Mailer, confirmation};
use shopfds_results::database_error as database;

/// The seed's options: SMTP errors retry 3 times with exponential backoff.
pub fn options() -> TaskOptions {
    TaskOptions {
        max_retries: 3,
        retry: RetryPolicy::Exponential {
            base: Duration::from_secs(1),
            max: Duration::from_secs(600),
            jitter: true,
        },
        ..TaskOptions::default()
    }
}

/// The task, with what it needs: the mail transport and the database (the order, and the
/// once-only record).
pub struct SendOrderConfirmation {
    pub mailer: Arc<Mailer>,
    pub store: Store,
}

impl Task for SendOrderConfirmation {
    const NAME: &'static str = SEND_ORDER_CONFIRMATION_EMAIL;
    type Args = OrderTask;

    fn options(&self) -> TaskOptions {
        options()
    }

    async fn run(&self, args: OrderTask, ctx: TaskContext) -> Result<Value, TaskError> {
        run(&self.store, &self.mailer, args, &ctx).await
    }
}

pub async fn run(
    store: &Store,
    mailer: &Mailer,
    OrderTask { order_id }: OrderTask,
    ctx: &TaskContext,
) -> Result<Value, TaskError> {
    // The business key, not the task id: a second message for the same order (a replay from
    // the dead-letter queue, a duplicate publish) must not mail the customer twice either.
    let once = store
        .once()
        .begin(&format!("order-confirmation:{order_id}"))
        .await
        .map_err(database)?;
    if let Some(first) = once.already_done() {
        tracing::info!(%order_id, "confirmation already sent; not sending again");
        return Ok(super::already_sent(first));
    }
    let order = store
        .orders()
        .get(order_id)
        .await
        .map_err(database)?
        .ok_or_else(|| TaskError::permanent(format!("order {order_id} not found")))?;
    if order.status == "blocked" {
        // Fraud detection blocked it (possibly after this message was queued): no confirmation.
        // Nothing is recorded, so a later unblock and replay still sends it.
        tracing::info!(%order_id, "order blocked; no confirmation sent");
        return Ok(json!({"status": "not_sent", "reason": "order blocked by fraud detection"}));
    }
    let mail = confirmation(&order);
    // The mail and its once-only record are one span: a time limit or the end of the shutdown
    // grace period never falls between the SMTP server's acceptance and the record, and a lost
    // database connection there is waited out, never answered by sending again.
    let result = ctx
        .effect(async {
            let message_id = mailer
                .send(
                    &order.customer_email,
                    &order.customer_name,
                    &mail,
                    &format!("order-confirmation.{order_id}"),
                )
                .await?;
            let result =
                json!({"status": "sent", "to": order.customer_email, "message_id": message_id});
            once.complete(ctx.id(), result.clone())
                .await
                .map_err(database)?;
            Ok::<_, TaskError>(result)
        })
        .await?;
    tracing::info!(%order_id, "order confirmation sent");
    Ok(result)
}
