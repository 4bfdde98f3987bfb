//! What the task tests share: a vhost and a migrated database of their own, workers running the
//! fds tasks (in-process `shopfds_broker::Worker`s, or the `fds-worker` binary), orders written
//! the way order-api writes them, a threat-intel feed served over real HTTP, and polling.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use chrono::{DateTime, Utc};
use fds_worker::engine::Engine;
use fds_worker::tasks::{self, TasksSettings};
use lapin::Connection;
use lapin::options::BasicGetOptions;
use serde_json::{Map, Value, json};
use shopfds_broker::amqp::table_to_json;
use shopfds_broker::{
    BrokerSettings, Outgoing, Publisher, QueueType, Registry, Worker, WorkerSettings, topology,
};
use shopfds_protocol::{TaskMessage, TaskState};
use shopfds_store::{
    DatabaseSettings, FdsDecision, FdsSource, NewFdsResult, NewOrder, NewOrderItem, Store,
    StoredResponse, TaskRecord,
};
use shopfds_testkit::pg::TestDatabase;
use shopfds_testkit::process::ChildGuard;
use shopfds_testkit::rabbit::TestVhost;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const WAIT: Duration = Duration::from_secs(60);
pub const QUEUE: &str = "fds";

/// A vhost (topology declared) and a migrated database, with a publisher on the vhost.
pub struct TestEnv {
    pub store: Store,
    pub publisher: Publisher,
    pub conn: Connection,
    pub vhost: TestVhost,
    pub db: TestDatabase,
}

impl TestEnv {
    pub async fn new() -> TestEnv {
        shopfds_testkit::init_tracing();
        let vhost = tokio::task::spawn_blocking(TestVhost::create)
            .await
            .unwrap()
            .expect("create vhost");
        let db = TestDatabase::create().await.expect("create database");
        let store = Store::connect(&self_database(&db))
            .await
            .expect("connect and migrate");
        let conn = shopfds_broker::amqp::connect(&broker(&vhost))
            .await
            .expect("connect");
        let channel = conn.create_channel().await.unwrap();
        topology::declare(&channel, QueueType::Classic)
            .await
            .expect("declare topology");
        let _ = channel.close(200, "declared".into()).await;
        let publisher = Publisher::new(&conn).await.unwrap();
        TestEnv {
            store,
            publisher,
            conn,
            vhost,
            db,
        }
    }

    /// Publishes `name(**kwargs)` on queue `fds`; returns the message.
    pub async fn send(&self, name: &str, kwargs: Value) -> TaskMessage {
        let kwargs: Map<String, Value> = kwargs.as_object().cloned().unwrap_or_default();
        let msg = TaskMessage::new(name, kwargs);
        self.publish(&msg).await;
        msg
    }

    pub async fn publish(&self, msg: &TaskMessage) {
        self.publisher
            .publish(&Outgoing::task(msg, QUEUE))
            .await
            .expect("publish");
    }

