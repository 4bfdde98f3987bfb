//! Integration tests of `shopfds-telemetry` against real servers: an OTLP/gRPC collector on a
//! loopback port, the ops endpoints over HTTP, and `init` in a child process of this test binary
//! (the global subscriber can be installed once per process).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report (the workspace rule exempts tests)"
)]

mod helpers;

use std::collections::HashMap;
use std::sync::Arc;

use helpers::{
    TestCollector, failing_check, init_telemetry, ok_check, sample_value, spawn_collector,
    spawn_ops, spawn_ops_with,
};
use lapin::types::{AMQPValue, FieldTable};
use opentelemetry::trace::{SpanContext, TraceContextExt as _, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use shopfds_telemetry::ops::Readiness;
use shopfds_telemetry::server::HttpServerSettings;
use shopfds_telemetry::{LogFormat, TelemetryError, TelemetrySettings, metrics, propagation};
use shopfds_testkit::raw_http::RawHttp;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::layer::SubscriberExt as _;

// ---------------------------------------------------------------------------------------------
// Propagation

/// A tracer provider of our own exporting to `collector`, and a subscriber using it, so spans can
/// be inspected as a remote backend sees them without touching the global subscriber.
fn traced(
    collector: &TestCollector,
) -> (SdkTracerProvider, impl tracing::Subscriber + Send + Sync) {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(collector.endpoint.clone())
        .build()
        .unwrap();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("propagation-test")));
    (provider, subscriber)
}

/// Blocks on the export, which needs this runtime's other worker to drive the tonic channel.
async fn flush(provider: &SdkTracerProvider) {
    let provider = provider.clone();
    tokio::task::spawn_blocking(move || provider.force_flush())
        .await
        .unwrap()
        .unwrap();
}

