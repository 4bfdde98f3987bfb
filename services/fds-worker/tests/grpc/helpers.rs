//! `spawn_grpc`: the real fds.v1 server (engine, velocity store, background recorder, health,
//! reflection) in-process on 127.0.0.1:0 against a fresh, migrated PostgreSQL database.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fds_worker::FraudDetectionService;
use fds_worker::engine::{Engine, RulesConfig};
use fds_worker::recorder::ResultRecorder;
use fds_worker::velocity::{self, VelocityIndex};
use shopfds_auth::{Authenticator, Scope};
use shopfds_protocol::grpc::{FraudDetectionClient, Item, ScoreRequest};
use shopfds_store::{DatabaseSettings, FdsResultRecord, Store};
use shopfds_testkit::init_tracing;
use shopfds_testkit::keys::{TestKey, auth_settings};
use shopfds_testkit::pg::TestDatabase;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::metadata::AsciiMetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, ClientTlsConfig, ServerTlsConfig};

/// A client sending an API key (or none) with every call.
pub type Client = FraudDetectionClient<InterceptedService<Channel, WithKey>>;

/// Adds `authorization: Bearer <key>` to every call; nothing with `None`.
#[derive(Clone)]
pub struct WithKey(pub Option<AsciiMetadataValue>);

impl WithKey {
    pub fn new(key: Option<&TestKey>) -> WithKey {
        WithKey(key.map(|k| k.bearer().parse().unwrap()))
    }
}

