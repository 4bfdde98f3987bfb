//! The DLQ API, on the operations port beside `/healthz`, `/readyz` and `/metrics`; every route
//! needs an API key with scope `admin` (`Authorization: Bearer sfk_…`).
//!
//! ```text
//! GET    /v1/dlq                                  every dead-letter queue's and parked queue's depth
//! GET    /v1/dlq/{queue}/messages?task=&reason=&offset=&limit=
//! POST   /v1/dlq/{queue}/replay  {"id"|"task"|"reason"|"all": true, "kwargs": {…} (with "id")}
//! DELETE /v1/dlq/{queue}?confirm=failed.{queue}
//! ```
//!
//! `{queue}` is a work queue (`email`) or its dead-letter queue (`failed.email`).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use shopfds_auth::{Authenticator, Principal};
use shopfds_service::admin::error;

use crate::workbench::{Edit, Filter, Workbench, WorkbenchError};

/// The API's routes over `workbench`, checked by `auth`.
pub fn router(workbench: Arc<Workbench>, auth: Authenticator) -> Router {
    Router::new()
        .route("/v1/dlq", get(queues))
        .route("/v1/dlq/{queue}/messages", get(messages))
        .route("/v1/dlq/{queue}/replay", post(replay))
        .route("/v1/dlq/{queue}", delete(purge))
        .route_layer(axum::middleware::from_fn_with_state(
            auth,
            shopfds_service::admin::require_admin,
        ))
        .with_state(workbench)
}

fn failure(e: WorkbenchError) -> Response {
    match e {
        WorkbenchError::Invalid(message) => error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            &message,
        ),
        other => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            &other.to_string(),
        ),
    }
}

async fn queues(State(workbench): State<Arc<Workbench>>) -> Response {
    match workbench.queues().await {
        Ok(queues) => Json(json!({"queues": queues})).into_response(),
        Err(e) => failure(e),
    }
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    task: Option<String>,
    reason: Option<String>,
    #[serde(default)]
    offset: usize,
    limit: Option<usize>,
}

async fn messages(
    State(workbench): State<Arc<Workbench>>,
    Path(queue): Path<String>,
    Query(q): Query<ListQuery>,
) -> Response {
    let filter = Filter {
        id: None,
        task: q.task,
        reason: q.reason,
    };
    let limit = q.limit.unwrap_or(50).min(crate::workbench::MOST_READ);
    match workbench.list(&queue, &filter, q.offset, limit).await {
        Ok(messages) => {
            Json(json!({"queue": queue, "offset": q.offset, "messages": messages})).into_response()
        }
        Err(e) => failure(e),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayBody {
    id: Option<String>,
    task: Option<String>,
    reason: Option<String>,
    #[serde(default)]
    all: bool,
    /// New keyword arguments for the message `id` names.
    kwargs: Option<Map<String, Value>>,
}

async fn replay(
    State(workbench): State<Arc<Workbench>>,
    Extension(caller): Extension<Principal>,
    Path(queue): Path<String>,
    body: Result<Json<ReplayBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let body = match shopfds_service::admin::json_body(body) {
        Ok(body) => body,
        Err(response) => return response,
    };
    let edit = match (&body.kwargs, &body.id) {
        (Some(kwargs), Some(id)) => Some(Edit {
            id: id.clone(),
            kwargs: kwargs.clone(),
        }),
        (Some(_), None) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_failed",
                "kwargs edits one message: give its id",
            );
        }
        _ => None,
    };
    let filter = Filter {
        id: body.id,
        task: body.task,
        reason: body.reason,
    };
    let who = format!("api key {}", caller.key_id);
    match workbench
        .replay(&queue, &filter, body.all, edit.as_ref(), &who)
        .await
    {
        Ok(report) => Json(json!(report)).into_response(),
        Err(e) => failure(e),
    }
}

#[derive(Debug, Deserialize)]
struct PurgeQuery {
    #[serde(default)]
    confirm: String,
}

async fn purge(
    State(workbench): State<Arc<Workbench>>,
    Path(queue): Path<String>,
    Query(q): Query<PurgeQuery>,
) -> Response {
    match workbench.purge(&queue, &q.confirm).await {
        Ok(purged) => Json(json!({"purged": purged})).into_response(),
        Err(e) => failure(e),
    }
}
