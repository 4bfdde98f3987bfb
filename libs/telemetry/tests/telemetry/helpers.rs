//! Real servers for the telemetry tests: an OTLP/gRPC trace collector (opentelemetry-proto's
//! `TraceService` on tonic) that records what it receives, and the ops router on a loopback port.

use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value;
use shopfds_telemetry::ops::Readiness;
use shopfds_telemetry::server::HttpServerSettings;
use shopfds_telemetry::{LogFormat, TelemetrySettings};
use tokio_util::sync::CancellationToken;

/// One span as the collector received it, flattened with its resource's `service.name`.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub service_name: Option<String>,
    pub name: String,
    pub trace_id: Vec<u8>,
    pub span_id: Vec<u8>,
    pub parent_span_id: Vec<u8>,
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
            let service_name = resource_spans.resource.as_ref().and_then(|resource| {
                resource.attributes.iter().find_map(|attribute| {
                    match attribute.value.as_ref()?.value.as_ref()? {
                        any_value::Value::StringValue(value) if attribute.key == "service.name" => {
                            Some(value.clone())
                        }
                        _ => None,
                    }
                })
            });
            for scope_spans in resource_spans.scope_spans {
                for span in scope_spans.spans {
                    received.push(ReceivedSpan {
                        service_name: service_name.clone(),
                        name: span.name,
                        trace_id: span.trace_id,
                        span_id: span.span_id,
                        parent_span_id: span.parent_span_id,
                    });
                }
            }
        }
        self.spans.lock().unwrap().extend(received);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// An OTLP/gRPC collector on 127.0.0.1:0, running on the calling test's runtime until dropped.
pub struct TestCollector {
    pub endpoint: String,
    recorder: Recorder,
    shutdown: CancellationToken,
}

impl TestCollector {
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.recorder.spans.lock().unwrap().clone()
    }

    pub fn span_named(&self, name: &str) -> ReceivedSpan {
        let spans = self.spans();
        spans
            .iter()
            .find(|span| span.name == name)
            .cloned()
            .unwrap_or_else(|| panic!("collector received no span {name:?}; got {spans:#?}"))
    }
}

impl Drop for TestCollector {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub async fn spawn_collector() -> TestCollector {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let recorder = Recorder::default();
    let shutdown = CancellationToken::new();
    let server = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(recorder.clone()))
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener),
            shutdown.clone().cancelled_owned(),
        );
    tokio::spawn(async move { server.await.unwrap() });
    TestCollector {
        endpoint,
        recorder,
        shutdown,
    }
}

/// Installs the global subscriber (logs only, quiet) and the global W3C propagator, as a binary's
/// `main` would. Every test may call it: only the first call in the process installs anything.
pub fn init_telemetry() {
    let settings = TelemetrySettings {
        service_name: "telemetry-tests".into(),
        log_format: LogFormat::Pretty,
        log_filter: "error".into(),
        otlp_endpoint: None,
    };
    // The guard of a process-wide init is kept for the whole test binary.
    std::mem::forget(shopfds_telemetry::init(&settings).unwrap());
}

/// The ops router served on 127.0.0.1:0 through `ops::serve`.
pub struct TestOps {
    pub base_url: String,
    pub addr: std::net::SocketAddr,
    pub shutdown: CancellationToken,
    pub server: tokio::task::JoinHandle<std::io::Result<()>>,
}

pub async fn spawn_ops(readiness: Readiness) -> TestOps {
    spawn_ops_with(readiness, HttpServerSettings::default()).await
}

/// The ops router served through `ops::serve_with` with the given limits.
pub async fn spawn_ops_with(readiness: Readiness, settings: HttpServerSettings) -> TestOps {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let server = tokio::spawn(async move {
        shopfds_telemetry::ops::serve_with(listener, readiness, &settings, stop).await
    });
    TestOps {
        base_url: format!("http://{addr}"),
        addr,
        shutdown,
        server,
    }
}

pub fn ok_check() -> shopfds_telemetry::ops::Check {
    Arc::new(|| Box::pin(async { Ok(()) }))
}

pub fn failing_check(reason: &'static str) -> shopfds_telemetry::ops::Check {
    Arc::new(move || Box::pin(async move { Err(reason.to_owned()) }))
}

/// The value of the sample `name{labels…}` whose labels include every `label="value"` given.
pub fn sample_value(exposition: &str, name: &str, labels: &[&str]) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix('{')?;
        let (label_set, value) = rest.split_once("} ")?;
        labels
            .iter()
            .all(|label| label_set.split(',').any(|pair| pair == *label))
            .then(|| value.trim().parse().ok())?
    })
}
