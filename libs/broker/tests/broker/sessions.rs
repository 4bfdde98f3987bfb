//! The worker's connect / declare / consume loop when the broker refuses the topology or never
//! answers: it backs off instead of spinning, and the shutdown token stops it at any point; and
//! `/readyz`, which reports that loop's state without opening a connection of its own.
//! All broker traffic of the worker under test goes through a `TcpProxy`, which counts the
//! connections the worker opened.

use std::time::Duration;

use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable, LongString};
use serde_json::Value;
use shopfds_broker::{BrokerError, BrokerSettings, BrokerState, Registry, Worker};
use shopfds_store::{DatabaseSettings, Store};
use shopfds_testkit::net::TcpProxy;
use shopfds_testkit::pg::TestDatabase;
use shopfds_testkit::rabbit::TestVhost;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::helpers::{QUEUE, worker_settings};

/// How long `Worker::run` may take to return once its token is cancelled, outside a drain.
const PROMPT: Duration = Duration::from_secs(3);

/// A vhost where `default` was declared first by someone else with another dead-letter routing
/// key (celery issue 6509), and a database for the worker's results.
struct Conflict {
    vhost: TestVhost,
    store: Store,
    _db: TestDatabase,
}

async fn vhost_with_conflicting_default_queue() -> Conflict {
    shopfds_testkit::init_tracing();
    let vhost = tokio::task::spawn_blocking(TestVhost::create)
        .await
        .unwrap()
        .expect("create vhost");
    let conn = vhost.connect().await.unwrap();
    let channel = conn.create_channel().await.unwrap();
    let mut args = FieldTable::default();
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(LongString::from("dlx")),
    );
    args.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(LongString::from("failed.elsewhere")),
    );
    channel
        .queue_declare(
            QUEUE.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            args,
        )
        .await
        .unwrap();
    let _ = conn.close(200, "pre-declared".into()).await;
    let db = TestDatabase::create().await.expect("create database");
    let store = Store::connect(&DatabaseSettings::with_url(db.url()))
        .await
        .expect("connect and migrate the store");
    Conflict {
        vhost,
        store,
        _db: db,
    }
}

/// Broker settings for `vhost` reached through `proxy`, with the default backoff.
fn through(proxy: &TcpProxy, vhost: &TestVhost) -> BrokerSettings {
    let url = vhost
        .amqp_url()
        .replace(":5672/", &format!(":{}/", proxy.port()));
    BrokerSettings::with_url(url, "broker-test")
}

struct Running {
    shutdown: CancellationToken,
    handle: JoinHandle<Result<(), BrokerError>>,
    state: watch::Receiver<BrokerState>,
}

fn run_worker(broker: BrokerSettings, store: &Store) -> Running {
    let worker = Worker::new(
        broker,
        worker_settings(),
        Registry::new(),
        shopfds_results::postgres(store),
    );
    let state = worker.broker_state();
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(worker.run(shutdown.clone()));
    Running {
        shutdown,
        handle,
        state,
    }
}

/// Waits until the worker reports a state `accept` takes.
async fn wait_for_state(
    state: &mut watch::Receiver<BrokerState>,
    accept: impl FnMut(&BrokerState) -> bool,
) -> BrokerState {
    let seen = tokio::time::timeout(Duration::from_secs(30), state.wait_for(accept))
        .await
        .map(|found| found.map(|s| s.clone()));
    match seen {
        Ok(found) => found.expect("the worker is gone"),
        Err(_) => panic!("state still {:?}", *state.borrow()),
    }
}

/// Cancels the worker's token and fails unless `run` returns `Ok` within [`PROMPT`].
async fn assert_stops_promptly(worker: Running) {
    let asked = Instant::now();
    worker.shutdown.cancel();
    let outcome = tokio::time::timeout(PROMPT, worker.handle)
        .await
        .unwrap_or_else(|_| panic!("Worker::run still running {PROMPT:?} after shutdown"))
        .expect("the worker task panicked");
    assert!(outcome.is_ok(), "{outcome:?}");
    tracing::info!(took = ?asked.elapsed(), "worker stopped");
}

