//! `spawn_report_worker()`: the real `Application` in-process against its own database, vhost,
//! SMTP sink and a storage directory; orders written on chosen instants; the polling helpers.

use std::time::Duration;

use chrono::{DateTime, Utc};
use lapin::Connection;
use lapin::options::BasicGetOptions;
use report_worker::{Application, Settings};
use serde_json::{Map, Value, json};
use shopfds_broker::amqp::table_to_json;
use shopfds_broker::{BrokerSettings, Outgoing, Publisher, QueueType, topology};
use shopfds_documents::StorageSettings;
use shopfds_protocol::{TaskMessage, TaskState, tasks};
use shopfds_store::{DatabaseSettings, NewOrder, NewOrderItem, Store, StoredResponse, TaskRecord};
use shopfds_testkit::pg::TestDatabase;
use shopfds_testkit::rabbit::TestVhost;
use shopfds_testkit::smtp::SmtpSink;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const WAIT: Duration = Duration::from_secs(60);

pub struct Options {
    /// A storage directory (a temporary one); `false`: neither STORAGE_DIR nor STORAGE_URL.
    pub storage: bool,
    /// `REPORT_MAIL_TO`.
    pub report_mail_to: Option<&'static str>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            storage: true,
            report_mail_to: None,
        }
    }
}

pub struct TestApp {
    pub store: Store,
    pub smtp: SmtpSink,
    /// The storage directory (`STORAGE_DIR`), when there is one.
    pub storage: Option<tempfile::TempDir>,
    publisher: Publisher,
    conn: Connection,
    shutdown: CancellationToken,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
    _vhost: TestVhost,
    _db: TestDatabase,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub async fn spawn_report_worker(options: Options) -> TestApp {
    shopfds_testkit::init_tracing();
    let smtp = SmtpSink::start().await.expect("start the SMTP sink");
    let vhost = tokio::task::spawn_blocking(TestVhost::create)
        .await
        .unwrap()
        .expect("create vhost");
    let db = TestDatabase::create().await.expect("create database");
    let storage = options
        .storage
        .then(|| tempfile::tempdir().expect("storage directory"));

    let mut settings = Settings::from_env().expect("default settings");
    settings.broker = BrokerSettings::with_url(vhost.amqp_url(), "report-worker-test");
    settings.broker.reconnect_max = Duration::from_millis(500);
    settings.database = DatabaseSettings::with_url(db.url());
    settings.mail.smtp_url = shopfds_service::SecretUrl::new(smtp.url());
    settings.shell.ops_addr = "127.0.0.1:0".parse().unwrap();
    settings.worker.shutdown_grace = Duration::from_secs(2);
    settings.storage = match &storage {
        Some(dir) => StorageSettings::dir(dir.path()),
        None => StorageSettings::default(),
    };
    settings.report_mail_to = options.report_mail_to.map(str::to_owned);

    let store = Store::connect(&DatabaseSettings::with_url(db.url()))
        .await
        .expect("connect and migrate");
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
        store,
        smtp,
        storage,
        publisher,
        conn,
        shutdown,
        handle: Some(handle),
        _vhost: vhost,
        _db: db,
    }
}

pub fn line(sku: &str, name: &str, quantity: i32, unit_price: i64) -> NewOrderItem {
    NewOrderItem {
        sku: sku.to_owned(),
        name: name.to_owned(),
        quantity,
        unit_price,
    }
}

