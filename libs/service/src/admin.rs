//! The guard of the operators' HTTP APIs served on the ops port (beat-scheduler's schedules,
//! dlq-reprocessor's workbench): every route needs an API key with scope `admin`, and errors are
//! the JSON shape order-api answers with, `{"error": {"code", "message"}}`.

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use shopfds_auth::{AuthError, Authenticator, Scope};

/// Middleware (`route_layer(from_fn_with_state(auth, require_admin))`): 401 without a valid key
/// (with `WWW-Authenticate: Bearer`), 403 for a key without `admin`, 503 when the key table
/// cannot be read; otherwise the request goes on with its [`shopfds_auth::Principal`] in the
/// extensions.
pub async fn require_admin(
    State(auth): State<Authenticator>,
    mut request: Request,
    next: Next,
) -> Response {
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or("invalid"));
    match auth.authenticate_header(header).await {
        Ok(principal) if principal.allows(Scope::Admin) => {
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Ok(_) => error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the API key lacks scope admin",
        ),
        Err(AuthError::Unavailable) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the key table cannot be read",
        ),
        Err(e) => {
            let mut response = error(StatusCode::UNAUTHORIZED, "unauthenticated", &e.to_string());
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            response
        }
    }
}

/// `{"error": {"code", "message"}}` with `status`.
pub fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

/// A JSON request body, or the 422 `validation_failed` answer naming what is wrong with it
/// (take the body as `Result<Json<T>, JsonRejection>` and pass it here).
#[expect(
    clippy::result_large_err,
    reason = "the error is the handler's own answer, returned at once; boxing it gains nothing"
)]
pub fn json_body<T>(
    body: Result<Json<T>, axum::extract::rejection::JsonRejection>,
) -> Result<T, Response> {
    body.map(|Json(body)| body).map_err(|e| {
        error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            &e.body_text(),
        )
    })
}