impl Interceptor for WithKey {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// The keys the server admits (through `API_KEYS`).
pub struct GrpcKeys {
    /// `admin`: the default client's key (Score, ScoreBatch, reflection).
    pub admin: TestKey,
    /// `fds:score`: order-api's key (Score only).
    pub score: TestKey,
    /// `orders:read`: a key of the HTTP API, no use here.
    pub reader: TestKey,
}

/// The server; dropped before its database (field order).
pub struct TestGrpc {
    /// Where the server listens.
    pub addr: std::net::SocketAddr,
    pub channel: Channel,
    /// Sends the `admin` key.
    pub client: Client,
    pub keys: GrpcKeys,
    pub engine: Arc<Engine>,
    pub store: Store,
    /// The in-memory velocity index, when the server was spawned with one.
    pub index: Option<Arc<VelocityIndex>>,
    shutdown: CancellationToken,
    server: Option<JoinHandle<anyhow::Result<()>>>,
    /// Kept alive for the server; dropped (and the database with it) last.
    _db: TestDatabase,
}

/// The server counting velocity with one query per Score.
pub async fn spawn_grpc(config: RulesConfig) -> TestGrpc {
    spawn(config, false).await
}

/// The server counting velocity in its in-memory index, fed from the database.
pub async fn spawn_grpc_with_index(config: RulesConfig) -> TestGrpc {
    spawn(config, true).await
}

/// TLS of a spawned server, and of the test's own client (`channel`, `client`).
pub struct GrpcTls {
    pub server: ServerTlsConfig,
    pub client: ClientTlsConfig,
}

/// The server over TLS (`fds_worker::grpc::serve_with_tls`).
pub async fn spawn_grpc_with_tls(config: RulesConfig, tls: GrpcTls) -> TestGrpc {
    spawn_with(config, false, Some(tls)).await
}

async fn spawn(config: RulesConfig, with_index: bool) -> TestGrpc {
    spawn_with(config, with_index, None).await
}

async fn spawn_with(config: RulesConfig, with_index: bool, tls: Option<GrpcTls>) -> TestGrpc {
    init_tracing();
    let db = TestDatabase::create().await.unwrap();
    let store = Store::connect(&DatabaseSettings::with_url(db.url()))
        .await
        .unwrap();
    let engine = Arc::new(Engine::new(config, "test-rules"));
    let (recorder, _writer) = ResultRecorder::spawn(store.fds(), 1000);
    let mut service = FraudDetectionService::new(
        Arc::clone(&engine),
        store.clone(),
        recorder,
        Duration::from_millis(500),
    );
    let shutdown = CancellationToken::new();
    let index = with_index.then(|| {
        let index = VelocityIndex::new();
        service = service.clone().with_velocity_index(Arc::clone(&index));
        velocity::sync(Arc::clone(&index), store.velocity(), shutdown.clone());
        index
    });
    let keys = GrpcKeys {
        admin: TestKey::new(&[Scope::Admin]),
        score: TestKey::new(&[Scope::FdsScore]),
        reader: TestKey::new(&[Scope::OrdersRead]),
    };
    let mut auth_settings = auth_settings(&[&keys.admin, &keys.score, &keys.reader]);
    // A revoke shows within a second, not the default 30.
    auth_settings.cache_ttl = Duration::from_secs(1);
    let auth = Authenticator::new(&auth_settings, Some(store.api_keys()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (server_tls, client_tls) = match tls {
        Some(tls) => (Some(tls.server), Some(tls.client)),
        None => (None, None),
    };
    let server = tokio::spawn(fds_worker::grpc::serve_with_tls(
        listener,
        service,
        64,
        server_tls,
        auth,
        shutdown.clone(),
    ));
    let channel = match client_tls {
        Some(client_tls) => Channel::from_shared(format!("https://{addr}"))
            .unwrap()
            .tls_config(client_tls)
            .unwrap(),
        None => Channel::from_shared(format!("http://{addr}")).unwrap(),
    }
    .connect()
    .await
    .unwrap();
    TestGrpc {
        addr,
        client: FraudDetectionClient::with_interceptor(
            channel.clone(),
            WithKey::new(Some(&keys.admin)),
        ),
        keys,
        channel,
        engine,
        store,
        index,
        shutdown,
        server: Some(server),
        _db: db,
    }
}

impl TestGrpc {
    /// A client sending `key` (none if `None`).
    pub fn client_with(&self, key: Option<&TestKey>) -> Client {
        FraudDetectionClient::with_interceptor(self.channel.clone(), WithKey::new(key))
    }

    /// The decisions recorded for `order_id`, once at least `count` are there (5 s deadline).
    pub async fn recorded(&self, order_id: &str, count: usize) -> Vec<FdsResultRecord> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let rows = self.store.fds().for_order(order_id).await.unwrap();
            if rows.len() >= count {
                return rows;
            }
            assert!(
                Instant::now() < deadline,
                "{count} fds_results for {order_id} within 5 s, got {rows:?}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits (5 s deadline) until the index is synced and holds `count` orders.
    pub async fn index_holds(&self, count: usize) {
        let index = self.index.as_ref().expect("spawned with an index");
        let deadline = Instant::now() + Duration::from_secs(5);
        while !(index.is_synced() && index.len() == count) {
            assert!(
                Instant::now() < deadline,
                "index synced with {count} orders within 5 s; synced {}, holds {}",
                index.is_synced(),
                index.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Inserts a stored order placed `minutes_ago` by `customer_id` from `ip` with `card`.
    pub async fn insert_order(&self, customer_id: &str, ip: &str, card: &str, minutes_ago: i64) {
        sqlx::query(
            "INSERT INTO orders (id, customer_id, customer_email, customer_name, currency, total, \
                                 shipping_address, billing_country, payment, client_ip, status, \
                                 fds, tasks, created_at) \
             VALUES ($1, $2, 'v@example.com', 'V', 'KRW', 1000, '{}', 'KR', $3, $4, 'accepted', \
                     '{}', '{}', now() - make_interval(mins => $5))",
        )
        .bind(uuid::Uuid::new_v4())
        .bind(customer_id)
        .bind(serde_json::json!({ "method": "card", "card_fingerprint": card }))
        .bind(ip)
        .bind(i32::try_from(minutes_ago).unwrap())
        .execute(self.store.pool())
        .await
        .unwrap();
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            server.await.unwrap().unwrap();
        }
    }
}

impl Drop for TestGrpc {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// An order no built-in rule objects to.
pub fn plain_request(order_id: &str) -> ScoreRequest {
    ScoreRequest {
        order_id: order_id.to_owned(),
        customer_id: format!("c-{order_id}"),
        email: "minsu.kim@example.com".into(),
        client_ip: "203.0.113.7".into(),
        amount: 90_000,
        currency: "KRW".into(),
        items: vec![Item {
            sku: "KB-101".into(),
            name: "무선 키보드".into(),
            quantity: 2,
            unit_price: 45_000,
        }],
        shipping_country: "KR".into(),
        billing_country: "KR".into(),
        card_fingerprint: format!("fp-{order_id}"),
        payment_token: "tok_1".into(),
        account_created_at: Some(prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        }),
    }
}
