//! W3C trace context across process boundaries, so one trace runs from the HTTP request through
//! the outbox and RabbitMQ to every worker hop. The outbox stores the context as string pairs
//! (`current_context_headers`) and workers read it back from AMQP message headers.
//!
//! Everything goes through the global propagator that [`crate::init`] sets (W3C TraceContext), so
//! a binary that swaps in a composite propagator (baggage, B3) changes every hop at once.
//!
//! A parent can only be set on a span that has not been entered yet: call `set_parent_from_*`
//! right after creating the span.

use std::collections::HashMap;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TraceContextExt as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// W3C trace context of the current `tracing` span as string pairs (`traceparent`, and
/// `tracestate` when it is not empty). Empty when there is no valid context, e.g. no span or no
/// OpenTelemetry layer installed.
pub fn current_context_headers() -> HashMap<String, String> {
    let mut headers = HashMap::new();
    inject(
        &tracing::Span::current().context(),
        &mut MapInjector(&mut headers),
    );
    headers
}

/// W3C trace context of `span` as string pairs, as [`current_context_headers`] gives the current
/// span's: what a message published on behalf of `span` carries.
pub fn span_context_headers(span: &tracing::Span) -> HashMap<String, String> {
    let mut headers = HashMap::new();
    inject(&span.context(), &mut MapInjector(&mut headers));
    headers
}

/// The trace id of `span` as 32 lowercase hex digits (what Jaeger searches by); `None` when
/// the span has no valid context (disabled, or no OpenTelemetry layer).
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let span = cx.span();
    let context = span.span_context();
    context.is_valid().then(|| context.trace_id().to_string())
}

/// Writes the current span's trace context into HTTP (or gRPC metadata) headers: an outgoing
/// request continues this trace at the server.
pub fn inject_http(headers: &mut HeaderMap) {
    inject(
        &tracing::Span::current().context(),
        &mut HeaderInjector(headers),
    );
}

/// Makes `span`'s parent the remote context carried in HTTP (or gRPC metadata) headers. A no-op
/// when the headers carry no valid context.
pub fn set_parent_from_http(span: &tracing::Span, headers: &HeaderMap) {
    set_parent(span, &HeaderExtractor(headers));
}

/// Makes `span`'s parent the remote context found in `headers` (names matched without regard to
/// case, as HTTP does). A no-op when the headers carry no valid context.
pub fn set_parent_from_headers(span: &tracing::Span, headers: &HashMap<String, String>) {
    set_parent(span, &MapExtractor(headers));
}

/// Writes the current span's trace context into AMQP message headers as long strings, the type
/// py-amqp and kombu use for `str` header values.
pub fn inject_amqp(headers: &mut FieldTable) {
    inject(
        &tracing::Span::current().context(),
        &mut FieldTableInjector(headers),
    );
}

/// Makes `span`'s parent the remote context carried in AMQP message headers (long or short
/// strings). A no-op when the headers carry no valid context.
pub fn set_parent_from_amqp(span: &tracing::Span, headers: &FieldTable) {
    set_parent(span, &FieldTableExtractor(headers));
}

fn inject(cx: &Context, injector: &mut dyn Injector) {
    if !cx.span().span_context().is_valid() {
        return;
    }
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(cx, injector);
    });
}

fn set_parent(span: &tracing::Span, extractor: &dyn Extractor) {
    let cx =
        opentelemetry::global::get_text_map_propagator(|propagator| propagator.extract(extractor));
    if cx.span().span_context().is_valid() {
        // Fails only when the span is disabled, has no OpenTelemetry layer, or was already
        // started; in each case there is no trace to attach to and the message is still processed.
        let _ = span.set_parent(cx);
    }
}

struct MapInjector<'a>(&'a mut HashMap<String, String>);

impl Injector for MapInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        // TraceContext always writes `tracestate`, usually empty: an empty header is noise.
        if !value.is_empty() {
            self.0.insert(key.to_owned(), value);
        }
    }
}

struct MapExtractor<'a>(&'a HashMap<String, String>);

impl Extractor for MapExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str).or_else(|| {
            self.0
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(key))
                .map(|(_, value)| value.as_str())
        })
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if value.is_empty() {
            return;
        }
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct FieldTableInjector<'a>(&'a mut FieldTable);

impl Injector for FieldTableInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if value.is_empty() {
            return;
        }
        // Propagator keys are short constants; a longer one cannot be an AMQP field name anyway.
        if let Ok(key) = ShortString::try_new(key) {
            self.0
                .insert(key, AMQPValue::LongString(LongString::from(value)));
        }
    }
}

struct FieldTableExtractor<'a>(&'a FieldTable);

impl Extractor for FieldTableExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        let fields = self.0.inner();
        let value = fields.get(key).or_else(|| {
            fields
                .iter()
                .find(|(name, _)| name.as_str().eq_ignore_ascii_case(key))
                .map(|(_, value)| value)
        })?;
        match value {
            AMQPValue::LongString(value) => std::str::from_utf8(value.as_bytes()).ok(),
            AMQPValue::ShortString(value) => Some(value.as_str()),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        self.0.inner().keys().map(ShortString::as_str).collect()
    }
}
