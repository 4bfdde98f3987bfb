//! Log lines that name their trace: every event written inside a span carries the
//! OpenTelemetry `trace_id` and `span_id` of that span, so a log line leads to its trace in
//! Jaeger and a trace to its log lines (search the logs for the trace id).
//!
//! - JSON (`LOG_FORMAT=json`): two more top-level keys,
//!   `{…,"span":{…},"trace_id":"4bf92f35…","span_id":"00f067aa…"}`;
//! - pretty: ` trace_id=4bf92f35… span_id=00f067aa…` at the end of the line.
//!
//! An event outside any span (start-up, shutdown) has neither. The ids are those of the
//! OpenTelemetry context the OpenTelemetry layer activates when a span is entered, so that layer
//! must come before this one in the subscriber (as [`crate::init`] installs them).

use opentelemetry::trace::TraceContextExt as _;
use tracing::{Event, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::registry::LookupSpan;

use crate::LogFormat;

/// The fmt layer [`crate::init`] installs: `format`'s lines with the trace and span ids, on
/// stdout.
pub fn layer<S>(format: LogFormat) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    layer_with_writer(format, std::io::stdout)
}

/// [`layer`] writing to `writer` (tests capture the lines).
pub fn layer_with_writer<S, W>(format: LogFormat, writer: W) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .map_event_format(|inner| WithTraceIds {
                plain: inner.clone(),
                colored: inner,
                json: true,
            })
            .with_writer(writer)
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .map_event_format(|inner| WithTraceIds {
                // The line is written to a buffer first, which has no colours of its own: the
                // inner format is told whether the real writer takes them.
                plain: inner.clone().with_ansi(false),
                colored: inner.with_ansi(true),
                json: false,
            })
            .with_writer(writer)
            .boxed(),
    }
}

/// The ids of the OpenTelemetry span active on this thread, as lowercase hex (32 and 16
/// characters); `None` outside any span.
pub fn current_ids() -> Option<(String, String)> {
    opentelemetry::Context::map_current(|cx| {
        let span = cx.span();
        let context = span.span_context();
        context.is_valid().then(|| {
            (
                context.trace_id().to_string(),
                context.span_id().to_string(),
            )
        })
    })
}

/// An event format that writes `inner`'s line, then the ids.
#[derive(Debug, Clone)]
pub struct WithTraceIds<F> {
    plain: F,
    colored: F,
    json: bool,
}

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let inner = if writer.has_ansi_escapes() {
            &self.colored
        } else {
            &self.plain
        };
        let Some((trace_id, span_id)) = current_ids() else {
            return inner.format_event(ctx, writer, event);
        };
        let mut line = String::with_capacity(256);
        inner.format_event(ctx, Writer::new(&mut line), event)?;
        if self.json {
            // The format writes one object and a newline: the ids go in before its last brace.
            if let Some(end) = line.rfind('}') {
                line.insert_str(
                    end,
                    &format!(r#","trace_id":"{trace_id}","span_id":"{span_id}""#),
                );
            }
        } else {
            let end = line.trim_end_matches('\n').len();
            line.insert_str(end, &format!(" trace_id={trace_id} span_id={span_id}"));
        }
        writer.write_str(&line)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    /// Lines written by a test's subscriber.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn lines(&self) -> Vec<String> {
            String::from_utf8(self.0.lock().unwrap().clone())
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect()
        }
    }

    /// Logs `inside` in a span and `outside` after it, through `format`; returns the lines and
    /// the span's ids as OpenTelemetry assigned them.
    fn log(format: LogFormat) -> (Vec<String>, String, String) {
        let provider = SdkTracerProvider::builder().build();
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("logs-test")))
            .with(layer_with_writer(format, move || writer.clone()));
        let ids = tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("work", order = 7);
            let ids = span.in_scope(|| {
                tracing::info!(answer = 42, "inside");
                current_ids().unwrap()
            });
            tracing::info!("outside");
            ids
        });
        (captured.lines(), ids.0, ids.1)
    }

    #[test]
    fn json_lines_carry_the_ids_of_their_span() {
        let (lines, trace_id, span_id) = log(LogFormat::Json);
        assert_eq!(lines.len(), 2, "{lines:?}");
        let inside: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(inside["trace_id"], trace_id.as_str(), "{inside}");
        assert_eq!(inside["span_id"], span_id.as_str(), "{inside}");
        assert_eq!(inside["fields"]["message"], "inside");
        assert_eq!(inside["span"]["order"], 7);
        assert_eq!(trace_id.len(), 32);
        assert_eq!(span_id.len(), 16);
        assert_ne!(trace_id, "0".repeat(32));
        let outside: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
        assert!(outside.get("trace_id").is_none(), "{outside}");
        assert!(outside.get("span_id").is_none(), "{outside}");
    }

    #[test]
    fn pretty_lines_end_with_the_ids_of_their_span() {
        let (lines, trace_id, span_id) = log(LogFormat::Pretty);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].contains("inside"), "{lines:?}");
        assert!(
            lines[0].ends_with(&format!(" trace_id={trace_id} span_id={span_id}")),
            "{lines:?}"
        );
        assert!(lines[1].contains("outside"), "{lines:?}");
        assert!(!lines[1].contains("trace_id="), "{lines:?}");
    }
}
