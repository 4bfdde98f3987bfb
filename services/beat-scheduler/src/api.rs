//! The schedules' HTTP API, on the operations port beside `/healthz`, `/readyz` and `/metrics`;
//! every route needs an API key with scope `admin` (`Authorization: Bearer sfk_…`). Changes take
//! effect at the next tick of every replica, as the CLI's do.
//!
//! ```text
//! GET    /v1/schedules                  every schedule with its next five runs
//! PUT    /v1/schedules/{name}           {"task", "cron" | "every_secs", "kwargs"?, "queue"?, "missed"?, "enabled"?}
//! POST   /v1/schedules/{name}/pause
//! POST   /v1/schedules/{name}/resume
//! DELETE /v1/schedules/{name}
//! ```

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use chrono::Utc;
use chrono_tz::Tz;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use shopfds_auth::Authenticator;
use shopfds_service::admin::error;
use shopfds_store::Store;

use crate::schedule::Schedule;

#[derive(Clone)]
struct Api {
    store: Store,
    timezone: Tz,
}

/// The API's routes over `store`, checked by `auth`.
pub fn router(store: Store, timezone: Tz, auth: Authenticator) -> Router {
    Router::new()
        .route("/v1/schedules", get(list))
        .route("/v1/schedules/{name}", put(save).delete(remove))
        .route("/v1/schedules/{name}/pause", post(pause))
        .route("/v1/schedules/{name}/resume", post(resume))
        .route_layer(axum::middleware::from_fn_with_state(
            auth,
            shopfds_service::admin::require_admin,
        ))
        .with_state(Api { store, timezone })
}

fn unavailable(e: impl std::fmt::Display) -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        &format!("database: {e}"),
    )
}

async fn list(State(api): State<Api>) -> Response {
    let rows = match api.store.beat().schedules().await {
        Ok(rows) => rows,
        Err(e) => return unavailable(e),
    };
    let now = Utc::now();
    let schedules: Vec<Value> = rows
        .iter()
        .map(|row| {
            let next: Vec<String> = Schedule::from_row(row)
                .map(|s| {
                    s.next_runs(now, api.timezone, 5)
                        .iter()
                        .map(|t| t.to_rfc3339())
                        .collect()
                })
                .unwrap_or_default();
            json!({
                "name": row.name, "task": row.task, "cron": row.cron, "every_secs": row.every_secs,
                "kwargs": row.kwargs, "queue": row.queue, "missed": row.missed,
                "enabled": row.enabled, "source": row.source, "next_runs": next,
            })
        })
        .collect();
    Json(json!({"timezone": api.timezone.name(), "schedules": schedules})).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    task: String,
    cron: Option<String>,
    every_secs: Option<i32>,
    #[serde(default)]
    kwargs: Map<String, Value>,
    queue: Option<String>,
    missed: Option<String>,
    enabled: Option<bool>,
}

async fn save(
    State(api): State<Api>,
    Path(name): Path<String>,
    body: Result<Json<Body>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let body = match shopfds_service::admin::json_body(body) {
        Ok(body) => body,
        Err(response) => return response,
    };
    let row = match crate::file::row(
        name.clone(),
        body.task,
        body.cron,
        body.every_secs,
        body.kwargs,
        body.queue,
        body.missed.unwrap_or_else(|| "skip".to_owned()),
        body.enabled.unwrap_or(true),
    ) {
        Ok(row) => row,
        Err(message) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_failed",
                &message,
            );
        }
    };
    match api.store.beat().put(&row).await {
        Ok(()) => (StatusCode::OK, Json(json!({"saved": name}))).into_response(),
        Err(e) => unavailable(e),
    }
}

async fn set_enabled(api: &Api, name: &str, enabled: bool) -> Response {
    match api.store.beat().set_enabled(name, enabled).await {
        Ok(true) => Json(json!({"name": name, "enabled": enabled})).into_response(),
        Ok(false) => not_found(name),
        Err(e) => unavailable(e),
    }
}

async fn pause(State(api): State<Api>, Path(name): Path<String>) -> Response {
    set_enabled(&api, &name, false).await
}

async fn resume(State(api): State<Api>, Path(name): Path<String>) -> Response {
    set_enabled(&api, &name, true).await
}

async fn remove(State(api): State<Api>, Path(name): Path<String>) -> Response {
    match api.store.beat().remove(&name).await {
        Ok(true) => Json(json!({"removed": name})).into_response(),
        Ok(false) => not_found(&name),
        Err(e) => unavailable(e),
    }
}

fn not_found(name: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        &format!("no schedule named {name:?}"),
    )
}
