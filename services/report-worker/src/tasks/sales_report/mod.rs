//! `generate_sales_report(start_date, end_date, user_id=None)` and
//! `generate_daily_sales_report()` (yesterday in Asia/Seoul, for the scheduler), on queue
//! `reports`: the sales of a period as a PDF, stored and mailed.
//!
//! Decided before any work: a start after the end or a period over `MAX_REPORT_DAYS` days, and
//! a worker without `STORAGE_DIR`/`STORAGE_URL`, fail at once and for good (dead-lettered with
//! the reason, FAILURE, no retry). Then five steps, each first reported as PROGRESS
//! (`current`/5 and the message), so `GET /v1/reports/sales/{task_id}` can follow:
//!
//! 1. "Fetching data..." ([`data`]): the period's orders, summed in SQL;
//! 2. "Aggregating..." ([`aggregate`]): revenue, orders, average basket, top products, FDS
//!    decisions per day;
//! 3. "Creating charts..." ([`render`]);
//! 4. "Generating PDF..." ([`render`]), stored at
//!    `reports/sales-<start>_<end>-<task id>.pdf` (the same path again on a retry);
//! 5. "Sending email..." ([`deliver`]): once per task id, to `user_id` or `REPORT_MAIL_TO`.
//!
//! The result: `{"status": "completed", "pdf_path", "period", "totals", "mailed_to", "mail"}`.
//! An SMTP server that does not answer is retried; a database or object store the worker cannot
//! reach makes the task wait, with the worker, until it answers, without spending retries.

pub mod aggregate;
pub mod data;
pub mod deliver;
pub mod period;
pub mod render;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::{Value, json};
use shopfds_broker::{RetryPolicy, Task, TaskContext, TaskError, TaskOptions};
use shopfds_documents::{DocumentFont, Storage};
use shopfds_mail::Mailer;
use shopfds_protocol::payloads::{GenerateDailySalesReport, GenerateSalesReport};
use shopfds_protocol::tasks::{GENERATE_DAILY_SALES_REPORT, GENERATE_SALES_REPORT};
use shopfds_store::Store;

use self::aggregate::Summary;
use self::deliver::Recipient;
use self::period::Period;
use super::Deps;

/// The number of steps reported as progress.
pub const STEPS: u64 = 5;

/// What both report tasks need. Cheap to clone.
#[derive(Clone)]
pub struct SalesReports {
    store: Store,
    storage: Option<Storage>,
    font: DocumentFont,
    mailer: Arc<Mailer>,
    report_mail_to: Option<String>,
}

impl SalesReports {
    pub fn new(deps: &Deps) -> SalesReports {
        SalesReports {
            store: deps.store.clone(),
            storage: deps.storage.clone(),
            font: deps.font.clone(),
            mailer: deps.mailer.clone(),
            report_mail_to: deps.report_mail_to.clone(),
        }
    }

    /// The whole report: the checks, then the five steps.
    pub async fn run(
        &self,
        args: GenerateSalesReport,
        ctx: &TaskContext,
    ) -> Result<Value, TaskError> {
        let period = Period::of(&args)?;
        let Some(storage) = &self.storage else {
            return Err(TaskError::permanent(
                "neither STORAGE_DIR nor STORAGE_URL is set: nowhere to store the sales report",
            ));
        };
        let recipient = Recipient::decide(args.user_id.as_deref(), self.report_mail_to.as_deref());

        ctx.progress(1, STEPS, "Fetching data...").await;
        let data = data::fetch(&self.store, &period).await?;

        ctx.progress(2, STEPS, "Aggregating...").await;
        let summary = Summary::new(period, data);

        ctx.progress(3, STEPS, "Creating charts...").await;
        let charts = {
            let (summary, font) = (summary.clone(), self.font.clone());
            blocking(move || render::charts(&summary, &font)).await?
        };

        ctx.progress(4, STEPS, "Generating PDF...").await;
        let pdf = {
            let (summary, font, id) = (summary.clone(), self.font.clone(), ctx.id().to_owned());
            blocking(move || render::pdf(&summary, &charts, &font, &id)).await?
        };
        let path = pdf_path(&period, ctx.id());
        storage.put(&path, pdf.clone()).await.map_err(|e| {
            TaskError::unavailable("object store", format!("{}: {e}", storage.describe()))
        })?;

        ctx.progress(5, STEPS, "Sending email...").await;
        let delivery =
            deliver::deliver(&self.store, &self.mailer, ctx, &recipient, &summary, &pdf).await?;
        tracing::info!(
            task_id = %ctx.id(),
            period = %period.label(),
            pdf_path = %path,
            mailed_to = ?delivery.mailed_to,
            "sales report completed"
        );
        Ok(json!({
            "status": "completed",
            "pdf_path": path,
            "period": period.json(),
            "totals": summary.totals_json(),
            "mailed_to": delivery.mailed_to,
            "mail": delivery.mail,
        }))
    }
}