fn ids(span_context: &SpanContext) -> (String, String) {
    (
        span_context.trace_id().to_string(),
        span_context.span_id().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_headers_carry_the_publisher_span_to_the_consumer_span() {
    init_telemetry();
    let collector = spawn_collector().await;
    let (provider, subscriber) = traced(&collector);

    let (publisher, headers) = tracing::subscriber::with_default(subscriber, || {
        let publish = tracing::info_span!("publish order_confirmation");
        let headers = publish.in_scope(|| {
            let mut headers = FieldTable::default();
            propagation::inject_amqp(&mut headers);
            headers
        });
        let publisher = ids(publish.context().span().span_context());

        let consume = tracing::info_span!("run send_order_confirmation_email");
        propagation::set_parent_from_amqp(&consume, &headers);
        consume.in_scope(|| tracing::info!("sending"));
        (publisher, headers)
    });
    flush(&provider).await;

    match headers.inner().get("traceparent") {
        Some(AMQPValue::LongString(value)) => {
            assert!(value.to_string().starts_with("00-"), "{value}")
        }
        other => panic!("traceparent should be a long string, got {other:?}"),
    }
    let consumer = collector
        .span_named("run send_order_confirmation_email")
        .unwrap();
    assert_eq!(consumer.trace_id, publisher.0, "same trace");
    assert_eq!(
        consumer.parent_span_id, publisher.1,
        "publisher is the parent"
    );
    let published = collector.span_named("publish order_confirmation").unwrap();
    assert_eq!(published.span_id, publisher.1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn string_pairs_carry_the_current_span_and_ignore_garbage() {
    init_telemetry();
    assert!(
        propagation::current_context_headers().is_empty(),
        "no span, no context"
    );
    let collector = spawn_collector().await;
    let (provider, subscriber) = traced(&collector);

    let (outbox, headers) = tracing::subscriber::with_default(subscriber, || {
        let request = tracing::info_span!("POST /v1/orders");
        let headers = request.in_scope(propagation::current_context_headers);
        let outbox = ids(request.context().span().span_context());

        // An HTTP server sees header names in any case.
        let relayed: HashMap<String, String> = headers
            .iter()
            .map(|(name, value)| (name.to_uppercase(), value.clone()))
            .collect();
        let relay = tracing::info_span!("relay outbox row");
        propagation::set_parent_from_headers(&relay, &relayed);
        relay.in_scope(|| {});

        let garbage = HashMap::from([("traceparent".to_owned(), "00-not-a-trace-01".to_owned())]);
        let orphan = tracing::info_span!("orphan");
        propagation::set_parent_from_headers(&orphan, &garbage);
        orphan.in_scope(|| {});
        (outbox, headers)
    });
    flush(&provider).await;

    assert_eq!(
        headers.keys().collect::<Vec<_>>(),
        ["traceparent"],
        "an empty tracestate is left out"
    );
    let relay = collector.span_named("relay outbox row").unwrap();
    assert_eq!(relay.trace_id, outbox.0);
    assert_eq!(relay.parent_span_id, outbox.1);
    let orphan = collector.span_named("orphan").unwrap();
    assert!(orphan.parent_span_id.is_empty(), "{orphan:?} is a root");
    assert_ne!(orphan.trace_id, outbox.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_headers_carry_the_client_span_to_the_server_span() {
    init_telemetry();
    let collector = spawn_collector().await;
    let (provider, subscriber) = traced(&collector);

    let (client, headers, trace_id) = tracing::subscriber::with_default(subscriber, || {
        let call = tracing::info_span!("fds.v1.FraudDetection/Score");
        let mut headers = axum::http::HeaderMap::new();
        call.in_scope(|| propagation::inject_http(&mut headers));
        let client = ids(call.context().span().span_context());

        let serve = tracing::info_span!("serve Score");
        propagation::set_parent_from_http(&serve, &headers);
        serve.in_scope(|| {});
        (client, headers, propagation::trace_id(&serve))
    });
    flush(&provider).await;

    let traceparent = headers["traceparent"].to_str().unwrap();
    assert!(traceparent.contains(&client.0), "{traceparent}");
    assert_eq!(trace_id.as_deref(), Some(client.0.as_str()));
    let server = collector.span_named("serve Score").unwrap();
    assert_eq!(server.trace_id, client.0);
    assert_eq!(server.parent_span_id, client.1);
}

// ---------------------------------------------------------------------------------------------
// init and OTLP export, in a child process

const CHILD_MARKER: &str = "SHOPFDS_TELEMETRY_TEST_CHILD";

/// Runs `otlp_export_child` in a fresh process configured only through the environment, the way a
/// binary starts, and checks what reached the collector once the child's guard was dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_exports_spans_over_otlp_and_flushes_on_drop() {
    let collector = spawn_collector().await;
    let service_name = format!("telemetry-test-{}", std::process::id());
    let output = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args(["otlp_export_child", "--exact", "--ignored", "--nocapture"])
        .env(CHILD_MARKER, "1")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.endpoint)
        .env("OTEL_SERVICE_NAME", &service_name)
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let checkout = collector.span_named("checkout").unwrap();
    assert_eq!(
        checkout.service_name.as_deref(),
        Some(service_name.as_str())
    );
    assert_eq!(checkout.service_version.as_deref(), Some("9.8.7"));
    let child = collector.span_named("score order").unwrap();
    assert_eq!(child.trace_id, checkout.trace_id);
    assert_eq!(child.parent_span_id, checkout.span_id);
    assert!(
        collector
            .spans()
            .iter()
            .all(|span| span.name != "too verbose"),
        "RUST_LOG=info filters debug spans out of the export"
    );

    let log = stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|line| line["fields"]["message"] == "order accepted")
        .unwrap_or_else(|| panic!("no JSON log line in {stdout}"));
    assert_eq!(log["level"], "INFO");
    assert_eq!(log["span"]["name"], "score order");
    assert_eq!(log["trace_id"], child.trace_id.as_str(), "{log}");
    assert_eq!(log["span_id"], child.span_id.as_str(), "{log}");
}

#[test]
#[ignore = "run by init_exports_spans_over_otlp_and_flushes_on_drop in a child process"]
fn otlp_export_child() {
    if std::env::var_os(CHILD_MARKER).is_none() {
        eprintln!("otlp_export_child only runs as a child of its parent test");
        return;
    }
    let settings = TelemetrySettings::read(&shopfds_config::Env::process(), "default-name")
        .unwrap()
        .with_version("9.8.7");
    let guard = shopfds_telemetry::init(&settings).unwrap();
    // A second init (a test helper, a library) must neither fail nor replace the first.
    drop(shopfds_telemetry::init(&settings).unwrap());
    {
        let checkout = tracing::info_span!("checkout", order_id = 42);
        let _checkout = checkout.enter();
        let score = tracing::info_span!("score order");
        let _score = score.enter();
        tracing::debug_span!("too verbose").in_scope(|| {});
        tracing::info!("order accepted");
    }
    // No explicit flush: the batch processor would hold the spans for seconds, so only the guard's
    // drop gets them out before the process exits.
    drop(guard);
}

// ---------------------------------------------------------------------------------------------
// Settings

fn lookup(vars: &[(&str, &str)]) -> shopfds_config::Env {
    shopfds_config::Env::from_pairs(vars.iter().copied())
}

#[test]
fn settings_default_to_pretty_info_and_no_export() {
    let settings = TelemetrySettings::read(&lookup(&[]), "order-api").unwrap();
    assert_eq!(
        settings,
        TelemetrySettings {
            service_name: "order-api".into(),
            service_version: String::new(),
            log_format: LogFormat::Pretty,
            log_filter: "info".into(),
            otlp_endpoint: None,
        }
    );
    let blank = TelemetrySettings::read(
        &lookup(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " "), ("LOG_FORMAT", "")]),
        "order-api",
    )
    .unwrap();
    assert_eq!(blank, settings, "empty variables count as unset");
}

#[test]
fn settings_read_every_variable() {
    let settings = TelemetrySettings::read(
        &lookup(&[
            ("LOG_FORMAT", "JSON"),
            ("RUST_LOG", "debug,h2=warn"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://jaeger:4317"),
            ("OTEL_SERVICE_NAME", "order-api-canary"),
        ]),
        "order-api",
    )
    .unwrap();
    assert_eq!(
        settings,
        TelemetrySettings {
            service_name: "order-api-canary".into(),
            service_version: String::new(),
            log_format: LogFormat::Json,
            log_filter: "debug,h2=warn".into(),
            otlp_endpoint: Some("http://jaeger:4317".into()),
        }
    );
}

#[test]
fn a_bad_log_format_names_the_variable() {
    let error =
        TelemetrySettings::read(&lookup(&[("LOG_FORMAT", "xml")]), "order-api").unwrap_err();
    assert_eq!(error.variable, "LOG_FORMAT");
    let message = error.to_string();
    assert!(
        message.contains("LOG_FORMAT") && message.contains("xml"),
        "{message}"
    );
}

#[test]
fn init_rejects_an_invalid_filter() {
    let settings = TelemetrySettings {
        service_name: "order-api".into(),
        service_version: String::new(),
        log_format: LogFormat::Pretty,
        log_filter: "info,[{=".into(),
        otlp_endpoint: None,
    };
    let error = shopfds_telemetry::init(&settings).unwrap_err();
    assert!(
        matches!(error, TelemetryError::InvalidLogFilter { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("RUST_LOG"), "{error}");
}

// ---------------------------------------------------------------------------------------------
// Ops endpoints and metrics

#[tokio::test]
async fn healthz_is_ok_without_looking_at_dependencies() {
    let ops = spawn_ops(Readiness::new().with("database", failing_check("down"))).await;
    let response = reqwest::get(format!("{}/healthz", ops.base_url))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body, serde_json::json!({ "status": "ok" }));
}

#[tokio::test]
async fn readyz_is_503_naming_the_failing_check() {
    let readiness = Readiness::new().with("database", ok_check()).with(
        "broker",
        failing_check("connection refused (127.0.0.1:5672)"),
    );
    let ops = spawn_ops(readiness).await;
    let response = reqwest::get(format!("{}/readyz", ops.base_url))
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({
            "status": "unavailable",
            "checks": { "database": "ok", "broker": "connection refused (127.0.0.1:5672)" },
        })
    );
}

#[tokio::test]
async fn readyz_is_200_when_every_check_passes() {
    let readiness = Readiness::new()
        .with("database", ok_check())
        .with("broker", ok_check());
    let ops = spawn_ops(readiness).await;
    let response = reqwest::get(format!("{}/readyz", ops.base_url))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({ "status": "ready", "checks": { "database": "ok", "broker": "ok" } })
    );
}

#[tokio::test]
async fn readiness_checks_run_concurrently_and_time_out() {
    // Each check only passes once the other one has started: run one after the other, the first
    // would wait for the second until its timeout.
    let barrier = Arc::new(tokio::sync::Barrier::new(2));
    let meet = || -> shopfds_telemetry::ops::Check {
        let barrier = barrier.clone();
        Arc::new(move || {
            let barrier = barrier.clone();
            Box::pin(async move {
                barrier.wait().await;
                Ok(())
            })
        })
    };
    let hung: shopfds_telemetry::ops::Check = Arc::new(|| Box::pin(futures::future::pending()));
    let readiness = Readiness::new()
        .with("database", meet())
        .with("broker", meet())
        .with("smtp", hung);

    let started = std::time::Instant::now();
    let results = readiness.run().await;
    assert!(started.elapsed() < std::time::Duration::from_secs(4));
    assert_eq!(
        results,
        vec![
            ("database".to_owned(), Ok(())),
            ("broker".to_owned(), Ok(())),
            ("smtp".to_owned(), Err("timed out after 2s".to_owned())),
        ]
    );
}

#[tokio::test]
async fn metrics_endpoint_exposes_the_registry() {
    metrics::tasks_total()
        .with_label_values(&["email", "metrics_endpoint_test", "succeeded"])
        .inc();
    let ops = spawn_ops(Readiness::new()).await;
    let response = reqwest::get(format!("{}/metrics", ops.base_url))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4"
    );
    let body = response.text().await.unwrap();
    assert_eq!(
        sample_value(
            &body,
            "shopfds_tasks_total",
            &[
                r#"queue="email""#,
                r#"task="metrics_endpoint_test""#,
                r#"outcome="succeeded""#
            ],
        ),
        Some(1.0),
        "{body}"
    );
}

