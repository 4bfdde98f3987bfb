//! The four binaries of an order's path as processes on one database and vhost, each exporting
//! spans to the test's collector, with the SMTP sink, partner stub and storage directory they
//! need.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use shopfds_auth::Scope;
use shopfds_testkit::keys::TestKey;
use shopfds_testkit::partner::PartnerStub;
use shopfds_testkit::pg::TestDatabase;
use shopfds_testkit::process::ChildGuard;
use shopfds_testkit::rabbit::TestVhost;
use shopfds_testkit::smtp::SmtpSink;

/// Variables of the caller's environment that would change what the services do.
const CLEARED: [&str; 12] = [
    "RUST_MIN_STACK",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "API_KEYS",
    "FDS_API_KEY",
    "RESULT_BACKEND",
    "WORKER_QUEUES",
    "QUEUE_TYPE",
    "STORAGE_URL",
    "RELAY_ENABLED",
    "SHIPPING_PARTNER_TOKEN",
];

pub struct Fleet {
    pub http: reqwest::Client,
    /// `http://127.0.0.1:<port>` of order-api's API.
    pub api: String,
    /// Every process's ops port, as URLs: order-api's, the fds-workers', email-worker's,
    /// report-worker's.
    pub ops_urls: Vec<String>,
    key: TestKey,
    /// The fds-worker(s), email-worker, report-worker, then order-api (last: stopped first, so
    /// the workers see no new work while they drain).
    pub processes: Vec<ChildGuard>,
    _smtp: SmtpSink,
    _partner: PartnerStub,
    _storage: tempfile::TempDir,
    _logs: tempfile::TempDir,
    pub vhost: TestVhost,
    _db: TestDatabase,
}

impl Fleet {
    /// Starts order-api (which migrates the database) then the three workers, each ready;
    /// spans go to `otlp_endpoint` if given, and the workers get `worker_env` besides.
    pub async fn start(otlp_endpoint: Option<&str>, worker_env: &[(&str, &str)]) -> Fleet {
        Fleet::start_with(otlp_endpoint, worker_env, 1).await
    }

