//! Smoke tests of the `fds-worker` binary: start-up against real servers, the ops endpoints, the
//! topology, dead-lettering of tasks it has no handler for, SIGTERM, and settings errors.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use shopfds_testkit::service::{TestService, assert_invalid_variables_named, assert_operational};

const BIN: &str = env!("CARGO_BIN_EXE_fds-worker");

#[tokio::test]
async fn serves_ops_declares_topology_dead_letters_unknown_tasks_and_stops_on_sigterm() {
    // Not the default 50051: tests and a developer's running service must not collide.
    let grpc_addr = format!("127.0.0.1:{}", shopfds_testkit::free_port());
    let mut service = TestService::spawn(BIN, &[("GRPC_ADDR", grpc_addr)])
        .await
        .unwrap();
    assert_operational(&service).await.unwrap();

    service
        .assert_unknown_tasks_dead_lettered(&["fds"])
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
            ("GRPC_ADDR", "not-an-address"),
            ("GRPC_CONCURRENCY", "0"),
            ("FDS_RULES_RELOAD_SECS", "soon"),
            ("FDS_RULES_PATH", "/nonexistent/rules.toml"),
            ("FDS_VELOCITY_SOURCE", "redis"),
        ],
    )
    .await
    .unwrap();
}
