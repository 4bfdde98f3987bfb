//! Telemetry shared by every ShopFDS binary: structured logs (`tracing`, JSON or pretty), spans
//! exported over OTLP/gRPC, W3C trace context carried in HTTP and AMQP headers
//! ([`propagation`]), Prometheus collectors ([`metrics`]) and the `/healthz`, `/readyz`,
//! `/metrics` endpoints every binary serves ([`ops`]), and the HTTP server loop that serves them
//! and order-api's API with limits on slow and idle clients ([`server`]).
//!
//! A binary calls [`TelemetrySettings::read`] then [`init`] first thing in `main`, and keeps
//! the returned [`TelemetryGuard`] alive until it exits so buffered spans are flushed.
//!
//! Every span gets an OpenTelemetry trace and span id whether or not spans are exported, so
//! every log line written inside a span carries `trace_id` and `span_id` ([`logs`]) and trace
//! context is propagated to the next hop even when this process exports nothing. Exported
//! spans carry the resource attributes `service.name` and `service.version`.

pub mod http;
pub mod logs;
pub mod metrics;
pub mod ops;
pub mod propagation;
pub mod server;

use std::sync::Mutex;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use shopfds_config::{ConfigError, Env};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// How log lines are written to stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One JSON object per line, for log shippers in Kubernetes.
    Json,
    /// Human-readable, for a laptop.
    #[default]
    Pretty,
}

/// The telemetry section of every service's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetrySettings {
    /// `service.name` of exported spans.
    pub service_name: String,
    /// `service.version` of exported spans: the binary's own `CARGO_PKG_VERSION`, which only the
    /// binary knows (the service shell sets it from `ServiceSettings::VERSION`); empty leaves the
    /// attribute out.
    pub service_version: String,
    pub log_format: LogFormat,
    /// An `EnvFilter` directive string such as `info,shopfds_broker=debug`.
    pub log_filter: String,
    /// OTLP/gRPC collector endpoint, e.g. `http://127.0.0.1:4317`; `None` disables span export.
    pub otlp_endpoint: Option<String>,
}