/// Storage failures and SMTP 4xx retry: 3 times, 10 s doubling to 10 min, with jitter.
fn options() -> TaskOptions {
    TaskOptions {
        max_retries: 3,
        retry: RetryPolicy::Exponential {
            base: Duration::from_secs(10),
            max: Duration::from_secs(600),
            jitter: true,
        },
        ..TaskOptions::default()
    }
}

/// `generate_sales_report(start_date, end_date, user_id=None)`.
pub struct GenerateSalesReportTask(pub SalesReports);

impl Task for GenerateSalesReportTask {
    const NAME: &'static str = GENERATE_SALES_REPORT;
    type Args = GenerateSalesReport;

    fn options(&self) -> TaskOptions {
        options()
    }

    async fn run(&self, args: GenerateSalesReport, ctx: TaskContext) -> Result<Value, TaskError> {
        self.0.run(args, &ctx).await
    }
}

/// `generate_daily_sales_report()`: yesterday in Asia/Seoul, as of when the task runs (a retry
/// minutes later stays on the same day unless it crosses midnight in Seoul, so the scheduler
/// sends it early in the day), mailed to `REPORT_MAIL_TO`.
pub struct GenerateDailySalesReportTask(pub SalesReports);

impl Task for GenerateDailySalesReportTask {
    const NAME: &'static str = GENERATE_DAILY_SALES_REPORT;
    type Args = GenerateDailySalesReport;

    fn options(&self) -> TaskOptions {
        options()
    }

    async fn run(&self, _: GenerateDailySalesReport, ctx: TaskContext) -> Result<Value, TaskError> {
        let day = period::yesterday(Utc::now())?;
        let args = GenerateSalesReport {
            start_date: day,
            end_date: day,
            user_id: None,
        };
        self.0.run(args, &ctx).await
    }
}

/// `reports/sales-<start>_<end>-<task id>.pdf`.
pub fn pdf_path(period: &Period, task_id: &str) -> String {
    format!(
        "reports/sales-{}_{}-{}.pdf",
        period.start,
        period.end,
        safe_id(task_id)
    )
}

/// A task id as one path segment or key: characters other than ASCII letters, digits, `-`
/// and `_` become `_` (Celery ids are UUIDs, but a producer may choose any string).
pub fn safe_id(task_id: &str) -> String {
    task_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// CPU-bound drawing off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, TaskError> + Send + 'static,
) -> Result<T, TaskError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| TaskError::permanent(format!("sales report rendering: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pdf_path_names_the_period_and_a_safe_task_id() {
        let period = Period {
            start: "2026-11-01".parse().unwrap(),
            end: "2026-11-07".parse().unwrap(),
            days: 7,
        };
        assert_eq!(
            pdf_path(&period, "6f1c2b1e-0b1e-4c1e-9a57-2b6f0c1d9e11"),
            "reports/sales-2026-11-01_2026-11-07-6f1c2b1e-0b1e-4c1e-9a57-2b6f0c1d9e11.pdf"
        );
        assert_eq!(
            pdf_path(&period, "../x/y z"),
            "reports/sales-2026-11-01_2026-11-07-___x_y_z.pdf"
        );
    }
}