#[test]
fn every_collector_is_registered_once() {
    metrics::tasks_total()
        .with_label_values(&["fds", "registry_test", "dead_lettered"])
        .inc();
    metrics::task_duration_seconds()
        .with_label_values(&["fds", "registry_test"])
        .observe(0.2);
    metrics::messages_published_total()
        .with_label_values(&["registry_test"])
        .inc();
    metrics::outbox_pending().set(3);
    metrics::http_requests_total()
        .with_label_values(&["GET", "/registry_test", "200"])
        .inc();
    metrics::http_request_duration_seconds()
        .with_label_values(&["GET", "/registry_test"])
        .observe(0.01);
    metrics::task_wait_seconds()
        .with_label_values(&["fds", "registry_test", metrics::phase::BROKER])
        .observe(0.01);
    metrics::tasks_in_flight()
        .with_label_values(&["fds"])
        .set(1);
    metrics::prefetched_messages()
        .with_label_values(&["fds"])
        .set(2);

    let mut names: Vec<String> = metrics::registry()
        .gather()
        .iter()
        .map(|family| family.name().to_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "shopfds_http_request_duration_seconds",
            "shopfds_http_requests_total",
            "shopfds_messages_published_total",
            "shopfds_outbox_pending",
            "shopfds_prefetched_messages",
            "shopfds_task_duration_seconds",
            "shopfds_task_wait_seconds",
            "shopfds_tasks_in_flight",
            "shopfds_tasks_total",
        ]
    );
    let text = metrics::render();
    assert!(text.contains("shopfds_outbox_pending 3"), "{text}");
    assert!(
        text.contains(
            r#"shopfds_task_duration_seconds_bucket{queue="fds",task="registry_test",le="300"} 1"#
        ),
        "task durations need buckets of minutes: {text}"
    );
}