impl TelemetrySettings {
    /// Reads `LOG_FORMAT` (`json` | `pretty`, default `pretty`), `RUST_LOG` (default `info`),
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` (unset or empty = no export) and `OTEL_SERVICE_NAME`
    /// (default `service_name`). `service_version` is left empty: see [`Self::with_version`].
    pub fn read(env: &Env, service_name: &str) -> Result<Self, ConfigError> {
        Ok(Self {
            service_name: env.string("OTEL_SERVICE_NAME", service_name),
            service_version: String::new(),
            log_format: env.choice(
                "LOG_FORMAT",
                LogFormat::default(),
                &[("json", LogFormat::Json), ("pretty", LogFormat::Pretty)],
            )?,
            log_filter: env.string("RUST_LOG", "info"),
            otlp_endpoint: env.get("OTEL_EXPORTER_OTLP_ENDPOINT"),
        })
    }
}

impl TelemetrySettings {
    /// The same settings with `service.version` = `version` (a binary's `CARGO_PKG_VERSION`).
    pub fn with_version(mut self, version: &str) -> Self {
        self.service_version = version.to_owned();
        self
    }
}

/// Everything that can go wrong while setting telemetry up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("invalid log filter {filter:?} (RUST_LOG): {source}")]
    InvalidLogFilter {
        filter: String,
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    #[error("cannot start the span export runtime: {0}")]
    ExportRuntime(#[source] std::io::Error),
    #[error("cannot build the OTLP span exporter for {endpoint}: {source}")]
    Exporter {
        endpoint: String,
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
    #[error("another global tracing subscriber is already installed: {0}")]
    SubscriberAlreadySet(#[source] tracing_subscriber::util::TryInitError),
    #[error("flushing spans failed: {0}")]
    Flush(#[source] opentelemetry_sdk::error::OTelSdkError),
}

/// Keeps span export alive. Dropping it flushes buffered spans and shuts the tracer provider down,
/// so `main` should hold it until the very end.
#[derive(Debug)]
#[must_use = "dropping the guard flushes and stops span export"]
pub struct TelemetryGuard {
    export: Option<SpanExport>,
}

/// The process's tracer provider; with `runtime` when spans are exported over OTLP (without,
/// spans get ids and are dropped when they end).
#[derive(Debug)]
struct SpanExport {
    provider: SdkTracerProvider,
    runtime: Option<tokio::runtime::Runtime>,
}

impl TelemetryGuard {
    /// Exports every span ended so far, blocking until the collector answered (or timed out).
    /// A no-op for a guard without export (no endpoint, or a second `init`).
    pub fn flush(&self) -> Result<(), TelemetryError> {
        match &self.export {
            Some(export) if export.runtime.is_some() => {
                export.provider.force_flush().map_err(TelemetryError::Flush)
            }
            _ => Ok(()),
        }
    }
}

impl Drop for SpanExport {
    fn drop(&mut self) {
        // The provider's export runs on `runtime`, so it must shut down first.
        if let Err(error) = self.provider.shutdown() {
            tracing::warn!(%error, "span export did not shut down cleanly");
        }
        if let Some(runtime) = self.runtime.take() {
            // `Runtime`'s own drop panics inside an async context, where `main` usually drops us.
            runtime.shutdown_background();
        }
    }
}

/// `init` installs process-wide state; this makes later calls no-ops instead of errors.
static INITIALIZED: Mutex<bool> = Mutex::new(false);

/// Installs the global `tracing` subscriber (fmt JSON or pretty with the trace and span ids of
/// [`logs`], filtered by `log_filter`, plus an OpenTelemetry layer giving every span its ids and
/// exporting spans over OTLP/gRPC through a batch processor when an endpoint is set) and the W3C
/// TraceContext propagator. Works with or without an ambient Tokio runtime.
///
/// Calling it again is a no-op that returns an inert guard, so every test may call it.
pub fn init(settings: &TelemetrySettings) -> Result<TelemetryGuard, TelemetryError> {
    // Validated before the no-op check so a bad `RUST_LOG` is reported whichever call sees it.
    let filter = EnvFilter::try_new(&settings.log_filter).map_err(|source| {
        TelemetryError::InvalidLogFilter {
            filter: settings.log_filter.clone(),
            source,
        }
    })?;
    let mut initialized = INITIALIZED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if *initialized {
        return Ok(TelemetryGuard { export: None });
    }

    let export = match &settings.otlp_endpoint {
        Some(endpoint) => span_export(settings, endpoint)?,
        // Ids for every span (log lines, X-Trace-Id, propagation), nothing exported.
        None => SpanExport {
            provider: SdkTracerProvider::builder()
                .with_resource(resource(settings))
                .build(),
            runtime: None,
        },
    };
    // The OpenTelemetry layer sits before the fmt layer: entering a span activates its context,
    // which the fmt layer's formatter reads for the ids.
    let otel = tracing_opentelemetry::layer()
        .with_tracer(export.provider.tracer(settings.service_name.clone()))
        .with_filter(tracing_subscriber::filter::filter_fn(|metadata| {
            !is_export_machinery(metadata.target())
        }));

    tracing_subscriber::registry()
        .with(filter)
        .with(otel)
        .with(logs::layer(settings.log_format))
        .try_init()
        .map_err(TelemetryError::SubscriberAlreadySet)?;

    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    // Libraries that use the OpenTelemetry API directly (not `tracing`) get the same provider.
    opentelemetry::global::set_tracer_provider(export.provider.clone());
    *initialized = true;
    Ok(TelemetryGuard {
        export: Some(export),
    })
}

/// `service.name` and, when known, `service.version` (plus what `OTEL_RESOURCE_ATTRIBUTES`
/// adds, read by the SDK's default detectors).
fn resource(settings: &TelemetrySettings) -> Resource {
    let mut builder = Resource::builder().with_service_name(settings.service_name.clone());
    if !settings.service_version.is_empty() {
        builder = builder.with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            settings.service_version.clone(),
        ));
    }
    builder.build()
}

/// Spans emitted while exporting (hyper, h2, tonic) would be exported in turn, feeding a loop that
/// never drains at `debug`/`trace` levels: they are logged but never turned into OTel spans.
fn is_export_machinery(target: &str) -> bool {
    const CRATES: [&str; 7] = [
        "h2",
        "hyper",
        "hyper_util",
        "tonic",
        "tower",
        "opentelemetry_sdk",
        "opentelemetry_otlp",
    ];
    let krate = target.split("::").next().unwrap_or(target);
    CRATES.contains(&krate)
}

fn span_export(settings: &TelemetrySettings, endpoint: &str) -> Result<SpanExport, TelemetryError> {
    // The tonic channel's connection task lives on its own small runtime rather than the
    // caller's: the batch processor flushes by blocking a thread on that task, which would
    // deadlock on a current-thread runtime (`#[tokio::test]`) and works without any runtime.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("otlp-export")
        .enable_all()
        .build()
        .map_err(TelemetryError::ExportRuntime)?;
    let exporter = {
        let _entered = runtime.enter();
        opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_timeout(Duration::from_secs(5))
            .build()
            .map_err(|source| TelemetryError::Exporter {
                endpoint: endpoint.to_owned(),
                source,
            })?
    };
    let provider = SdkTracerProvider::builder()
        .with_resource(resource(settings))
        .with_batch_exporter(exporter)
        .build();
    Ok(SpanExport {
        provider,
        runtime: Some(runtime),
    })
}