async fn wait_for_accepts(proxy: &TcpProxy, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while proxy.accepted() < n {
        assert!(Instant::now() < deadline, "the worker never connected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_queue_declared_with_other_arguments_makes_the_worker_back_off_not_spin() {
    let conflict = vhost_with_conflicting_default_queue().await;
    let proxy = TcpProxy::open(([127, 0, 0, 1], 5672).into()).await.unwrap();
    let mut worker = run_worker(through(&proxy, &conflict.vhost), &conflict.store);

    // What the operator sees (`/readyz` shows this state): the queue and the argument.
    let state = wait_for_state(&mut worker.state, |s| {
        matches!(s, BrokerState::Disconnected(_))
    })
    .await;
    let reason = state.to_string();
    for needle in [
        "queue \"default\"",
        "inequivalent arg 'x-dead-letter-routing-key'",
        "failed.elsewhere",
        "delete the queue",
    ] {
        assert!(reason.contains(needle), "{needle:?} not in {reason:?}");
    }

    // The declare fails on every connection. Backoff from 200 ms doubling, each wait drawn in the
    // upper half of its step (equal jitter), allows attempts at the earliest at 0, 0.1, 0.3, 0.7
    // and 1.5 s (then 3.1 s); without it the worker reconnects ~20 times a second.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let connections = proxy.accepted();
    assert!(
        connections <= 6,
        "{connections} connections in 3 s: no backoff between failed sessions"
    );
    assert!(!worker.state.borrow().is_ready());

    assert_stops_promptly(worker).await;
}

#[tokio::test]
async fn shutdown_stops_a_worker_whose_broker_accepts_tcp_but_never_answers() {
    // A server that accepts connections and never speaks AMQP: the connect waits for a greeting.
    let silent = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let port = silent.local_addr().unwrap().port();
    let (accepted_tx, accepted) = tokio::sync::oneshot::channel();
    let server = tokio::spawn(async move {
        let held = silent.accept().await;
        let _ = accepted_tx.send(());
        // Hold the socket open, silent, until the test ends.
        std::future::pending::<()>().await;
        drop(held);
    });
    let db = TestDatabase::create().await.expect("create database");
    let store = Store::connect(&DatabaseSettings::with_url(db.url()))
        .await
        .unwrap();
    let broker = BrokerSettings::with_url(
        format!("amqp://guest:guest@127.0.0.1:{port}/%2f"),
        "broker-test",
    );
    let worker = run_worker(broker, &store);
    tokio::time::timeout(Duration::from_secs(30), accepted)
        .await
        .expect("the worker never connected")
        .unwrap();
    assert_eq!(*worker.state.borrow(), BrokerState::Connecting);
    assert_stops_promptly(worker).await;
    server.abort();
}

#[tokio::test]
async fn shutdown_stops_a_worker_caught_in_the_failing_declare_loop() {
    let conflict = vhost_with_conflicting_default_queue().await;
    let proxy = TcpProxy::open(([127, 0, 0, 1], 5672).into()).await.unwrap();
    let worker = run_worker(through(&proxy, &conflict.vhost), &conflict.store);
    wait_for_accepts(&proxy, 2).await;
    assert_stops_promptly(worker).await;
}

/// `GET /readyz` until it answers `status` with a body `accept` takes; that body.
async fn wait_for_readyz(base: &str, status: u16, mut accept: impl FnMut(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let response = reqwest::get(format!("{base}/readyz")).await.unwrap();
        let got = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        if got == status && accept(&body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz still {got} {body}, waiting for {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn readyz_reports_the_workers_own_connection_and_probes_open_no_connection() {
    shopfds_testkit::init_tracing();
    let vhost = tokio::task::spawn_blocking(TestVhost::create)
        .await
        .unwrap()
        .unwrap();
    let db = TestDatabase::create().await.unwrap();
    let store = Store::connect(&DatabaseSettings::with_url(db.url()))
        .await
        .unwrap();
    // Every connection of the worker goes through the proxy, closed at first.
    let proxy = TcpProxy::closed(([127, 0, 0, 1], 5672).into());
    let mut broker = through(&proxy, &vhost);
    broker.reconnect_max = Duration::from_millis(500);
    let ops = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let base = format!("http://{}", ops.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    // Wired as the service shell wires every worker (libs/service `spawn_worker`).
    let worker = Worker::new(
        broker,
        worker_settings(),
        Registry::new(),
        shopfds_results::postgres(&store),
    );
    let readiness = shopfds_broker::ops::readiness(
        shopfds_results::database_check(&store),
        worker.broker_state(),
    );
    let ops_server = tokio::spawn(shopfds_telemetry::ops::serve(
        ops,
        readiness,
        shutdown.clone(),
    ));
    let handle = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { worker.run(shutdown).await }
    });

    // The broker is unreachable: not ready, with the reason; the database is fine.
    let body = wait_for_readyz(&base, 503, |b| {
        b["checks"]["broker"]
            .as_str()
            .is_some_and(|r| r.contains("not connected") && r.contains("refused"))
    })
    .await;
    assert_eq!(body["checks"]["database"], "ok", "{body}");

    proxy.resume().await.unwrap();
    wait_for_readyz(&base, 200, |b| b["checks"]["broker"] == "ok").await;
    assert_eq!(proxy.accepted(), 1, "the worker's own connection only");
    for _ in 0..100 {
        let response = reqwest::get(format!("{base}/readyz")).await.unwrap();
        assert_eq!(response.status(), 200);
    }
    assert_eq!(
        proxy.accepted(),
        1,
        "a readiness probe opened a broker connection"
    );

    // The worker's connection is cut: not ready until it consumes again.
    proxy.cut().await;
    wait_for_readyz(&base, 503, |b| {
        b["checks"]["broker"]
            .as_str()
            .is_some_and(|r| r.contains("not connected"))
    })
    .await;
    proxy.resume().await.unwrap();
    wait_for_readyz(&base, 200, |b| b["checks"]["broker"] == "ok").await;

    shutdown.cancel();
    let outcome = tokio::time::timeout(PROMPT, handle)
        .await
        .expect("the worker did not stop")
        .unwrap();
    assert!(outcome.is_ok(), "{outcome:?}");
    ops_server.await.unwrap().unwrap();
}
