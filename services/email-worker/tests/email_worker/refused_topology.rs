//! The binary when RabbitMQ refuses its topology: queue `default` was declared first with
//! another dead-letter routing key (celery issue 6509). The worker must say which queue and
//! argument, back off between attempts instead of reconnecting in a tight loop, stay unready,
//! and exit 0 promptly on SIGTERM.

use std::time::{Duration, Instant};

use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable, LongString};
use shopfds_testkit::rabbit::TestVhost;
use shopfds_testkit::service::TestService;

const BIN: &str = env!("CARGO_BIN_EXE_email-worker");

async fn vhost_with_conflicting_default_queue() -> TestVhost {
    let vhost = tokio::task::spawn_blocking(TestVhost::create)
        .await
        .unwrap()
        .unwrap();
    let conn = vhost.connect().await.unwrap();
    let channel = conn.create_channel().await.unwrap();
    let mut args = FieldTable::default();
    for (key, value) in [
        ("x-dead-letter-exchange", "dlx"),
        ("x-dead-letter-routing-key", "failed.elsewhere"),
    ] {
        args.insert(key.into(), AMQPValue::LongString(LongString::from(value)));
    }
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare("default".into(), durable, args)
        .await
        .unwrap();
    let _ = conn.close(200, "pre-declared".into()).await;
    vhost
}

/// `shopfds_broker_connects_total{outcome="opened"}` from `/metrics` (0 before the first).
async fn connections_opened(service: &TestService) -> u64 {
    let (_, metrics) = service.get("/metrics").await.unwrap();
    metrics
        .lines()
        .find(|l| l.starts_with("shopfds_broker_connects_total{outcome=\"opened\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_refused_topology_is_named_retried_with_backoff_and_sigterm_exits_0() {
    let vhost = vhost_with_conflicting_default_queue().await;
    let mut service = TestService::spawn_on(BIN, vhost, &[]).await.unwrap();

    // Logged at error level, naming the queue and the argument, with the operator's options.
    service
        .child
        .wait_for_log("cannot start consuming", Duration::from_secs(30))
        .await
        .unwrap();
    let log = service.child.log();
    let line = log
        .lines()
        .find(|l| l.contains("cannot start consuming"))
        .unwrap();
    for needle in [
        "ERROR",
        "queue \"default\"",
        "inequivalent arg 'x-dead-letter-routing-key'",
        "failed.elsewhere",
        "delete the queue",
    ] {
        assert!(line.contains(needle), "{needle:?} not in {line}");
    }

    // Not ready, and the probe says why.
    let (status, body) = service.get("/readyz").await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("inequivalent arg"), "{body}");

    // Backoff (200 ms doubling, each wait in the upper half of its step) allows at most 5
    // connections in a 3 s window after the first; the bug made ~70.
    let before = connections_opened(&service).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let opened = connections_opened(&service).await - before;
    assert!(
        opened <= 5,
        "{opened} connections opened in 3 s: {}",
        service.child.describe()
    );

    let asked = Instant::now();
    let status = service.terminate().await.unwrap();
    assert!(
        status.success(),
        "exit {status}: {}",
        service.child.describe()
    );
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "SIGTERM took {:?}",
        asked.elapsed()
    );
}
