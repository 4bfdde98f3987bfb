//! Smoke tests of the `dlq-reprocessor` binary: start-up against real servers, the ops endpoints, the
//! topology it declares, the dead-letter depths and connection state on `/metrics`, SIGTERM, and
//! settings errors.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod workbench;

use std::time::Duration;

use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use shopfds_testkit::service::{TestService, assert_invalid_variables_named, assert_operational};

const BIN: &str = env!("CARGO_BIN_EXE_dlq-reprocessor");

#[tokio::test]
async fn serves_ops_declares_topology_and_stops_on_sigterm() {
    let mut service = TestService::spawn(BIN, &[]).await.unwrap();
    assert_operational(&service).await.unwrap();
    service.assert_stops_cleanly().await.unwrap();
}

#[tokio::test]
async fn an_invalid_variable_is_named_on_stderr_and_the_exit_is_non_zero() {
    assert_invalid_variables_named(
        BIN,
        &[
            ("QUEUE_TYPE", "bogus"),
            ("BROKER_URL", "http://127.0.0.1:5672"),
            ("OPS_ADDR", "not-an-address"),
            ("DATABASE_URL", "mysql://nope"),
            ("DLQ_DEPTH_INTERVAL_SECS", "0"),
        ],
    )
    .await
    .unwrap();
}

/// The value of the sample `name{labels}` on a `/metrics` page.
fn sample(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn dead_letter_depths_and_the_connection_are_on_metrics() {
    let service = TestService::spawn(BIN, &[("DLQ_DEPTH_INTERVAL_SECS", "1".to_owned())])
        .await
        .unwrap();
    service.wait_ready(Duration::from_secs(30)).await.unwrap();
    let conn = service.vhost.connect().await.unwrap();
    let channel = conn.create_channel().await.unwrap();
    for n in 0..3 {
        channel
            .basic_publish(
                "".into(),
                "failed.email".into(),
                BasicPublishOptions::default(),
                format!("dead letter {n}").as_bytes(),
                BasicProperties::default(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let failed = r#"shopfds_dead_letter_messages{queue="failed.email"}"#;
    let parked = r#"shopfds_dead_letter_messages{queue="parked.email"}"#;
    let connected = r#"shopfds_broker_connected{connection="topology"}"#;
    let opened = r#"shopfds_broker_connects_total{outcome="opened"}"#;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let page = loop {
        let (_, page) = service.get("/metrics").await.unwrap();
        if sample(&page, failed) == Some(3.0) {
            break page;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "failed.email never read as 3 deep:\n{page}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(sample(&page, parked), Some(0.0), "{page}");
    assert_eq!(sample(&page, connected), Some(1.0), "{page}");
    // Readings share one connection: more of them open no more connections.
    let before = sample(&page, opened).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        channel
            .basic_publish(
                "".into(),
                "failed.email".into(),
                BasicPublishOptions::default(),
                b"one more",
                BasicProperties::default(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        let (_, page) = service.get("/metrics").await.unwrap();
        let depth = sample(&page, failed).unwrap();
        if depth >= 6.0 {
            assert_eq!(sample(&page, opened), Some(before), "{page}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{page}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
