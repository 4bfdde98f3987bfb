//! `spawn_app()`: order-api on a free port with its own database and RabbitMQ vhost, the
//! email-worker consuming that vhost, and a real SMTP server; optionally with the broker or the
//! database behind a proxy the test can cut, and report-worker with a storage directory.

use std::time::{Duration, Instant};

use fds_worker::tls::GrpcServerTls;
use order_api::Application;
use order_api::fds_tls::FdsClientTls;
use reqwest::Response;
use serde_json::{Value, json};
use shopfds_auth::Scope;
use shopfds_broker::BrokerSettings;
use shopfds_config::Env;
use shopfds_documents::StorageSettings;
use shopfds_store::{DatabaseSettings, Store};
use shopfds_testkit::keys::{TestKey, auth_settings};
use shopfds_testkit::net::TcpProxy;
use shopfds_testkit::partner::PartnerStub;
use shopfds_testkit::pg::TestDatabase;
use shopfds_testkit::rabbit::TestVhost;
use shopfds_testkit::smtp::{ReceivedMail, SmtpSink};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

#[derive(Default)]
pub struct Options {
    /// The relay reaches RabbitMQ through a proxy that starts cut.
    pub broker_starts_down: bool,
    /// order-api reaches PostgreSQL through a proxy the test can cut.
    pub database_behind_proxy: bool,
    /// Start without fds-worker: nothing answers Score, the fallback decision applies, and the
    /// evaluations wait in queue `fds` until `start_fds_worker`.
    pub fds_down: bool,
    /// order-api's `HTTP_HEADER_READ_TIMEOUT_SECS`, shorter than any default.
    pub header_read_timeout: Option<Duration>,
    /// order-api's `TRUSTED_PROXIES` (default: none).
    pub trusted_proxies: Option<&'static str>,
    /// order-api's `API_KEYS_CACHE_SECS`, shorter than the default.
    pub key_cache: Option<Duration>,
    /// order-api's `ORDER_MAX_LINE_AMOUNT` and `ORDER_MAX_TOTAL`.
    pub limits: Option<order_api::domain::AmountLimits>,
    /// `RELAY_ENABLED=false`: this replica takes orders but relays nothing.
    pub relay_disabled: bool,
    /// The pause between two rounds of housekeeping, shorter than any default.
    pub housekeeping_every: Option<Duration>,
    /// gRPC between order-api and fds-worker over TLS (`FDS_GRPC_URL` then `https://`).
    pub fds_tls: Option<FdsTlsVars>,
    /// report-worker consumes too, and it and order-api share a storage directory
    /// (`STORAGE_DIR`); without it order-api has no storage.
    pub report_worker: bool,
    /// The shipping partner's API (testkit's `PartnerStub`) for email-worker's
    /// `register_shipment`; without it the shipments are dead-lettered (no partner URL).
    pub partner: bool,
}

