//! `send_invoice_email(invoice=None, *, order_id)`: the customer's invoice, mailed once with the
//! PDF attached.
//!
//! In the order's canvas it follows `generate_invoice_pdf` in a chain and receives that task's
//! result as `invoice` (`{"invoice": "invoices/<order id>.pdf", …}`); sent on its own, it takes
//! the path recorded on the order. The PDF is read from the object store report-worker writes
//! to (`STORAGE_DIR` / `STORAGE_URL`). No invoice yet is worth another try (the PDF task may
//! still be running); a blocked order, or an invoice result that says none was made, gets no
//! mail. Once per order, by the business key `invoice-email:<order id>`, like the confirmation;
//! the Message-ID is `<invoice.<order id>@…>`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use shopfds_broker::{RetryPolicy, Task, TaskContext, TaskError, TaskOptions};
use shopfds_documents::Storage;
use shopfds_protocol::payloads::SendInvoiceEmail;
use shopfds_protocol::tasks::SEND_INVOICE_EMAIL;
use shopfds_results::database_error as database;
use shopfds_store::Store;

use crate::mail::{Attachment, Mailer, invoice};

/// SMTP errors and a missing PDF retry 5 times with exponential backoff from 2 s.
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

pub struct SendInvoice {
    pub mailer: Arc<Mailer>,
    pub store: Store,
    pub storage: Option<Storage>,
}

impl Task for SendInvoice {
    const NAME: &'static str = SEND_INVOICE_EMAIL;
    type Args = SendInvoiceEmail;

    fn options(&self) -> TaskOptions {
        options()
    }

    async fn run(&self, args: SendInvoiceEmail, ctx: TaskContext) -> Result<Value, TaskError> {
        let order_id = args.order_id;
        let Some(storage) = &self.storage else {
            return Err(TaskError::permanent(
                "neither STORAGE_DIR nor STORAGE_URL is set: the invoice cannot be read",
            ));
        };
        if let Some(result) = &args.invoice
            && result.get("status").and_then(Value::as_str) == Some("not_generated")
        {
            return Ok(json!({"status": "not_sent", "reason": result.get("reason")}));
        }
        let once = self
            .store
            .once()
            .begin(&format!("invoice-email:{order_id}"))
            .await
            .map_err(database)?;
        if let Some(first) = once.already_done() {
            tracing::info!(%order_id, "invoice already mailed; not sending again");
            return Ok(super::already_sent(first));
        }
        let order = self
            .store
            .orders()
            .get(order_id)
            .await
            .map_err(database)?
            .ok_or_else(|| TaskError::permanent(format!("order {order_id} not found")))?;
        if order.status == "blocked" {
            tracing::info!(%order_id, "order blocked; no invoice mail");
            return Ok(json!({"status": "not_sent", "reason": "order blocked by fraud detection"}));
        }
        let path = args
            .invoice
            .as_ref()
            .and_then(|r| r.get("invoice"))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| order.invoice_url.clone())
            .ok_or_else(|| {
                TaskError::transient(format!("order {order_id}: invoice not generated yet"))
            })?;
        let pdf = storage
            .get(&path)
            .await
            .map_err(|e| {
                TaskError::unavailable("object store", format!("{}: {e}", storage.describe()))
            })?
            .ok_or_else(|| {
                TaskError::transient(format!("{path}: not in {} yet", storage.describe()))
            })?;
        let mut mail = invoice(&order);
        mail.attachments.push(Attachment {
            filename: format!("invoice-{order_id}.pdf"),
            content_type: "application/pdf".to_owned(),
            bytes: pdf,
        });
        // The mail and its once-only record are one span, as for the confirmation.
        let result = ctx
            .effect(async {
                let message_id = self
                    .mailer
                    .send(
                        &order.customer_email,
                        &order.customer_name,
                        &mail,
                        &format!("invoice.{order_id}"),
                    )
                    .await?;
                let result = json!({
                    "status": "sent",
                    "to": order.customer_email,
                    "message_id": message_id,
                    "invoice": path,
                });
                once.complete(ctx.id(), result.clone())
                    .await
                    .map_err(database)?;
                Ok::<_, TaskError>(result)
            })
            .await?;
        tracing::info!(%order_id, "invoice mailed");
        Ok(result)
    }
}
