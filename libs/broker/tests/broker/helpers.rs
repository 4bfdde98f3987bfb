//! A worker on its own vhost and database, and the polling helpers the tests share.

use std::future::Future;
use std::time::Duration;

use anyhow::{Context, bail};
use lapin::options::{BasicGetOptions, BasicPublishOptions};
use lapin::{BasicProperties, Connection};
use serde_json::{Map, Value};
use shopfds_broker::amqp::{json_to_table, table_to_json};
use shopfds_broker::{
    BrokerError, BrokerSettings, Publisher, QueueType, Registry, Worker, WorkerSettings, topology,
};
use shopfds_protocol::{TaskMessage, TaskState};
use shopfds_store::{DatabaseSettings, Store, TaskRecord};
use shopfds_testkit::pg::TestDatabase;
use shopfds_testkit::rabbit::TestVhost;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The queue the test workers consume.
pub const QUEUE: &str = "default";
pub const WAIT: Duration = Duration::from_secs(30);

/// A vhost with the whole topology declared, a migrated database, a publisher, and the worker(s)
/// running on them. Workers are stopped when the value drops (their tokens are cancelled).
pub struct TestWorker {
    pub store: Store,
    pub broker: BrokerSettings,
    pub publisher: Publisher,
    /// The test's own connection (publishing and reading queues).
    pub conn: Connection,
    pub worker: RunningWorker,
    pub vhost: TestVhost,
    pub _db: TestDatabase,
}

pub struct RunningWorker {
    pub shutdown: CancellationToken,
    handle: Option<JoinHandle<Result<(), BrokerError>>>,
}

impl RunningWorker {
    /// Cancels the token and waits for `Worker::run` to return (it closes its connection last).
    pub async fn stop(&mut self) -> Result<(), BrokerError> {
        self.shutdown.cancel();
        let handle = self.handle.take().expect("the worker was already stopped");
        tokio::time::timeout(WAIT, handle)
            .await
            .expect("the worker did not stop")
            .expect("the worker task panicked")
    }
}

impl RunningWorker {
    /// Waits for `Worker::run` to return by itself (e.g. after the `shutdown` control command).
    pub async fn wait(&mut self) -> Result<(), BrokerError> {
        let handle = self.handle.take().expect("the worker was already stopped");
        handle.await.expect("the worker task panicked")
    }
}

impl Drop for RunningWorker {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Test settings: the shared queue, a few tasks at once, a short grace period.
pub fn worker_settings() -> WorkerSettings {
    let mut settings = WorkerSettings::new("broker-test", &[QUEUE]);
    settings.concurrency = 4;
    settings.shutdown_grace = Duration::from_millis(300);
    settings
}

pub async fn spawn_worker(registry: Registry) -> TestWorker {
    spawn_worker_with(registry, worker_settings()).await
}

pub async fn spawn_worker_with(registry: Registry, settings: WorkerSettings) -> TestWorker {
    spawn_worker_on(registry, settings, None).await
}

/// As [`spawn_worker_with`], on a topology whose classic work queues have `x-max-priority`.
pub async fn spawn_worker_on(
    registry: Registry,
    settings: WorkerSettings,
    max_priority: Option<u8>,
) -> TestWorker {
    shopfds_testkit::init_tracing();
    let vhost = tokio::task::spawn_blocking(TestVhost::create)
        .await
        .unwrap()
        .expect("create vhost");
    let db = TestDatabase::create().await.expect("create database");
    let store = Store::connect(&DatabaseSettings::with_url(db.url()))
        .await
        .expect("connect and migrate the store");
    let mut broker = BrokerSettings::with_url(vhost.amqp_url(), "broker-test");
    broker.reconnect_max = Duration::from_millis(500);
    broker.max_priority = max_priority;
    let conn = shopfds_broker::amqp::connect(&broker)
        .await
        .expect("connect");
    // Declared before the worker starts, so the test can publish at once.
    let channel = conn.create_channel().await.unwrap();
    topology::declare_with(&channel, QueueType::Classic, max_priority)
        .await
        .expect("declare topology");
    let publisher = Publisher::new(&conn).await.expect("publisher");
    let worker = start_worker(&broker, &store, registry, settings);
    TestWorker {
        store,
        broker,
        publisher,
        conn,
        worker,
        vhost,
        _db: db,
    }
}

/// Another `Worker::run` on the same broker and store.
pub fn start_worker(
    broker: &BrokerSettings,
    store: &Store,
    registry: Registry,
    settings: WorkerSettings,
) -> RunningWorker {
    let shutdown = CancellationToken::new();
    let worker = Worker::new(
        broker.clone(),
        settings,
        registry,
        shopfds_results::postgres(store),
    )
    .with_revoke_store(std::sync::Arc::new(store.revoked_tasks()));
    let handle = tokio::spawn(worker.run(shutdown.clone()));
    RunningWorker {
        shutdown,
        handle: Some(handle),
    }
}

impl TestWorker {
    /// Publishes `msg` to the work queue (confirmed) and hands it back.
    pub async fn send(&self, msg: TaskMessage) -> TaskMessage {
        self.publisher
            .publish(&shopfds_broker::Outgoing::task(&msg, QUEUE))
            .await
            .expect("confirmed publish");
        msg
    }

