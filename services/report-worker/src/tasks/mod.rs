//! The tasks this worker runs, registered with what they need ([`Deps`]).

pub mod archive;
pub mod invoice;
pub mod sales_report;

use std::sync::Arc;

use shopfds_broker::Registry;
use shopfds_documents::{DocumentFont, Storage};
use shopfds_mail::Mailer;
use shopfds_store::Store;

/// What the tasks need, built once by [`crate::Application::build`].
#[derive(Clone)]
pub struct Deps {
    pub store: Store,
    /// `STORAGE_DIR` / `STORAGE_URL`; `None`: the tasks that write documents are refused.
    pub storage: Option<Storage>,
    /// The font documents are set in (`PDF_FONT`).
    pub font: DocumentFont,
    pub mailer: Arc<Mailer>,
    /// Log lines per archive object (`ARCHIVE_BATCH_SIZE`).
    pub archive_batch_size: i64,
    /// `REPORT_MAIL_TO`: the recipient of sales reports whose `user_id` is no email address.
    pub report_mail_to: Option<String>,
}

/// Registers every task of this worker.
pub fn register(registry: &mut Registry, deps: Deps) {
    registry.task(archive::ArchiveOldLogsTask {
        store: deps.store.clone(),
        objects: deps.storage.as_ref().map(|s| s.objects()),
        batch_size: deps.archive_batch_size,
    });
    registry.task(invoice::GenerateInvoicePdf {
        store: deps.store.clone(),
        storage: deps.storage.clone(),
        font: deps.font.clone(),
    });
    let reports = sales_report::SalesReports::new(&deps);
    registry.task(sales_report::GenerateSalesReportTask(reports.clone()));
    registry.task(sales_report::GenerateDailySalesReportTask(reports));
}