/// The TLS variables of fds-worker (`GRPC_TLS_*`) and of order-api (`FDS_GRPC_*`), read as the
/// binaries read them.
#[derive(Default, Clone)]
pub struct FdsTlsVars {
    pub server: Vec<(&'static str, String)>,
    pub client: Vec<(&'static str, String)>,
}

/// The keys of a test app, each admitted through `API_KEYS`.
pub struct Keys {
    /// `admin`: the default client's key (sees fraud reasons, may set `client_ip`).
    pub admin: TestKey,
    /// `orders:write` + `orders:read`: a storefront.
    pub shop: TestKey,
    /// `orders:read` only.
    pub reader: TestKey,
    /// `orders:write` only.
    pub writer: TestKey,
    /// `fds:score`: order-api's key to fds-worker.
    pub fds: TestKey,
    /// `reports` only.
    pub reports: TestKey,
}

impl Keys {
    fn new() -> Keys {
        Keys {
            admin: TestKey::new(&[Scope::Admin]),
            shop: TestKey::new(&[Scope::OrdersWrite, Scope::OrdersRead]),
            reader: TestKey::new(&[Scope::OrdersRead]),
            writer: TestKey::new(&[Scope::OrdersWrite]),
            fds: TestKey::new(&[Scope::FdsScore]),
            reports: TestKey::new(&[Scope::Reports]),
        }
    }

    fn all(&self) -> [&TestKey; 6] {
        [
            &self.admin,
            &self.shop,
            &self.reader,
            &self.writer,
            &self.fds,
            &self.reports,
        ]
    }
}

pub struct TestApp {
    pub address: String,
    /// `http://127.0.0.1:<ops port>`: `/healthz`, `/readyz`, `/metrics`.
    pub ops_address: String,
    pub socket: std::net::SocketAddr,
    /// Sends the `admin` key with every request.
    pub client: reqwest::Client,
    pub keys: Keys,
    pub store: Store,
    pub smtp: SmtpSink,
    pub broker_proxy: Option<TcpProxy>,
    pub database_proxy: Option<TcpProxy>,
    /// `STORAGE_DIR` of order-api, report-worker and email-worker, with
    /// [`Options::report_worker`].
    pub storage: Option<tempfile::TempDir>,
    /// With [`Options::partner`].
    pub partner: Option<PartnerStub>,
    shutdown: CancellationToken,
    handles: Vec<JoinHandle<anyhow::Result<()>>>,
    _vhost: TestVhost,
    _db: TestDatabase,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(Options::default()).await
}

pub async fn spawn_app_with(options: Options) -> TestApp {
    shopfds_testkit::init_tracing();
    let db = TestDatabase::create().await.expect("test database");
    let vhost = TestVhost::create().expect("test vhost");
    let smtp = SmtpSink::start().await.expect("smtp sink");
    let store = Store::connect(&DatabaseSettings::with_url(db.url()))
        .await
        .expect("store");

    let broker_proxy = options
        .broker_starts_down
        .then(|| TcpProxy::closed(([127, 0, 0, 1], 5672).into()));
    let database_proxy = if options.database_behind_proxy {
        Some(
            TcpProxy::open(([127, 0, 0, 1], 5432).into())
                .await
                .expect("db proxy"),
        )
    } else {
        None
    };

    let keys = Keys::new();
    let mut settings = order_api::Settings::from_env().expect("order-api settings");
    settings.http_addr = "127.0.0.1:0".parse().expect("addr");
    settings.shell.ops_addr = "127.0.0.1:0".parse().expect("addr");
    settings.security.auth = auth_settings(&keys.all());
    if let Some(ttl) = options.key_cache {
        settings.security.auth.cache_ttl = ttl;
    }
    settings.security.fds_api_key = Some(shopfds_config::Secret::new(keys.fds.key.clone()));
    settings.security.trusted_proxies = options
        .trusted_proxies
        .map(|nets| {
            nets.split(',')
                .map(|n| n.trim().parse().expect("network"))
                .collect()
        })
        .unwrap_or_default();
    if let Some(limits) = options.limits {
        settings.security.limits = limits;
    }
    let mut database = DatabaseSettings::with_url(match &database_proxy {
        Some(p) => db.url().replace(":5432/", &format!(":{}/", p.port())),
        None => db.url(),
    });
    database.acquire_timeout = Duration::from_secs(1);
    settings.database = database;
    let broker_url = match &broker_proxy {
        Some(p) => vhost
            .amqp_url()
            .replace(":5672/", &format!(":{}/", p.port())),
        None => vhost.amqp_url(),
    };
    settings.broker = fast_reconnect(BrokerSettings::with_url(broker_url, "order-api-test"));
    settings.relay.poll_interval = Duration::from_millis(200);
    if let Some(timeout) = options.header_read_timeout {
        settings.shell.http.header_read_timeout = timeout;
    }
    settings.relay.enabled = !options.relay_disabled;
    if let Some(every) = options.housekeeping_every {
        settings.housekeeping.every = every;
    }
    settings.relay.enabled = !options.relay_disabled;
    if let Some(every) = options.housekeeping_every {
        settings.housekeeping.every = every;
    }
    let storage = options
        .report_worker
        .then(|| tempfile::tempdir().expect("storage directory"));
    if let Some(dir) = &storage {
        settings.storage = StorageSettings::dir(dir.path());
    }
    let shutdown = CancellationToken::new();
    let mut handles = Vec::new();
    if !options.fds_down {
        let server_tls = options
            .fds_tls
            .as_ref()
            .map(|tls| GrpcServerTls::read(&Env::from_pairs(tls.server.clone())))
            .transpose()
            .expect("fds-worker TLS settings")
            .unwrap_or_default();
        let (grpc_port, handle) = spawn_fds_worker(&vhost, &db, &keys, &shutdown, server_tls).await;
        let scheme = if options.fds_tls.is_some() {
            "https"
        } else {
            "http"
        };
        settings.fds.url = format!("{scheme}://127.0.0.1:{grpc_port}");
        if let Some(tls) = &options.fds_tls {
            settings.fds.tls =
                FdsClientTls::read(&Env::from_pairs(tls.client.clone()), &settings.fds.url)
                    .expect("order-api TLS settings");
        }
        // A debug build on a busy 2-core machine: the deadline is about scheduling, not speed.
        settings.fds.timeout = Duration::from_secs(2);
        handles.push(handle);
    } else {
        // No fds-worker listens here: every order gets the fallback decision.
        settings.fds.url = format!("http://127.0.0.1:{}", shopfds_testkit::free_port());
    }

    let app = Application::build(settings)
        .await
        .expect("order-api builds");
    let socket = std::net::SocketAddr::from(([127, 0, 0, 1], app.port()));
    let address = format!("http://{socket}");
    let ops_address = format!("http://127.0.0.1:{}", app.ops_port());
    handles.push(tokio::spawn(app.run_until_stopped(shutdown.clone())));

    // The worker always reaches the broker directly: only the relay's path is cut.
    let mut worker = email_worker::Settings::from_env().expect("email-worker settings");
    worker.broker = fast_reconnect(BrokerSettings::with_url(
        vhost.amqp_url(),
        "email-worker-test",
    ));
    worker.database = DatabaseSettings::with_url(db.url());
    worker.mail.smtp_url = shopfds_service::SecretUrl::new(smtp.url());
    worker.shell.ops_addr = "127.0.0.1:0".parse().expect("addr");
    worker.worker.shutdown_grace = Duration::from_secs(5);
    if let Some(dir) = &storage {
        worker.storage = StorageSettings::dir(dir.path());
    }
    let partner = if options.partner {
        Some(PartnerStub::start().await.expect("partner stub"))
    } else {
        None
    };
    if let Some(partner) = &partner {
        worker.partner.url = Some(shopfds_service::SecretUrl::new(partner.url()));
    }
    let worker = email_worker::Application::build(worker)
        .await
        .expect("email-worker builds");
    handles.push(tokio::spawn(worker.run_until_stopped(shutdown.clone())));
    if let Some(dir) = &storage {
        let mut reports = report_worker::Settings::from_env().expect("report-worker settings");
        reports.broker = fast_reconnect(BrokerSettings::with_url(
            vhost.amqp_url(),
            "report-worker-test",
        ));
        reports.database = DatabaseSettings::with_url(db.url());
        reports.mail.smtp_url = shopfds_service::SecretUrl::new(smtp.url());
        reports.shell.ops_addr = "127.0.0.1:0".parse().expect("addr");
        reports.worker.shutdown_grace = Duration::from_secs(5);
        reports.storage = StorageSettings::dir(dir.path());
        let reports = report_worker::Application::build(reports)
            .await
            .expect("report-worker builds");
        handles.push(tokio::spawn(reports.run_until_stopped(shutdown.clone())));
    }

    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        keys.admin.bearer().parse().expect("header"),
    );
    TestApp {
        address,
        ops_address,
        socket,
        client: reqwest::Client::builder()
            .default_headers(headers)
            .build()
            .expect("client"),
        keys,
        store,
        smtp,
        broker_proxy,
        database_proxy,
        storage,
        partner,
        shutdown,
        handles,
        _vhost: vhost,
        _db: db,
    }
}

/// fds-worker (gRPC score server and the `fds` queue) on the test's vhost and database.
async fn spawn_fds_worker(
    vhost: &TestVhost,
    db: &TestDatabase,
    keys: &Keys,
    shutdown: &CancellationToken,
    grpc_tls: GrpcServerTls,
) -> (u16, JoinHandle<anyhow::Result<()>>) {
    let mut fds = fds_worker::Settings::from_env().expect("fds-worker settings");
    fds.grpc_tls = grpc_tls;
    fds.auth = auth_settings(&[&keys.fds]);
    fds.broker = fast_reconnect(BrokerSettings::with_url(
        vhost.amqp_url(),
        "fds-worker-test",
    ));
    fds.database = DatabaseSettings::with_url(db.url());
    fds.shell.ops_addr = "127.0.0.1:0".parse().expect("addr");
    fds.fds.grpc_addr = "127.0.0.1:0".parse().expect("addr");
    fds.worker.shutdown_grace = Duration::from_secs(5);
    let fds = fds_worker::Application::build(fds)
        .await
        .expect("fds-worker builds");
    let port = fds.grpc_port();
    (port, tokio::spawn(fds.run_until_stopped(shutdown.clone())))
}

fn fast_reconnect(mut broker: BrokerSettings) -> BrokerSettings {
    broker.reconnect_max = Duration::from_millis(500);
    broker
}

impl TestApp {
    pub async fn post_order(&self, body: &Value) -> Response {
        self.client
            .post(format!("{}/v1/orders", self.address))
            .json(body)
            .send()
            .await
            .expect("POST /v1/orders")
    }

