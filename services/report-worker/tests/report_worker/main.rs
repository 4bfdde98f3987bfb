//! Smoke tests of the `report-worker` binary: start-up against real servers, the ops endpoints,
//! the topology, dead-lettering of tasks it has no handler for (on both of its queues), SIGTERM,
//! and settings errors.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;

use helpers::{header, run_with_env, spawn_service};
use serde_json::Value;

#[tokio::test]
async fn serves_ops_declares_topology_dead_letters_unknown_tasks_and_stops_on_sigterm() {
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
    service.wait_for_queue("failed.maintenance").await;

    let conn = service.vhost.connect().await.unwrap();
    for queue in ["reports", "maintenance"] {
        let task = format!("no_such_{queue}_task");
        let id = service.publish_task(&conn, &task, queue).await;
        let (properties, body) = service.get_message(&conn, &format!("failed.{queue}")).await;
        let reason = header(&properties, "x-shopfds-reason").expect("a reason header");
        assert!(
            reason.contains("unknown task") && reason.contains(&task),
            "{reason}"
        );
        assert_eq!(header(&properties, "id").as_deref(), Some(id.as_str()));
        assert!(body.is_array(), "the body is forwarded as is: {body}");
    }
    let _ = conn.close(200, "done".into()).await;

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
        ("WORKER_CONCURRENCY", "0"),
        ("OPS_ADDR", "not-an-address"),
        ("DATABASE_URL", "mysql://nope"),
    ] {
        let (status, stderr) = run_with_env(&[(variable, value)]).await;
        assert!(!status.success(), "{variable}={value} accepted");
        assert!(stderr.contains(variable), "{variable}: {stderr}");
    }
}