    pub async fn wait_for_state(&self, task_id: &str, state: TaskState) -> TaskRecord {
        let deadline = Instant::now() + WAIT;
        let mut last = None;
        loop {
            if let Some(record) = self.store.results().get(task_id).await.unwrap() {
                if record.state == state {
                    return record;
                }
                last = Some((record.state, record.error.clone()));
            }
            assert!(
                Instant::now() < deadline,
                "task {task_id} did not reach {state} within {WAIT:?}; last {last:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Takes one message off `queue`, polling until it is there: its headers.
    pub async fn take(&self, queue: &str) -> Map<String, Value> {
        let channel = self.conn.create_channel().await.unwrap();
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(msg) = channel
                .basic_get(queue.into(), BasicGetOptions { no_ack: true })
                .await
                .unwrap()
            {
                let _ = channel.close(200, "done".into()).await;
                return msg
                    .delivery
                    .properties
                    .headers()
                    .as_ref()
                    .map(table_to_json)
                    .unwrap_or_default();
            }
            assert!(
                Instant::now() < deadline,
                "nothing in {queue} within {WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Writes `order` as order-api does (no outbox rows: no other worker runs here).
    pub async fn create_order(&self, order: &NewOrder) {
        self.store
            .orders()
            .create(
                None,
                order,
                &[],
                &[],
                &StoredResponse {
                    status: 201,
                    body: json!({}),
                },
            )
            .await
            .expect("create the order");
    }

    /// Writes `order` scored in real time: its fds JSON says so and fds-worker recorded the
    /// decision.
    pub async fn create_realtime_order(&self, mut order: NewOrder) {
        order.fds = json!({"score": 5, "decision": "APPROVE", "reasons": [],
                           "rules_version": "builtin-1", "source": "realtime"});
        order.status = "accepted".to_owned();
        self.create_order(&order).await;
        self.store
            .fds()
            .record(&NewFdsResult {
                order_id: order.id.to_string(),
                score: 5,
                decision: FdsDecision::Approve,
                reasons: json!([]),
                rules_version: "builtin-1".to_owned(),
                source: FdsSource::Realtime,
            })
            .await
            .unwrap();
    }

    pub async fn set_created_at(&self, id: Uuid, at: DateTime<Utc>) {
        sqlx::query("UPDATE orders SET created_at = $2 WHERE id = $1")
            .bind(id)
            .bind(at)
            .execute(self.store.pool())
            .await
            .unwrap();
    }

    /// `(order id, source)` → number of fds_results rows.
    pub async fn results_per_order(&self, source: &str) -> std::collections::HashMap<String, i64> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT order_id, count(*) FROM fds_results WHERE source = $1 GROUP BY order_id",
        )
        .bind(source)
        .fetch_all(self.store.pool())
        .await
        .unwrap();
        rows.into_iter().collect()
    }

    /// An in-process worker of queue `fds` running the fds tasks with `engine`.
    pub fn spawn_worker(&self, engine: Arc<Engine>, settings: TasksSettings) -> TestWorker {
        let mut registry = Registry::new();
        let deps = tasks::Deps {
            store: self.store.clone(),
            engine,
            settings: Arc::new(settings.clone()),
        };
        tasks::register(&mut registry, deps);
        let mut worker = WorkerSettings::new("fds-worker", &[QUEUE]);
        worker.hostname = settings.worker_name.clone();
        worker.concurrency = 2;
        worker.shutdown_grace = Duration::from_secs(2);
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(
            Worker::new(
                broker(&self.vhost),
                worker,
                registry,
                shopfds_results::postgres(&self.store),
            )
            .run(shutdown.clone()),
        );
        TestWorker {
            shutdown,
            _handle: handle,
        }
    }

    /// The `fds-worker` binary on this vhost and database, named `fds-worker@<hostname>`;
    /// returns once it consumes.
    pub async fn spawn_binary(&self, hostname: &str, extra: &[(&str, &str)]) -> ChildGuard {
        let log = std::env::temp_dir().join(format!(
            "shopfds-fds-worker-{hostname}-{}.log",
            Uuid::new_v4().simple()
        ));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_fds-worker"));
        for variable in [
            "QUEUE_TYPE",
            "WORKER_QUEUES",
            "WORKER_PREFETCH_MULTIPLIER",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "LOG_FORMAT",
            "THREAT_INTEL_URL",
        ] {
            cmd.env_remove(variable);
        }
        cmd.env("RUST_LOG", "info")
            .env("BROKER_URL", self.vhost.amqp_url())
            .env("DATABASE_URL", self.db.url())
            .env("OPS_ADDR", "127.0.0.1:0")
            .env("GRPC_ADDR", "127.0.0.1:0")
            .env("HOSTNAME", hostname)
            .env("WORKER_CONCURRENCY", "2")
            .env("SHUTDOWN_GRACE_SECS", "5")
            .envs(extra.iter().copied());
        let mut child = ChildGuard::spawn_logged(&mut cmd, &log).expect("spawn fds-worker");
        child
            .wait_for_log("worker consuming", WAIT)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        child
    }
}

fn self_database(db: &TestDatabase) -> DatabaseSettings {
    let mut settings = DatabaseSettings::with_url(db.url());
    settings.max_connections = 8;
    settings
}

fn broker(vhost: &TestVhost) -> BrokerSettings {
    let mut settings = BrokerSettings::with_url(vhost.amqp_url(), "fds-worker-tasks-test");
    settings.reconnect_max = Duration::from_millis(500);
    settings
}

/// Stops its worker on drop.
pub struct TestWorker {
    shutdown: CancellationToken,
    _handle: JoinHandle<Result<(), shopfds_broker::BrokerError>>,
}

impl Drop for TestWorker {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Settings for an in-process worker named `fds-worker@<host>`.
pub fn tasks_settings(host: &str) -> TasksSettings {
    TasksSettings {
        worker_name: format!("fds-worker@{host}"),
        threat_intel_timeout: Duration::from_secs(5),
        ..TasksSettings::default()
    }
}

/// An ordinary ₩90,000 order from Seoul that order-api could not score: it carries the fallback
/// decision (REVIEW) and waits for the batch.
pub fn fallback_order(customer: &str, client_ip: &str) -> NewOrder {
    NewOrder {
        id: Uuid::new_v4(),
        customer_id: customer.to_owned(),
        customer_email: format!("{customer}@example.com"),
        customer_name: "김민수".to_owned(),
        account_created_at: Some(Utc::now() - chrono::Duration::days(400)),
        currency: "KRW".to_owned(),
        total: 90_000,
        items: vec![NewOrderItem {
            sku: "KB-101".to_owned(),
            name: "무선 키보드".to_owned(),
            quantity: 2,
            unit_price: 45_000,
        }],
        shipping_address: json!({"name": "김민수", "line1": "세종대로 110", "line2": null,
            "city": "Seoul", "postal_code": "04524", "country": "KR", "phone": "+82-2-120"}),
        billing_country: "KR".to_owned(),
        payment: json!({"method": "card", "card_fingerprint": format!("fp_{customer}")}),
        client_ip: Some(client_ip.to_owned()),
        status: "review".to_owned(),
        fds: json!({"score": null, "decision": "REVIEW",
                    "reasons": [{"rule_id": "fds.unavailable", "weight": 0,
                                 "message": "no answer from fds-worker within 100 ms"}],
                    "rules_version": null, "source": "fallback"}),
        tasks: json!({}),
    }
}

/// A threat-intel feed over real HTTP on a loopback port; what it answers can be changed.
pub struct FeedServer {
    pub addr: SocketAddr,
    answer: Arc<Mutex<(StatusCode, String)>>,
    _server: JoinHandle<()>,
}

impl FeedServer {
    pub async fn start(status: StatusCode, body: &str) -> FeedServer {
        let answer = Arc::new(Mutex::new((status, body.to_owned())));
        let app = Router::new()
            .route(
                "/feed.json",
                get(
                    |State(answer): State<Arc<Mutex<(StatusCode, String)>>>| async move {
                        let (status, body) = answer.lock().unwrap().clone();
                        (status, [("content-type", "application/json")], body)
                    },
                ),
            )
            .with_state(Arc::clone(&answer));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FeedServer {
            addr,
            answer,
            _server: server,
        }
    }

    /// `http://127.0.0.1:<port>/feed.json?key=…` (the key must not show up in results).
    pub fn url(&self) -> String {
        format!("http://{}/feed.json?key=s3cret", self.addr)
    }

    pub fn answer(&self, status: StatusCode, body: &str) {
        *self.answer.lock().unwrap() = (status, body.to_owned());
    }
}