    pub async fn post_raw(&self, body: &str, idempotency_key: Option<&str>) -> Response {
        self.post_typed(body, Some("application/json"), idempotency_key)
            .await
    }

    /// `POST /v1/orders` with the given `Content-Type` (none if `None`).
    pub async fn post_typed(
        &self,
        body: &str,
        content_type: Option<&str>,
        idempotency_key: Option<&str>,
    ) -> Response {
        let mut req = self
            .client
            .post(format!("{}/v1/orders", self.address))
            .body(body.to_owned());
        if let Some(content_type) = content_type {
            req = req.header("content-type", content_type);
        }
        if let Some(key) = idempotency_key {
            req = req.header("Idempotency-Key", key);
        }
        req.send().await.expect("POST /v1/orders")
    }

    /// `POST /v1/orders`, expecting a JSON answer (whatever the status).
    pub async fn post_order_json(&self, body: &Value) -> Value {
        self.post_order(body)
            .await
            .json()
            .await
            .expect("JSON answer")
    }

    /// `GET path`, expecting a JSON answer (whatever the status).
    pub async fn get_json(&self, path: &str) -> Value {
        self.get(path).await.json().await.expect("JSON answer")
    }

    /// `GET` on the ops port.
    pub async fn ops_get(&self, path: &str) -> Response {
        self.client
            .get(format!("{}{path}", self.ops_address))
            .send()
            .await
            .expect("GET")
    }

