//! `spawn_email_worker()`: the real `Application` in-process against its own SMTP sink, vhost and
//! database, with one order already written; and the polling helpers the tests share.

use std::time::Duration;

use email_worker::{Application, Settings};
use lapin::Connection;
use lapin::options::BasicGetOptions;
use serde_json::{Map, Value, json};
use shopfds_broker::amqp::table_to_json;
use shopfds_broker::{BrokerSettings, Outgoing, Publisher, QueueType, topology};
use shopfds_documents::StorageSettings;
use shopfds_protocol::TaskState;
use shopfds_store::{DatabaseSettings, NewOrder, NewOrderItem, Store, StoredResponse, TaskRecord};
use shopfds_testkit::net::TcpProxy;
use shopfds_testkit::pg::TestDatabase;
use shopfds_testkit::rabbit::TestVhost;
use shopfds_testkit::smtp::SmtpSink;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const WAIT: Duration = Duration::from_secs(30);
pub const CUSTOMER: &str = "minsu.kim@example.com";

pub struct TestApp {
    pub order_id: Uuid,
    /// In front of the worker's database, with [`Options::database_proxy`].
    pub database_proxy: Option<TcpProxy>,
    pub customer_email: String,
    pub store: Store,
    pub publisher: Publisher,
    pub conn: Connection,
    pub shutdown: CancellationToken,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
    pub smtp: SmtpSink,
    pub vhost: TestVhost,
    /// The worker's `STORAGE_DIR`, where the invoice mail finds the PDFs.
    pub storage: tempfile::TempDir,
    _db: TestDatabase,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub struct Options {
    pub customer_email: String,
    pub concurrency: usize,
    /// The worker reaches its database through a [`TcpProxy`] the test can cut (the test's own
    /// `store` connects directly).
    pub database_proxy: bool,
    pub shutdown_grace: Duration,
    pub effect_grace: Duration,
    /// `SHIPPING_PARTNER_URL` (the test's partner server); unset by default.
    pub partner_url: Option<String>,
    /// `SHIPPING_PARTNER_RATE_LIMIT`; unset by default.
    pub partner_rate_limit: Option<u32>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            customer_email: CUSTOMER.to_owned(),
            concurrency: 4,
            database_proxy: false,
            shutdown_grace: Duration::from_secs(2),
            effect_grace: Duration::from_secs(30),
            partner_url: None,
            partner_rate_limit: None,
        }
    }
}

pub async fn spawn_email_worker() -> TestApp {
    spawn_email_worker_with(Options::default()).await
}

/// The order every test mails about: two items, ₩90,000 in all.
pub fn new_order(customer_email: &str) -> NewOrder {
    NewOrder {
        id: Uuid::new_v4(),
        customer_id: "c-1001".to_owned(),
        customer_email: customer_email.to_owned(),
        customer_name: "김민수".to_owned(),
        account_created_at: None,
        currency: "KRW".to_owned(),
        total: 90_000,
        items: vec![
            NewOrderItem {
                sku: "KB-101".to_owned(),
                name: "무선 키보드".to_owned(),
                quantity: 1,
                unit_price: 45_000,
            },
            NewOrderItem {
                sku: "MS-202".to_owned(),
                name: "무선 마우스".to_owned(),
                quantity: 1,
                unit_price: 45_000,
            },
        ],
        shipping_address: json!({"name": "김민수", "line1": "세종대로 110", "line2": null,
            "city": "Seoul", "postal_code": "04524", "country": "KR", "phone": "+82-2-120"}),
        billing_country: "KR".to_owned(),
        payment: json!({"method": "card", "card_fingerprint": "fp_9f8e7d"}),
        client_ip: Some("203.0.113.7".to_owned()),
        status: "accepted".to_owned(),
        fds: json!({"score": 12, "decision": "APPROVE", "reasons": []}),
        tasks: json!({}),
    }
}

/// Writes [`new_order`] for `customer_email` and returns its id.
async fn insert_order(store: &Store, customer_email: &str) -> Uuid {
    let order = new_order(customer_email);
    store
        .orders()
        .create(
            None,
            &order,
            &[],
            &[],
            &StoredResponse {
                status: 201,
                body: json!({}),
            },
        )
        .await
        .expect("create the order");
    order.id
}