#[tokio::test]
async fn track_http_labels_requests_with_the_route_template() {
    use axum::routing::get;
    let app = axum::Router::new()
        .route("/track_http_test/{id}", get(|| async { "order" }))
        .layer(axum::middleware::from_fn(metrics::track_http));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    for id in ["1", "2"] {
        let response = reqwest::get(format!("{base_url}/track_http_test/{id}"))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let missing = reqwest::Client::new()
        .delete(format!("{base_url}/no/such/route"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    let requests = metrics::http_requests_total();
    assert_eq!(
        requests
            .with_label_values(&["GET", "/track_http_test/{id}", "200"])
            .get(),
        2
    );
    assert_eq!(
        requests
            .with_label_values(&["DELETE", "unmatched", "404"])
            .get(),
        1
    );
    assert_eq!(
        metrics::http_request_duration_seconds()
            .with_label_values(&["GET", "/track_http_test/{id}"])
            .get_sample_count(),
        2
    );
}

#[tokio::test]
async fn serve_stops_when_shutdown_is_cancelled() {
    let ops = spawn_ops(Readiness::new()).await;
    let response = reqwest::get(format!("{}/healthz", ops.base_url))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    ops.shutdown.cancel();
    tokio::time::timeout(std::time::Duration::from_secs(5), ops.server)
        .await
        .expect("serve returns after cancellation")
        .unwrap()
        .unwrap();
    assert!(
        reqwest::get(format!("{}/healthz", ops.base_url))
            .await
            .is_err(),
        "the listener is closed"
    );
}

// ---------------------------------------------------------------------------------------------
// Slow and idle clients (the server loop of `shopfds_telemetry::server`)

/// Short limits, so a test sees them enforced in about a second.
fn short_header_timeout() -> HttpServerSettings {
    HttpServerSettings {
        header_read_timeout: std::time::Duration::from_secs(1),
        ..HttpServerSettings::default()
    }
}

/// A request head that never ends: a header line padded to take far longer than the timeout
/// when sent one byte every 100 ms (about 40 s).
fn endless_head() -> Vec<u8> {
    let mut head = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: ".to_vec();
    head.extend(std::iter::repeat_n(b'a', 360));
    head
}

#[tokio::test]
async fn a_client_trickling_its_request_head_is_disconnected() {
    let ops = spawn_ops_with(Readiness::new(), short_header_timeout()).await;
    let mut client = RawHttp::connect(ops.addr).await.unwrap();
    let open = client
        .trickle(&endless_head(), std::time::Duration::from_millis(100))
        .await;
    assert!(
        !open,
        "still connected after sending the whole head slowly; got {:?}",
        client.received()
    );
    let received = client.received();
    assert!(
        received.is_empty() || received.starts_with("HTTP/1.1 408"),
        "{received:?}"
    );
    // The server itself is unharmed.
    let response = reqwest::get(format!("{}/healthz", ops.base_url))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let ops = spawn_ops_with(Readiness::new(), short_header_timeout()).await;
    let mut client = RawHttp::connect(ops.addr).await.unwrap();
    client
        .send(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    assert!(
        client
            .closed_within(std::time::Duration::from_secs(30))
            .await,
        "an idle keep-alive connection stayed open; got {:?}",
        client.received()
    );
    assert!(
        client.received().starts_with("HTTP/1.1 200"),
        "{:?}",
        client.received()
    );
}

#[tokio::test]
async fn connections_past_the_cap_wait_until_one_closes() {
    let settings = HttpServerSettings {
        max_connections: 1,
        ..HttpServerSettings::default()
    };
    let ops = spawn_ops_with(Readiness::new(), settings).await;
    let first = RawHttp::connect(ops.addr).await.unwrap();
    let mut second = RawHttp::connect(ops.addr).await.unwrap();
    second
        .send(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    // Not answered while the only slot is taken...
    assert!(
        !second
            .closed_within(std::time::Duration::from_millis(500))
            .await
    );
    assert_eq!(second.received(), "");
    // ...and answered once it is free.
    drop(first);
    assert!(
        second
            .closed_within(std::time::Duration::from_secs(30))
            .await
    );
    assert!(
        second.received().starts_with("HTTP/1.1 200"),
        "{:?}",
        second.received()
    );
}