    /// As [`Fleet::start`], with `fds_workers` fds-worker processes, each on a gRPC port of its
    /// own, all listed in order-api's `FDS_GRPC_URL`.
    pub async fn start_with(
        otlp_endpoint: Option<&str>,
        worker_env: &[(&str, &str)],
        fds_workers: usize,
    ) -> Fleet {
        let bin_dir = tokio::task::spawn_blocking(shopfds_testkit::binaries::build)
            .await
            .unwrap()
            .expect("the services build");
        let db = TestDatabase::create().await.unwrap();
        let vhost = tokio::task::spawn_blocking(TestVhost::create)
            .await
            .unwrap()
            .unwrap();
        let smtp = SmtpSink::start().await.unwrap();
        let partner = PartnerStub::start().await.unwrap();
        let storage = tempfile::tempdir().unwrap();
        let logs = tempfile::tempdir().unwrap();
        let key = TestKey::new(&[Scope::Admin]);
        let fds_key = TestKey::new(&[Scope::FdsScore]);
        let http = reqwest::Client::new();
        let storage_dir = storage.path().display().to_string();
        let common = |ops: u16| {
            let mut env = vec![
                ("DATABASE_URL", db.url()),
                ("BROKER_URL", vhost.amqp_url()),
                ("OPS_ADDR", format!("127.0.0.1:{ops}")),
                ("LOG_FORMAT", "json".to_owned()),
                ("RUST_LOG", "info".to_owned()),
            ];
            if let Some(endpoint) = otlp_endpoint {
                env.push(("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.to_owned()));
            }
            env
        };

        let api_port = shopfds_testkit::free_port();
        let grpc_ports: Vec<u16> = (0..fds_workers.max(1))
            .map(|_| shopfds_testkit::free_port())
            .collect();
        let fds_urls: Vec<String> = grpc_ports
            .iter()
            .map(|port| format!("http://127.0.0.1:{port}"))
            .collect();
        let mut processes = Vec::new();
        let mut ops_urls = Vec::new();
        let ops = shopfds_testkit::free_port();
        let mut env = common(ops);
        env.extend([
            ("HTTP_ADDR", format!("127.0.0.1:{api_port}")),
            ("FDS_GRPC_URL", fds_urls.join(",")),
            // A cold first call (connection, fds-worker's first query) must not fall back.
            ("FDS_TIMEOUT_MS", "5000".to_owned()),
            ("API_KEYS", key.entry.clone()),
            ("FDS_API_KEY", fds_key.key.clone()),
            ("STORAGE_DIR", storage_dir.clone()),
            ("RELAY_POLL_INTERVAL_MS", "200".to_owned()),
        ]);
        let order_api = spawn(
            &bin_dir,
            "order-api",
            &env,
            &logs.path().join("order-api.log"),
        );
        wait_ready(&http, ops, &order_api).await;
        ops_urls.push(format!("http://127.0.0.1:{ops}"));

        let names = grpc_ports
            .iter()
            .map(|port| ("fds-worker", Some(*port)))
            .chain([("email-worker", None), ("report-worker", None)]);
        for (index, (name, grpc_port)) in names.enumerate() {
            let ops = shopfds_testkit::free_port();
            let mut env = common(ops);
            env.extend(worker_env.iter().map(|(k, v)| (*k, (*v).to_owned())));
            match name {
                "fds-worker" => env.extend([
                    (
                        "GRPC_ADDR",
                        format!("127.0.0.1:{}", grpc_port.unwrap_or_default()),
                    ),
                    // Node names of their own, as pods' hostnames give them.
                    ("HOSTNAME", format!("fds-{index}")),
                    ("API_KEYS", fds_key.entry.clone()),
                ]),
                "email-worker" => env.extend([
                    ("SMTP_URL", smtp.url()),
                    ("SHIPPING_PARTNER_URL", partner.url()),
                    ("STORAGE_DIR", storage_dir.clone()),
                ]),
                _ => env.extend([
                    ("SMTP_URL", smtp.url()),
                    ("STORAGE_DIR", storage_dir.clone()),
                ]),
            }
            let child = spawn(
                &bin_dir,
                name,
                &env,
                &logs.path().join(format!("{name}-{index}.log")),
            );
            wait_ready(&http, ops, &child).await;
            ops_urls.push(format!("http://127.0.0.1:{ops}"));
            processes.push(child);
        }
        processes.push(order_api);
        Fleet {
            http,
            api: format!("http://127.0.0.1:{api_port}"),
            ops_urls,
            key,
            processes,
            _smtp: smtp,
            _partner: partner,
            _storage: storage,
            _logs: logs,
            vhost,
            _db: db,
        }
    }

    /// `POST /v1/orders` with an order fds-worker accepts.
    pub async fn post_order(&self) -> reqwest::Response {
        let body = serde_json::json!({
            "customer": {"id": "c-trace", "email": "trace@example.com", "name": "Trace"},
            "items": [{"sku": "S-1", "name": "Item", "quantity": 1, "unit_price": 1999}],
            "currency": "USD",
            "shipping_address": {"name": "Trace", "line1": "1 Main St", "city": "Springfield", "postal_code": "12345", "country": "US"},
            "billing_country": "US",
            "payment": {"method": "card"}
        });
        self.http
            .post(format!("{}/v1/orders", self.api))
            .header("authorization", self.key.bearer())
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.api))
            .header("authorization", self.key.bearer())
            .send()
            .await
            .unwrap()
    }

    /// Polls `GET /v1/tasks/{id}` until SUCCESS; panics on a final failure or at the deadline.
    pub async fn wait_for_success(&self, id: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let task: serde_json::Value = self
                .get(&format!("/v1/tasks/{id}"))
                .await
                .json()
                .await
                .unwrap();
            match task["state"].as_str() {
                Some("SUCCESS") => return,
                Some("FAILURE") => panic!("task failed: {task}\n{}", self.logs()),
                _ if Instant::now() > deadline => {
                    panic!("task not done in {timeout:?}: {task}\n{}", self.logs())
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// SIGTERM to every process, order-api first; each must exit 0 (having flushed its spans).
    pub async fn stop(&mut self) {
        for child in self.processes.iter_mut().rev() {
            let status = child.terminate(Duration::from_secs(30)).await.unwrap();
            assert!(
                status.success(),
                "{}: {status}\n{}",
                child.describe(),
                child.log()
            );
        }
    }

    pub fn logs(&self) -> String {
        self.processes
            .iter()
            .map(|c| format!("--- {}\n{}", c.describe(), c.log()))
            .collect()
    }
}

fn spawn(bin_dir: &Path, name: &str, env: &[(&str, String)], log: &Path) -> ChildGuard {
    let mut command = Command::new(bin_dir.join(name));
    for variable in CLEARED {
        command.env_remove(variable);
    }
    command.envs(env.iter().map(|(k, v)| (k, v)));
    ChildGuard::spawn_logged(&mut command, log).unwrap()
}

async fn wait_ready(http: &reqwest::Client, ops: u16, child: &ChildGuard) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = http
            .get(format!("http://127.0.0.1:{ops}/readyz"))
            .send()
            .await
            .is_ok_and(|response| response.status().is_success());
        if ready {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} not ready: {}",
            child.describe(),
            child.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