impl TestApp {
    /// Writes an order of `lines` in KRW with `status`, created at `at` (RFC 3339).
    pub async fn order(&self, at: &str, status: &str, lines: Vec<NewOrderItem>) -> Uuid {
        let total = lines
            .iter()
            .map(|l| i64::from(l.quantity) * l.unit_price)
            .sum();
        let decision = match status {
            "accepted" => "APPROVE",
            "review" => "REVIEW",
            _ => "BLOCK",
        };
        let order = NewOrder {
            id: Uuid::new_v4(),
            customer_id: "c-1001".to_owned(),
            customer_email: "minsu.kim@example.com".to_owned(),
            customer_name: "김민수".to_owned(),
            account_created_at: None,
            currency: "KRW".to_owned(),
            total,
            items: lines,
            shipping_address: json!({"name": "김민수", "line1": "세종대로 110", "line2": null,
                "city": "Seoul", "postal_code": "04524", "country": "KR", "phone": "+82-2-120"}),
            billing_country: "KR".to_owned(),
            payment: json!({"method": "card", "card_fingerprint": "fp_9f8e7d"}),
            client_ip: Some("203.0.113.7".to_owned()),
            status: status.to_owned(),
            fds: json!({"score": 10, "decision": decision, "reasons": []}),
            tasks: json!({}),
        };
        let answer = StoredResponse {
            status: 201,
            body: json!({}),
        };
        self.store
            .orders()
            .create(None, &order, &[], &[], &answer)
            .await
            .expect("create the order");
        let at: DateTime<Utc> = at.parse().expect("an RFC 3339 instant");
        shopfds_store::sqlx::query("UPDATE orders SET created_at = $2 WHERE id = $1")
            .bind(order.id)
            .bind(at)
            .execute(self.store.pool())
            .await
            .expect("set created_at");
        order.id
    }

    /// Publishes `generate_sales_report` with these keyword arguments.
    pub async fn sales_report(&self, kwargs: Value) -> TaskMessage {
        self.send(tasks::GENERATE_SALES_REPORT, kwargs).await
    }

    pub async fn send(&self, task: &str, kwargs: Value) -> TaskMessage {
        let kwargs: Map<String, Value> = kwargs.as_object().cloned().unwrap_or_default();
        let msg = TaskMessage::new(task, kwargs);
        self.publisher
            .publish(&Outgoing::task(&msg, tasks::queue_for(task)))
            .await
            .expect("publish");
        msg
    }

    pub async fn wait_for_state(&self, task_id: &str, state: TaskState) -> TaskRecord {
        let deadline = Instant::now() + WAIT;
        let mut last = None;
        loop {
            if let Some(record) = self.store.results().get(task_id).await.unwrap() {
                if record.state == state {
                    return record;
                }
                last = Some((record.state, record.error));
            }
            assert!(
                Instant::now() < deadline,
                "task {task_id} did not reach {state} within {WAIT:?}; last {last:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Takes `n` messages off `queue`, polling until they are there: their headers.
    pub async fn take(&self, queue: &str, n: usize) -> Vec<Map<String, Value>> {
        let channel = self.conn.create_channel().await.unwrap();
        let deadline = Instant::now() + WAIT;
        let mut out = Vec::new();
        while out.len() < n {
            match channel
                .basic_get(queue.into(), BasicGetOptions { no_ack: true })
                .await
                .unwrap()
            {
                Some(msg) => out.push(
                    msg.delivery
                        .properties
                        .headers()
                        .as_ref()
                        .map(table_to_json)
                        .unwrap_or_default(),
                ),
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

    /// The stored object at `path` (under the storage directory).
    pub fn stored(&self, path: &str) -> Vec<u8> {
        let dir = self.storage.as_ref().expect("a storage directory");
        std::fs::read(dir.path().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        let handle = self.handle.take().expect("already stopped");
        tokio::time::timeout(WAIT, handle)
            .await
            .expect("the worker did not stop")
            .expect("the worker task panicked")
            .expect("the worker stopped cleanly");
    }
}

/// The text of a PDF, laid out (`pdftotext -layout`, poppler-utils).
pub fn pdf_text(pdf: &[u8]) -> String {
    shopfds_testkit::pdf::text(pdf).expect("pdftotext")
}

/// The value on the line of `label` in `pdftotext -layout` output.
pub fn value_of(text: &str, label: &str) -> String {
    let line = text
        .lines()
        .find(|l| l.contains(label))
        .unwrap_or_else(|| panic!("{label:?} not in:\n{text}"));
    line.split_once(label)
        .map(|(_, rest)| rest.trim().to_owned())
        .unwrap_or_default()
}
