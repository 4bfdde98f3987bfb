//! Smoke tests of the `report-worker` binary: start-up against real servers, the ops endpoints, the
//! topology, dead-lettering of tasks it has no handler for, SIGTERM, and settings errors.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use shopfds_testkit::service::{TestService, assert_invalid_variables_named, assert_operational};

const BIN: &str = env!("CARGO_BIN_EXE_report-worker");

#[tokio::test]
async fn serves_ops_declares_topology_dead_letters_unknown_tasks_and_stops_on_sigterm() {
    let mut service = TestService::spawn(BIN, &[]).await.unwrap();
    assert_operational(&service).await.unwrap();

    service
        .assert_unknown_tasks_dead_lettered(&["reports", "maintenance"])
        .await
        .unwrap();

    service.assert_stops_cleanly().await.unwrap();
}

#[tokio::test]
async fn an_invalid_variable_is_named_on_stderr_and_the_exit_is_non_zero() {
    assert_invalid_variables_named(
        BIN,
        &[
            ("QUEUE_TYPE", "bogus"),
            ("WORKER_CONCURRENCY", "0"),
            ("OPS_ADDR", "not-an-address"),
            ("DATABASE_URL", "mysql://nope"),
            ("BROKER_MAX_PRIORITY", "high"),
            ("WORKER_CONCURRENCY_REPORTS", "0"),
            ("WORKER_PREFETCH_MULTIPLIER_MAINTENANCE", "-1"),
            ("WORKER_MAX_MESSAGE_BYTES", "0"),
            ("WORKER_PREFETCH_BYTES", "lots"),
            ("WORKER_ETA_HORIZON_SECS", "-1"),
            ("REPORT_MAIL_TO", "not-an-address"),
        ],
    )
    .await
    .unwrap();
}
