//! Smoke tests of the `dlq-reprocessor` binary: start-up against real servers, the ops endpoints, the
//! topology it declares, SIGTERM, and settings errors.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod workbench;

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
        ],
    )
    .await
    .unwrap();
}