    /// Publishes bytes as they are, with lapin, to the work queue: for messages our own
    /// publisher would never produce.
    pub async fn publish_raw(&self, content_type: &str, headers: &Map<String, Value>, body: &[u8]) {
        let channel = self.conn.create_channel().await.unwrap();
        let props = BasicProperties::default()
            .with_content_type(content_type.into())
            .with_content_encoding("utf-8".into())
            .with_delivery_mode(2)
            .with_headers(json_to_table(headers));
        channel
            .basic_publish(
                QUEUE.into(),
                QUEUE.into(),
                BasicPublishOptions::default(),
                body,
                props,
            )
            .await
            .unwrap()
            .await
            .unwrap();
        let _ = channel.close(200, "published".into()).await;
    }

    /// Waits until `failed.<queue>` has yielded `n` messages (taken off the queue).
    pub async fn dead_letters(&self, n: usize) -> Vec<DeadLetter> {
        take_messages(
            &self.conn,
            &shopfds_protocol::names::dead_letter_queue(QUEUE),
            n,
        )
        .await
    }

    pub async fn wait_for_state(&self, task_id: &str, state: TaskState) -> TaskRecord {
        wait_for_state(&self.store, task_id, state).await
    }
}

/// A message read from a queue.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub headers: Map<String, Value>,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

impl DeadLetter {
    pub fn header_str(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    pub fn reason(&self) -> &str {
        self.header_str(shopfds_protocol::names::REASON_HEADER)
    }
}

/// Takes `n` messages off `queue` with `basic.get`, polling until they are there.
pub async fn take_messages(conn: &Connection, queue: &str, n: usize) -> Vec<DeadLetter> {
    let channel = conn.create_channel().await.unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + WAIT;
    while out.len() < n {
        let got = channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap();
        match got {
            Some(msg) => {
                let delivery = msg.delivery;
                out.push(DeadLetter {
                    headers: delivery
                        .properties
                        .headers()
                        .as_ref()
                        .map(table_to_json)
                        .unwrap_or_default(),
                    content_type: delivery
                        .properties
                        .content_type()
                        .as_ref()
                        .map(|s| s.as_str().to_owned()),
                    body: delivery.data,
                });
            }
            None => {
                assert!(
                    Instant::now() < deadline,
                    "{queue}: got {} message(s), expected {n}, within {WAIT:?}",
                    out.len()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    let _ = channel.close(200, "done".into()).await;
    out
}

/// Polls the result store until the task is in `state`.
pub async fn wait_for_state(store: &Store, task_id: &str, state: TaskState) -> TaskRecord {
    let mut last = None;
    let found = poll_until(
        WAIT,
        || {
            let store = store.clone();
            async move { store.results().get(task_id).await.ok().flatten() }
        },
        |record: &Option<TaskRecord>| {
            last = record.as_ref().map(|r| r.state);
            record.as_ref().is_some_and(|r| r.state == state)
        },
    )
    .await;
    match found {
        Ok(Some(record)) => record,
        _ => panic!("task {task_id} did not reach {state} within {WAIT:?}; last state {last:?}"),
    }
}

/// Calls `probe` until `done` accepts its value or `timeout` passes.
pub async fn poll_until<T, F, Fut>(
    timeout: Duration,
    mut probe: F,
    mut done: impl FnMut(&T) -> bool,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = T>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let value = probe().await;
        if done(&value) {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            bail!("condition not met within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Polls `queue`'s ready-message count until `done` accepts it.
pub async fn wait_for_depth(vhost: &TestVhost, queue: &str, done: impl Fn(u32) -> bool) -> u32 {
    let mut last = 0;
    poll_until(
        WAIT,
        || async { vhost.queue_depth(queue).context("queue depth").unwrap() },
        |depth| {
            last = *depth;
            done(*depth)
        },
    )
    .await
    .unwrap_or_else(|_| panic!("{queue}: depth stuck at {last}"))
}