    /// `POST /v1/orders` with `key` (none if `None`) instead of the admin key.
    pub async fn post_order_as(
        &self,
        key: Option<&TestKey>,
        body: &Value,
        idempotency_key: Option<&str>,
    ) -> Response {
        let mut req = reqwest::Client::new()
            .post(format!("{}/v1/orders", self.address))
            .json(body);
        if let Some(key) = key {
            req = req.header("authorization", key.bearer());
        }
        if let Some(idem) = idempotency_key {
            req = req.header("Idempotency-Key", idem);
        }
        req.send().await.expect("POST /v1/orders")
    }

    /// `GET path` with `key` (none if `None`) instead of the admin key.
    pub async fn get_as(&self, key: Option<&TestKey>, path: &str) -> Response {
        let mut req = reqwest::Client::new().get(format!("{}{path}", self.address));
        if let Some(key) = key {
            req = req.header("authorization", key.bearer());
        }
        req.send().await.expect("GET")
    }

    pub async fn get(&self, path: &str) -> Response {
        self.client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("GET")
    }

    /// Polls `GET /v1/tasks/{id}` until the task reaches `state`.
    pub async fn wait_for_task_state(
        &self,
        task_id: &str,
        state: &str,
        timeout: Duration,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        let mut last = Value::Null;
        while Instant::now() < deadline {
            let resp = self.get(&format!("/v1/tasks/{task_id}")).await;
            if resp.status() == 200 {
                last = resp.json().await.expect("task JSON");
                if last["state"] == state {
                    return last;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("task {task_id} did not reach {state} within {timeout:?}; last seen: {last}");
    }

    pub async fn wait_for_mail(&self, n: usize) -> Vec<ReceivedMail> {
        self.smtp
            .wait_for(n, Duration::from_secs(30))
            .await
            .expect("mail arrives")
    }

    pub async fn order_count(&self) -> i64 {
        sqlx_count(&self.store, "SELECT count(*) FROM orders").await
    }

    /// Starts fds-worker now (its queue consumer picks up the evaluations queued meanwhile).
    pub async fn start_fds_worker(&mut self) {
        let (_, handle) = spawn_fds_worker(
            &self._vhost,
            &self._db,
            &self.keys,
            &self.shutdown,
            GrpcServerTls::default(),
        )
        .await;
        self.handles.push(handle);
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        for h in self.handles {
            h.await.expect("joined").expect("stopped cleanly");
        }
    }
}

pub async fn sqlx_count(store: &Store, sql: &'static str) -> i64 {
    let row: (i64,) = shopfds_store::sqlx::query_as(sql)
        .fetch_one(store.pool())
        .await
        .expect("count");
    row.0
}

/// The DESIGN.md example order.
pub fn sample_order() -> Value {
    json!({
        "customer": {"id": "c-1001", "email": "minsu.kim@example.com", "name": "김민수", "account_created_at": "2025-03-01T00:00:00Z"},
        "items": [
            {"sku": "KB-101", "name": "무선 키보드", "quantity": 2, "unit_price": 45000}
        ],
        "currency": "KRW",
        "shipping_address": {"name": "김민수", "line1": "세종대로 110", "line2": null, "city": "Seoul", "postal_code": "04524", "country": "KR", "phone": "+82-2-120"},
        "billing_country": "KR",
        "payment": {"method": "card", "card_fingerprint": "fp_9f8e7d"},
        "client_ip": "203.0.113.7"
    })
}