pub async fn spawn_email_worker_with(options: Options) -> TestApp {
    shopfds_testkit::init_tracing();
    let smtp = SmtpSink::start().await.expect("start the SMTP sink");
    let vhost = tokio::task::spawn_blocking(TestVhost::create)
        .await
        .unwrap()
        .expect("create vhost");
    let db = TestDatabase::create().await.expect("create database");

    let database_proxy = if options.database_proxy {
        let server = "127.0.0.1:5432".parse().unwrap();
        Some(TcpProxy::open(server).await.expect("database proxy"))
    } else {
        None
    };
    let mut settings = Settings::from_env().expect("default settings");
    settings.broker = BrokerSettings::with_url(vhost.amqp_url(), "email-worker-test");
    settings.broker.reconnect_max = Duration::from_millis(500);
    settings.database = DatabaseSettings::with_url(
        database_proxy
            .as_ref()
            .map_or_else(|| db.url(), |proxy| db.url_via(proxy.port())),
    );
    settings.database.max_connections = u32::try_from(options.concurrency + 4).unwrap();
    settings.mail.smtp_url = shopfds_service::SecretUrl::new(smtp.url());
    settings.shell.ops_addr = "127.0.0.1:0".parse().unwrap();
    settings.worker.concurrency = options.concurrency;
    settings.worker.shutdown_grace = options.shutdown_grace;
    settings.worker.effect_grace = options.effect_grace;
    settings.partner.url = options.partner_url.map(shopfds_service::SecretUrl::new);
    settings.partner.token = Some(shopfds_service::Secret::new("partner-token"));
    settings.partner.rate_limit = options.partner_rate_limit;
    let storage = tempfile::tempdir().expect("storage directory");
    settings.storage = StorageSettings::dir(storage.path());

    let store = Store::connect(&DatabaseSettings::with_url(db.url()))
        .await
        .expect("connect and migrate");
    let order_id = insert_order(&store, &options.customer_email).await;

    let conn = shopfds_broker::amqp::connect(&settings.broker)
        .await
        .expect("connect");
    // Declared before the worker starts, so the test can publish at once.
    let channel = conn.create_channel().await.unwrap();
    topology::declare(&channel, QueueType::Classic)
        .await
        .expect("declare topology");
    let publisher = Publisher::new(&conn).await.unwrap();

    let app = Application::build(settings).await.expect("build");
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    TestApp {
        order_id,
        database_proxy,
        customer_email: options.customer_email,
        store,
        publisher,
        conn,
        shutdown,
        handle: Some(handle),
        smtp,
        vhost,
        storage,
        _db: db,
    }
}

impl TestApp {
    /// Writes one more order (same customer) and returns its id.
    pub async fn add_order(&self) -> Uuid {
        insert_order(&self.store, &self.customer_email).await
    }

    /// The proxy in front of the worker's database.
    pub fn database_proxy(&self) -> &TcpProxy {
        self.database_proxy
            .as_ref()
            .expect("spawned with Options::database_proxy")
    }

    /// `{"order_id": "<this test's order>"}`.
    pub fn order_kwargs(&self) -> Map<String, Value> {
        let mut kwargs = Map::new();
        kwargs.insert("order_id".to_owned(), json!(self.order_id.to_string()));
        kwargs
    }

    pub async fn publish(&self, out: &Outgoing) {
        self.publisher.publish(out).await.expect("publish");
    }

    pub async fn wait_for_state(&self, task_id: &str, state: TaskState) -> TaskRecord {
        let deadline = Instant::now() + WAIT;
        let mut last = None;
        loop {
            let record = self.store.results().get(task_id).await.unwrap();
            if let Some(record) = record {
                if record.state == state {
                    return record;
                }
                last = Some(record.state);
            }
            assert!(
                Instant::now() < deadline,
                "task {task_id} did not reach {state} within {WAIT:?}; last state {last:?}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Every distinct (state, retries) the result store shows for `task_id`, until `last`.
    pub async fn watch_states(&self, task_id: &str, last: TaskState) -> Vec<(TaskState, i32)> {
        let deadline = Instant::now() + WAIT;
        let mut seen: Vec<(TaskState, i32)> = Vec::new();
        loop {
            if let Some(r) = self.store.results().get(task_id).await.unwrap() {
                if seen.last() != Some(&(r.state, r.retries)) {
                    seen.push((r.state, r.retries));
                }
                if r.state == last {
                    return seen;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{task_id} did not reach {last}: {seen:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Takes `n` messages off `queue`, polling until they are there: (headers, body).
    pub async fn take(&self, queue: &str, n: usize) -> Vec<(Map<String, Value>, Vec<u8>)> {
        let channel = self.conn.create_channel().await.unwrap();
        let deadline = Instant::now() + WAIT;
        let mut out = Vec::new();
        while out.len() < n {
            match channel
                .basic_get(queue.into(), BasicGetOptions { no_ack: true })
                .await
                .unwrap()
            {
                Some(msg) => {
                    let d = msg.delivery;
                    let headers = d
                        .properties
                        .headers()
                        .as_ref()
                        .map(table_to_json)
                        .unwrap_or_default();
                    out.push((headers, d.data));
                }
                None => {
                    assert!(
                        Instant::now() < deadline,
                        "{queue}: {} of {n} message(s) within {WAIT:?}",
                        out.len()
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        let _ = channel.close(200, "done".into()).await;
        out
    }

    /// Cancels the shutdown token and waits for `run_until_stopped` to return.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        let handle = self.handle.take().expect("already stopped");
        tokio::time::timeout(WAIT, handle)
            .await
            .expect("the worker did not stop")
            .expect("the worker task panicked")
    }
}
