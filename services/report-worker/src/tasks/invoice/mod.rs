//! `generate_invoice_pdf(order_id)` on queue `reports`: the order's invoice as a PDF
//! ([`render`]), written to the object store at `invoices/<order id>.pdf` and its path recorded on
//! the order (`orders.invoice_url`, which `GET /v1/orders/{id}/invoice` serves).
//!
//! In the order's canvas it is the first link of `chain(generate_invoice_pdf →
//! send_invoice_email)`: its result, `{"order_id", "invoice": <path>, "size"}`, becomes the
//! invoice mail's first argument. Running it again writes the same path again (one object per
//! order, never two). A blocked order gets no invoice (the result says so and the mail task then
//! sends nothing); an unknown order and a worker without storage fail for good; a database or
//! object store that does not answer is retried without spending the task's retries.

pub mod render;

use std::time::Duration;

use chrono::Utc;
use serde_json::{Value, json};
use shopfds_broker::{RetryPolicy, Task, TaskContext, TaskError, TaskOptions};
use shopfds_documents::{DocumentFont, Storage};
use shopfds_protocol::payloads::OrderTask;
use shopfds_protocol::tasks::GENERATE_INVOICE_PDF;
use shopfds_results::database_error as database;
use shopfds_store::Store;
use uuid::Uuid;

/// Where an order's invoice is kept in the object store.
pub fn invoice_path(order_id: Uuid) -> String {
    format!("invoices/{order_id}.pdf")
}

pub struct GenerateInvoicePdf {
    pub store: Store,
    pub storage: Option<Storage>,
    pub font: DocumentFont,
}

impl Task for GenerateInvoicePdf {
    const NAME: &'static str = GENERATE_INVOICE_PDF;
    type Args = OrderTask;

    /// Retried 3 times with exponential backoff from 2 s (rendering is deterministic: what fails
    /// is a dependency).
    fn options(&self) -> TaskOptions {
        TaskOptions {
            max_retries: 3,
            retry: RetryPolicy::Exponential {
                base: Duration::from_secs(2),
                max: Duration::from_secs(300),
                jitter: true,
            },
            ..TaskOptions::default()
        }
    }

    async fn run(
        &self,
        OrderTask { order_id }: OrderTask,
        _: TaskContext,
    ) -> Result<Value, TaskError> {
        let Some(storage) = &self.storage else {
            return Err(TaskError::permanent(
                "neither STORAGE_DIR nor STORAGE_URL is set: nowhere to store the invoice",
            ));
        };
        let order = self
            .store
            .orders()
            .get(order_id)
            .await
            .map_err(database)?
            .ok_or_else(|| TaskError::permanent(format!("order {order_id} not found")))?;
        if order.status == "blocked" {
            tracing::info!(%order_id, "order blocked; no invoice");
            return Ok(json!({
                "order_id": order_id,
                "status": "not_generated",
                "reason": "order blocked by fraud detection",
            }));
        }
        // Rendering is CPU work of a few milliseconds per page: off the runtime's threads.
        let font = self.font.clone();
        let record = order.clone();
        let render_span = tracing::info_span!("pdf", otel.name = "render invoice pdf");
        let pdf = tokio::task::spawn_blocking(move || {
            render_span.in_scope(|| render::render(&font, &record, Utc::now()))
        })
        .await
        .map_err(|e| TaskError::transient(format!("rendering the invoice: {e}")))?
        .map_err(|e| TaskError::permanent(format!("rendering the invoice: {e}")))?;
        let path = invoice_path(order_id);
        let stored = storage.put(&path, pdf).await.map_err(|e| {
            TaskError::unavailable("object store", format!("{}: {e}", storage.describe()))
        })?;
        self.store
            .orders()
            .set_invoice_url(order_id, &path)
            .await
            .map_err(database)?;
        tracing::info!(%order_id, path, size = stored.size, "invoice written");
        Ok(json!({
            "order_id": order_id,
            "invoice": stored.path,
            "size": stored.size,
            "number": render::invoice_number(&order),
        }))
    }
}
