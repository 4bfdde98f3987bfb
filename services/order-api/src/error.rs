//! The one error type of the HTTP edge: every failure becomes a status and
//! `{"error": {"code", "message", "field"}}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use shopfds_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{field}: {message}")]
    Validation { field: String, message: String },
    #[error("{0}")]
    NotFound(String),
    #[error("the body must be JSON, sent with Content-Type: application/json")]
    UnsupportedMediaType,
    #[error("Idempotency-Key was already used with a different request body")]
    IdempotencyConflict,
    /// No key, or one that is malformed, unknown, wrong or revoked (401).
    #[error("{0}")]
    Unauthenticated(String),
    /// A valid key without the scope the route needs (403).
    #[error("this API key lacks the scope {0}")]
    Forbidden(shopfds_auth::Scope),
    #[error("the database is unreachable; nothing was written")]
    Unavailable,
    /// A stored document cannot be read: no object store configured, or it did not answer.
    #[error("{0}")]
    StorageUnavailable(String),
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    pub fn validation(field: &str, message: impl Into<String>) -> Self {
        ApiError::Validation {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if e.is_unavailable() {
            tracing::warn!(error = %e, "database unavailable");
            ApiError::Unavailable
        } else {
            tracing::error!(error = %e, "database error");
            ApiError::Internal(e.to_string())
        }
    }
}

/// The result backend did not answer (`GET /v1/tasks/{id}`): the state is unknown right now.
impl From<shopfds_broker::BackendError> for ApiError {
    fn from(e: shopfds_broker::BackendError) -> Self {
        tracing::warn!(error = %e, "result backend unavailable");
        ApiError::Unavailable
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, field) = match &self {
            ApiError::Validation { field, .. } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_failed",
                Some(field.clone()),
            ),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found", None),
            ApiError::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                Some("Content-Type".to_owned()),
            ),
            ApiError::IdempotencyConflict => (
                StatusCode::CONFLICT,
                "idempotency_key_reused",
                Some("Idempotency-Key".to_owned()),
            ),
            ApiError::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "unauthenticated", None),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "insufficient_scope", None),
            ApiError::Unavailable | ApiError::StorageUnavailable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable", None)
            }
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal", None),
        };
        // Internal details stay in the logs, not in the response.
        let message = match &self {
            ApiError::Validation { message, .. } => message.clone(),
            other => other.to_string(),
        };
        let mut body = json!({"error": {"code": code, "message": message, "field": field}});
        if let ApiError::Forbidden(scope) = &self {
            body["error"]["scope"] = json!(scope.as_str());
        }
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}
