//! Real servers for the telemetry tests: the test kit's OTLP/gRPC trace collector
//! (`shopfds_testkit::otlp`) and the ops router on a loopback port.

use std::sync::Arc;

use shopfds_telemetry::ops::Readiness;
use shopfds_telemetry::server::HttpServerSettings;
use shopfds_telemetry::{LogFormat, TelemetrySettings};
pub use shopfds_testkit::otlp::TestCollector;
use tokio_util::sync::CancellationToken;

/// The test kit's OTLP/gRPC collector on 127.0.0.1:0, on the calling test's runtime.
pub async fn spawn_collector() -> TestCollector {
    TestCollector::spawn().await.unwrap()
}

/// Installs the global subscriber (logs only, quiet) and the global W3C propagator, as a binary's
/// `main` would. Every test may call it: only the first call in the process installs anything.
pub fn init_telemetry() {
    let settings = TelemetrySettings {
        service_name: "telemetry-tests".into(),
        service_version: String::new(),
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
