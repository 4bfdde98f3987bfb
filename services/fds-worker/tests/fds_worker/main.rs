//! Smoke tests of the `fds-worker` binary: start-up against real servers, the ops endpoints, the
//! topology, dead-lettering of tasks it has no handler for, SIGTERM, and settings errors.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use shopfds_testkit::service::{
    TestService, assert_operational, header, publish_task, run_with_env, take_message,
};

const BIN: &str = env!("CARGO_BIN_EXE_fds-worker");

#[tokio::test]
async fn serves_ops_declares_topology_dead_letters_unknown_tasks_and_stops_on_sigterm() {
    // Not the default 50051: tests and a developer's running service must not collide.
    let grpc_addr = format!("127.0.0.1:{}", shopfds_testkit::free_port());
    let mut service = TestService::spawn(BIN, &[("GRPC_ADDR", grpc_addr)])
        .await
        .unwrap();
    assert_operational(&service).await.unwrap();

    let conn = service.vhost.connect().await.unwrap();
    for queue in ["fds"] {
        let task = format!("no_such_{queue}_task");
        let id = publish_task(&conn, &task, queue).await.unwrap();
        let (properties, body) = take_message(&conn, &format!("failed.{queue}"))
            .await
            .unwrap();
        let reason = header(&properties, "x-shopfds-reason").expect("a reason header");
        assert!(
            reason.contains("unknown task") && reason.contains(&task),
            "{reason}"
        );
        assert_eq!(header(&properties, "id").as_deref(), Some(id.as_str()));
        assert!(body.is_array(), "the body is forwarded as is: {body}");
    }
    let _ = conn.close(200, "done".into()).await;

    let status = service.terminate().await.unwrap();
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
        ("GRPC_ADDR", "not-an-address"),
        ("GRPC_CONCURRENCY", "0"),
        ("FDS_RULES_RELOAD_SECS", "soon"),
        ("FDS_RULES_PATH", "/nonexistent/rules.toml"),
    ] {
        let (status, stderr) = run_with_env(BIN, &[(variable, value)]).await.unwrap();
        assert!(!status.success(), "{variable}={value} accepted");
        assert!(stderr.contains(variable), "{variable}: {stderr}");
    }
}
