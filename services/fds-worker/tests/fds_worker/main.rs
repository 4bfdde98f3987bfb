//! Smoke tests of the `fds-worker` binary: start-up against real servers, the ops endpoints, the
//! topology, dead-lettering of tasks it has no handler for, SIGTERM, and settings errors.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use shopfds_testkit::service::{
    TestService, assert_invalid_variables_named, assert_operational, run_with_env,
};
use shopfds_testkit::tls::{TestPki, path_str};

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
            ("DATABASE_CA_FILE", "/nonexistent/ca.pem"),
            ("BROKER_TLS_CA_FILE", "/nonexistent/ca.pem"),
            ("GRPC_TLS_CERT_FILE", "/nonexistent/cert.pem"),
            ("GRPC_TLS_CLIENT_CA_FILE", "/nonexistent/ca.pem"),
        ],
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_tls_key_that_does_not_parse_stops_the_start_naming_its_variable() {
    let pki = TestPki::new("fds-worker-bin").unwrap();
    let cert = path_str(&pki.server("fds-worker").unwrap().cert);
    let garbage = pki.dir().join("garbage.key");
    std::fs::write(&garbage, "not a key\n").unwrap();
    let garbage = path_str(&garbage);
    for (url, cert_variable, key_variable) in [
        (
            "amqps://guest:guest@127.0.0.1:5671/%2f",
            "BROKER_TLS_CERT_FILE",
            "BROKER_TLS_KEY_FILE",
        ),
        (
            "amqp://guest:guest@127.0.0.1:5672/%2f",
            "GRPC_TLS_CERT_FILE",
            "GRPC_TLS_KEY_FILE",
        ),
    ] {
        let (status, stderr) = run_with_env(
            BIN,
            &[
                ("BROKER_URL", url),
                (cert_variable, &cert),
                (key_variable, &garbage),
            ],
        )
        .await
        .unwrap();
        assert!(!status.success(), "{key_variable}: started anyway");
        assert!(stderr.contains(key_variable), "{key_variable}: {stderr}");
        assert!(stderr.contains("no PEM private key"), "{stderr}");
    }
}
