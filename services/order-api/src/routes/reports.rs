//! Sales reports (scope `reports`):
//!
//! - `POST /v1/reports/sales` `{start_date, end_date, user_id?}`: the `generate_sales_report`
//!   message written through the outbox with its PENDING row (as an order's tasks are), so a
//!   broker outage delays the report and never loses it; `202 {"task_id", "status": "pending"}`.
//! - `GET /v1/reports/sales/{task_id}`: where the report is, from the result backend, in the
//!   shapes of [`report_status`]. 404 for an unknown id and for a task that is no sales report.
//! - `GET /v1/reports/{task_id}/pdf`: the completed report's PDF from the object store, as an
//!   attachment. 404 until the report is completed; 503 without storage.

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{Value, json};
use shopfds_auth::Principal;
use shopfds_protocol::{TaskArgs, TaskMessage, TaskState, tasks};
use shopfds_store::{OutboxMessage, PendingTask, TaskRecord};

use crate::domain::{TaskId, parse_sales_report};
use crate::error::ApiError;
use crate::startup::AppState;

/// Where the reports' PDFs are; a `pdf_path` elsewhere is not served by this route.
const PDF_PREFIX: &str = "reports/";

pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    super::orders::require_json(&headers)?;
    let args = parse_sales_report(&body)?;
    let msg = TaskMessage::new(tasks::GENERATE_SALES_REPORT, args.to_kwargs());
    let queue = tasks::queue_for(msg.task());
    state
        .store
        .outbox()
        .enqueue_tasks(
            &[OutboxMessage::task(&msg, queue)],
            &[PendingTask::task(&msg, queue)],
        )
        .await?;
    tracing::info!(task_id = %msg.id(), start_date = %args.start_date, end_date = %args.end_date, key_id = %caller.key_id, "sales report requested");
    let body = json!({"task_id": msg.id(), "status": "pending"});
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

pub async fn status(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let record = report(&state, id).await?;
    Ok(Json(report_status(&record)))
}

pub async fn pdf(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let record = report(&state, id).await?;
    let path = completed_pdf(&record).ok_or_else(|| {
        ApiError::NotFound(format!(
            "the report of task {:?} is not completed (state {})",
            record.task_id, record.state
        ))
    })?;
    let bytes = super::document(&state, path).await?;
    let file = path.rsplit('/').next().unwrap_or("report.pdf");
    Ok(super::pdf_response(bytes, file))
}

/// The task `id` names, when it is a sales report; else 404.
async fn report(
    state: &AppState,
    id: Result<Path<String>, PathRejection>,
) -> Result<TaskRecord, ApiError> {
    let not_found = |id: &str| ApiError::NotFound(format!("no sales report with task id {id:?}"));
    // A path that is not UTF-8 (`%FF`) or no task id at all: no such report either.
    let raw = id.map(|Path(id)| id).unwrap_or_default();
    let id = TaskId::parse(&raw).ok_or_else(|| not_found(&super::shown(&raw)))?;
    let mut record = state.results.get(id.as_str()).await?;
    if record.is_none() && state.results.name() != "postgres" {
        // Redis keeps only what the workers wrote; the PENDING row written with the message
        // is in the database until a worker takes it.
        record = state.store.results().get(id.as_str()).await?;
    }
    record
        .filter(|r| {
            r.name == tasks::GENERATE_SALES_REPORT || r.name == tasks::GENERATE_DAILY_SALES_REPORT
        })
        .ok_or_else(|| not_found(id.as_str()))
}

/// A report task's state as the API shows it:
///
/// | state | answer |
/// | --- | --- |
/// | PENDING, RECEIVED | `{"status": "pending", "progress": 0}` |
/// | RETRY | `pending` as well (the next try starts from step 1), with `retries` and `message` |
/// | STARTED | `{"status": "in_progress", "current": 0, "total": 5, "progress": 0, "message": "Started"}` |
/// | PROGRESS | `{"status": "in_progress", "current", "total", "progress" (percent, whole), "message"}` |
/// | SUCCESS | `{"status": "completed", "result"}` |
/// | FAILURE, REVOKED, REJECTED | `{"status": "failed", "error"}` (the error's message) |
pub fn report_status(record: &TaskRecord) -> Value {
    match record.state {
        TaskState::Pending | TaskState::Received => json!({"status": "pending", "progress": 0}),
        TaskState::Retry => json!({
            "status": "pending",
            "progress": 0,
            "retries": record.retries,
            "message": format!("waiting to be tried again after: {}", error_message(record)),
        }),
        TaskState::Started => json!({
            "status": "in_progress",
            "current": 0,
            "total": STEPS,
            "progress": 0,
            "message": "Started",
        }),
        TaskState::Progress => {
            let meta = record.progress.as_ref();
            let number = |key: &str| meta.and_then(|m| m.get(key)).and_then(Value::as_u64);
            let current = number("current").unwrap_or(0);
            let total = number("total").unwrap_or(STEPS);
            let message = meta
                .and_then(|m| m.get("message"))
                .and_then(Value::as_str)
                .unwrap_or("");
            json!({
                "status": "in_progress",
                "current": current,
                "total": total,
                "progress": percent(current, total),
                "message": message,
            })
        }
        TaskState::Success => json!({"status": "completed", "result": record.result}),
        TaskState::Failure | TaskState::Revoked | TaskState::Rejected => {
            json!({"status": "failed", "error": error_message(record)})
        }
    }
}

