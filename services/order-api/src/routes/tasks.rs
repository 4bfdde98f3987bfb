//! `GET /v1/tasks/{id}`: a task's state, progress and result from the configured result backend
//! (`RESULT_BACKEND`, the one the workers write), the counterpart of Celery's `AsyncResult(id)`.

use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::startup::AppState;

pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let task = state.results.get(&id).await?.ok_or_else(|| {
        ApiError::NotFound(format!(
            "no task with id {id:?} (unknown, or its result expired)"
        ))
    })?;
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
