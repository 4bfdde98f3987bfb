//! `GET /v1/tasks/{id}`: a task's state, progress and result from the configured result backend
//! (`RESULT_BACKEND`, the one the workers write), the counterpart of Celery's `AsyncResult(id)`.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use serde_json::{Value, json};

use crate::domain::TaskId;
use crate::error::ApiError;
use crate::startup::AppState;

pub async fn get(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let not_found = |id: &str| {
        ApiError::NotFound(format!(
            "no task with id {id:?} (unknown, or its result expired)"
        ))
    };
    // A path that is not UTF-8 (`%FF`) or no task id at all: no such task either.
    let raw = id.map(|Path(id)| id).unwrap_or_default();
    let id = TaskId::parse(&raw).ok_or_else(|| not_found(&super::shown(&raw)))?;
    let task = state
        .results
        .get(id.as_str())
        .await?
        .ok_or_else(|| not_found(id.as_str()))?;
    let progress = task.progress.as_ref().map(|p| {
        json!({"current": p.get("current"), "total": p.get("total"), "message": p.get("message")})
    });
    Ok(Json(json!({
        "task_id": task.task_id,
        "name": task.name,
        "queue": task.queue,
        "state": task.state,
        "retries": task.retries,
        "progress": progress,
        "result": task.result,
        "error": task.error,
        "updated_at": task.updated_at,
    })))
}
