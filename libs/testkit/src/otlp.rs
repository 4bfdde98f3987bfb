//! A real OTLP/gRPC trace collector for tests: opentelemetry-proto's `TraceService` on tonic,
//! on a loopback port, recording every span it is sent with its resource's `service.name` and
//! `service.version`. Point a process at it with `OTEL_EXPORTER_OTLP_ENDPOINT` =
//! [`TestCollector::endpoint`] (the binaries export through a batch processor and flush on
//! SIGTERM, so poll with [`TestCollector::wait_for`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;

/// One span as the collector received it, flattened with its resource's service attributes.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub service_name: Option<String>,
    pub service_version: Option<String>,
    pub name: String,
    pub kind: SpanKind,
    /// Lowercase hex, as `traceparent` and Jaeger write them (32 digits).
    pub trace_id: String,
    /// Lowercase hex (16 digits).
    pub span_id: String,
    /// Lowercase hex; empty for a root span.
    pub parent_span_id: String,
    /// String, integer and boolean attributes, as text.
    pub attributes: BTreeMap<String, String>,
}

impl ReceivedSpan {
    pub fn is_root(&self) -> bool {
        self.parent_span_id.is_empty()
    }
}

#[derive(Clone, Default)]
struct Recorder {
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
}

#[tonic::async_trait]
impl TraceService for Recorder {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut received = Vec::new();
        for resource_spans in request.into_inner().resource_spans {
            let resource = resource_spans
                .resource
                .map(|r| attributes(&r.attributes))
                .unwrap_or_default();
            for scope_spans in resource_spans.scope_spans {
                for span in scope_spans.spans {
                    received.push(ReceivedSpan {
                        service_name: resource.get("service.name").cloned(),
                        service_version: resource.get("service.version").cloned(),
                        kind: span.kind(),
                        name: span.name,
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_span_id: hex(&span.parent_span_id),
                        attributes: attributes(&span.attributes),
                    });
                }
            }
        }
        self.spans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(received);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn attributes(list: &[KeyValue]) -> BTreeMap<String, String> {
    list.iter()
        .filter_map(|kv| {
            let value = match kv.value.as_ref()?.value.as_ref()? {
                any_value::Value::StringValue(v) => v.clone(),
                any_value::Value::IntValue(v) => v.to_string(),
                any_value::Value::BoolValue(v) => v.to_string(),
                any_value::Value::DoubleValue(v) => v.to_string(),
                _ => return None,
            };
            Some((kv.key.clone(), value))
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut text, byte| {
        let _ = write!(text, "{byte:02x}");
        text
    })
}

/// An OTLP/gRPC collector on 127.0.0.1:0, running on the calling test's runtime until dropped.
pub struct TestCollector {
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    recorder: Recorder,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl TestCollector {
    /// Starts the collector on the current Tokio runtime.
    pub async fn spawn() -> anyhow::Result<TestCollector> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let recorder = Recorder::default();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(recorder.clone()))
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                async move {
                    let _ = stopped.await;
                },
            );
        tokio::spawn(async move {
            if let Err(e) = server.await {
                eprintln!("test OTLP collector stopped: {e}");
            }
        });
        Ok(TestCollector {
            endpoint,
            recorder,
            _stop: stop,
        })
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.recorder
            .spans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The first span named `name`; an error listing what arrived otherwise.
    pub fn span_named(&self, name: &str) -> anyhow::Result<ReceivedSpan> {
        let spans = self.spans();
        spans
            .iter()
            .find(|span| span.name == name)
            .cloned()
            .with_context(|| format!("collector received no span {name:?}; got {spans:#?}"))
    }

    /// Polls until `done` holds for the spans received (checked every 100 ms), or `timeout`
    /// passes: then an error with the spans that did arrive.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&[ReceivedSpan]) -> bool,
    ) -> anyhow::Result<Vec<ReceivedSpan>> {
        let deadline = Instant::now() + timeout;
        loop {
            let spans = self.spans();
            if done(&spans) {
                return Ok(spans);
            }
            if Instant::now() >= deadline {
                let names: Vec<String> = spans
                    .iter()
                    .map(|s| format!("{} ({:?})", s.name, s.service_name))
                    .collect();
                bail!("spans still missing after {timeout:?}; received {names:#?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
