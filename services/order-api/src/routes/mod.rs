//! HTTP routes of the public API.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::startup::AppState;

pub mod orders;
pub mod reports;
pub mod tasks;

/// An id from a path as an error message may quote it: at most 64 characters, so a huge path
/// is not echoed back.
fn shown(raw: &str) -> String {
    match raw.char_indices().nth(64) {
        Some((end, _)) => format!("{}…", raw.get(..end).unwrap_or_default()),
        None => raw.to_owned(),
    }
}

/// The document at `path` in the object store (an invoice, a report): 503 when no storage is
/// configured or it does not answer, 404 when nothing is there.
async fn document(state: &AppState, path: &str) -> Result<Vec<u8>, ApiError> {
    let storage = state.storage.as_ref().ok_or_else(|| {
        ApiError::StorageUnavailable(
            "no document storage is configured (STORAGE_DIR or STORAGE_URL)".to_owned(),
        )
    })?;
    storage
        .get(path)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, path, storage = storage.describe(), "document unreadable");
            ApiError::StorageUnavailable("the document storage did not answer".to_owned())
        })?
        .ok_or_else(|| ApiError::NotFound(format!("the document {path:?} is not in storage")))
}

/// A PDF download: `application/pdf`, saved as `file`.
fn pdf_response(bytes: Vec<u8>, file: &str) -> Response {
    let disposition = HeaderValue::from_str(&format!("attachment; filename=\"{file}\""))
        .unwrap_or_else(|_| HeaderValue::from_static("attachment"));
    let mut response = (StatusCode::OK, bytes).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/pdf"),
    );
    headers.insert(header::CONTENT_DISPOSITION, disposition);
    response
}
