//! One server span per HTTP request of a public API (order-api's), and the request's trace id
//! in its answer.
//!
//! [`trace_http`] is axum middleware added with `Router::layer` as the outermost layer of the
//! API, so that every response, an auth refusal or a timeout's 408 included, is inside the span:
//! - the span is named `METHOD /route/{template}` from axum's `MatchedPath` (`POST /v1/orders`,
//!   `GET /v1/orders/{id}`), never the raw path, so ids do not make one span name per order;
//!   a request that matched no route is named by its method alone, as OpenTelemetry's HTTP
//!   conventions say;
//! - it continues the caller's trace when the request carries a W3C `traceparent`;
//! - every response carries [`TRACE_ID_HEADER`] `x-trace-id: <32 hex digits>`, the trace to look
//!   up in Jaeger (README, "Tracing").
//!
//! The operations endpoints (`/healthz`, `/readyz`, `/metrics`) are served on their own port
//! without this layer: probes and scrapes make no spans.

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument as _;

/// The response header naming the request's trace.
pub const TRACE_ID_HEADER: &str = "x-trace-id";

/// The server span of `request`, its parent the caller's `traceparent` if any.
pub fn server_span(request: &Request) -> tracing::Span {
    let method = request.method().as_str();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str);
    let name = match route {
        Some(route) => format!("{method} {route}"),
        None => method.to_owned(),
    };
    let span = tracing::info_span!(
        "http",
        otel.name = %name,
        otel.kind = "server",
        http.request.method = %method,
        http.route = route.unwrap_or_default(),
        url.path = %request.uri().path(),
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    crate::propagation::set_parent_from_http(&span, request.headers());
    span
}

/// axum middleware: runs the request in its [`server_span`], records the status, and answers
/// with [`TRACE_ID_HEADER`].
pub async fn trace_http(request: Request, next: Next) -> Response {
    let span = server_span(&request);
    let trace_id = crate::propagation::trace_id(&span);
    let mut response = next.run(request).instrument(span.clone()).await;
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    if let Some(value) = trace_id.and_then(|id| HeaderValue::from_str(&id).ok()) {
        response.headers_mut().insert(TRACE_ID_HEADER, value);
    }
    response
}