/// The report's steps (report-worker reports progress out of this many).
const STEPS: u64 = 5;

/// `current / total` in whole percent, 0 to 100.
fn percent(current: u64, total: u64) -> u64 {
    if total == 0 {
        return 0;
    }
    let whole = u128::from(current.min(total)) * 100 / u128::from(total);
    u64::try_from(whole).unwrap_or(100)
}

/// The error's message (`exc_message`), or its state when there is none (a revoked task).
fn error_message(record: &TaskRecord) -> String {
    match &record.error {
        Some(Value::Object(e)) => match e.get("exc_message") {
            Some(Value::String(message)) => message.clone(),
            Some(other) => other.to_string(),
            None => Value::Object(e.clone()).to_string(),
        },
        Some(Value::String(message)) => message.clone(),
        Some(other) => other.to_string(),
        None => record.state.to_string(),
    }
}

/// The stored PDF's path of a completed report.
fn completed_pdf(record: &TaskRecord) -> Option<&str> {
    if record.state != TaskState::Success {
        return None;
    }
    record
        .result
        .as_ref()?
        .get("pdf_path")?
        .as_str()
        .filter(|path| path.starts_with(PDF_PREFIX) && path.ends_with(".pdf"))
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;

    fn record(state: TaskState) -> TaskRecord {
        TaskRecord {
            task_id: "t-1".to_owned(),
            name: tasks::GENERATE_SALES_REPORT.to_owned(),
            queue: "reports".to_owned(),
            state,
            retries: 0,
            progress: None,
            result: None,
            error: None,
            created_at: Utc::now(),
            updated_at: Utc::now(),
            expires_at: None,
        }
    }

    #[test]
    fn each_state_has_its_shape() {
        assert_eq!(
            report_status(&record(TaskState::Pending)),
            json!({"status": "pending", "progress": 0})
        );
        let mut progress = record(TaskState::Progress);
        progress.progress = Some(json!({"current": 2, "total": 5, "message": "Aggregating..."}));
        assert_eq!(
            report_status(&progress),
            json!({"status": "in_progress", "current": 2, "total": 5, "progress": 40, "message": "Aggregating..."})
        );
        let mut done = record(TaskState::Success);
        done.result = Some(json!({"status": "completed", "pdf_path": "reports/x.pdf"}));
        assert_eq!(
            report_status(&done),
            json!({"status": "completed", "result": {"status": "completed", "pdf_path": "reports/x.pdf"}})
        );
        assert_eq!(completed_pdf(&done), Some("reports/x.pdf"));
        let mut failed = record(TaskState::Failure);
        failed.error = Some(
            json!({"exc_type": "PermanentError", "exc_message": "start_date 2026-11-21 is after end_date 2026-11-01"}),
        );
        assert_eq!(
            report_status(&failed),
            json!({"status": "failed", "error": "start_date 2026-11-21 is after end_date 2026-11-01"})
        );
        assert_eq!(
            report_status(&record(TaskState::Revoked))["error"],
            "REVOKED"
        );
        let mut retry = record(TaskState::Retry);
        retry.retries = 1;
        retry.error = Some(json!({"exc_type": "TransientError", "exc_message": "SMTP: timed out"}));
        let shown = report_status(&retry);
        assert_eq!(shown["status"], "pending");
        assert_eq!(shown["retries"], 1);
        assert!(
            shown["message"]
                .as_str()
                .unwrap()
                .contains("SMTP: timed out")
        );
        assert_eq!(
            report_status(&record(TaskState::Started))["status"],
            "in_progress"
        );
    }

    #[test]
    fn only_a_completed_report_under_reports_has_a_pdf() {
        let mut done = record(TaskState::Success);
        done.result = Some(json!({"pdf_path": "invoices/o-1.pdf"}));
        assert_eq!(completed_pdf(&done), None);
        let mut running = record(TaskState::Progress);
        running.result = Some(json!({"pdf_path": "reports/x.pdf"}));
        assert_eq!(completed_pdf(&running), None);
    }

    #[test]
    fn percent_is_whole_and_bounded() {
        assert_eq!(percent(1, 5), 20);
        assert_eq!(percent(5, 5), 100);
        assert_eq!(percent(2, 3), 66);
        assert_eq!(percent(9, 5), 100);
        assert_eq!(percent(1, 0), 0);
        assert_eq!(percent(u64::MAX, u64::MAX), 100);
    }
}
