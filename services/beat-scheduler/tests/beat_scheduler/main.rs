//! Smoke tests of the `beat-scheduler` binary: start-up against real servers, the ops endpoints, the
//! topology it declares, SIGTERM, and settings errors.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod migrate;
mod replicas;

use std::time::{Duration, Instant};

use shopfds_testkit::net::TcpProxy;
use shopfds_testkit::rabbit::TestVhost;
use shopfds_testkit::service::{TestService, assert_invalid_variables_named, assert_operational};

const BIN: &str = env!("CARGO_BIN_EXE_beat-scheduler");

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

/// `broker` in `/readyz` is the state of the scheduler's own connection: ready while the
/// topology is declared on it, 503 once it is cut, ready again after it reconnects, and a probe
/// opens no connection (all broker traffic goes through a proxy that counts connections: two,
/// the topology's and the outbox relay's).
#[tokio::test]
async fn readyz_follows_its_own_connection_and_probes_open_none() {
    let vhost = tokio::task::spawn_blocking(TestVhost::create)
        .await
        .unwrap()
        .unwrap();
    let proxy = TcpProxy::open(([127, 0, 0, 1], 5672).into()).await.unwrap();
    let url = vhost
        .amqp_url()
        .replace(":5672/", &format!(":{}/", proxy.port()));
    let mut service = TestService::spawn_on(BIN, vhost, &[("BROKER_URL", url)])
        .await
        .unwrap();
    service.wait_ready(Duration::from_secs(30)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while proxy.accepted() < 2 {
        assert!(
            Instant::now() < deadline,
            "the relay did not connect: {}",
            service.child.describe()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..100 {
        assert_eq!(service.get("/readyz").await.unwrap().0, 200);
    }
    assert_eq!(proxy.accepted(), 2, "{}", service.child.describe());

    proxy.cut().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = service.get("/readyz").await.unwrap();
        if status == 503 {
            assert!(body.contains("not connected"), "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "still {status} {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    proxy.resume().await.unwrap();
    service.wait_ready(Duration::from_secs(30)).await.unwrap();
    service.assert_stops_cleanly().await.unwrap();
}
