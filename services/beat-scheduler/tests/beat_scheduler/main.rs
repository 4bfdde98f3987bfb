//! Smoke tests of the `beat-scheduler` binary: start-up against real servers, the ops endpoints, the
//! topology it declares, SIGTERM, and settings errors.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;

use helpers::{run_with_env, spawn_service};
use serde_json::Value;

#[tokio::test]
async fn serves_ops_declares_topology_and_stops_on_sigterm() {
    let mut service = spawn_service().await;

    assert!(service.applied_migrations().await > 0);
    let (status, body) = service.get("/readyz").await;
    assert_eq!(status, 200, "{body}");
    let ready: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["checks"]["database"], "ok", "{body}");
    assert_eq!(ready["checks"]["broker"], "ok", "{body}");
    let (status, metrics) = service.get("/metrics").await;
    assert_eq!(status, 200);
    assert!(metrics.contains("shopfds_"), "{metrics}");

    service.wait_for_queue("failed.fds").await;
    for queue in ["default", "email", "fds", "reports", "maintenance"] {
        assert!(service.vhost.queue_depth(queue).is_ok(), "{queue}");
        assert!(
            service
                .vhost
                .queue_depth(&format!("failed.{queue}"))
                .is_ok(),
            "{queue}"
        );
    }

    let status = service.terminate().await;
    assert!(
        status.success(),
        "exit {status}: {}",
        service.child.describe()
    );
}

#[tokio::test]
async fn an_invalid_variable_is_named_on_stderr_and_the_exit_is_non_zero() {
    for (variable, value) in [
        ("QUEUE_TYPE", "bogus"),
        ("BROKER_URL", "http://127.0.0.1:5672"),
        ("OPS_ADDR", "not-an-address"),
        ("DATABASE_URL", "mysql://nope"),
    ] {
        let (status, stderr) = run_with_env(&[(variable, value)]).await;
        assert!(!status.success(), "{variable}={value} accepted");
        assert!(stderr.contains(variable), "{variable}: {stderr}");
    }
}
