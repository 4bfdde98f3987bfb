//! Runs the real `beat-scheduler` binary against a RabbitMQ vhost and a PostgreSQL database of its
//! own, and talks to it the way an operator would: ops endpoints, queues, signals.

use std::path::PathBuf;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use shopfds_testkit::pg::TestDatabase;
use shopfds_testkit::process::ChildGuard;
use shopfds_testkit::rabbit::TestVhost;
use shopfds_testkit::{free_port, init_tracing};

pub const BIN: &str = env!("CARGO_BIN_EXE_beat-scheduler");
const STARTUP: Duration = Duration::from_secs(30);

/// The running binary; dropped before its vhost and database (field order).
pub struct TestService {
    pub child: ChildGuard,
    pub ops: String,
    pub vhost: TestVhost,
    pub db: TestDatabase,
}

/// Starts the binary with `BROKER_URL`, `DATABASE_URL` and `OPS_ADDR` of its own and waits until
/// `/healthz` answers 200.
pub async fn spawn_service() -> TestService {
    init_tracing();
    let vhost = tokio::task::spawn_blocking(TestVhost::create)
        .await
        .unwrap()
        .unwrap();
    let db = TestDatabase::create().await.unwrap();
    let port = free_port();
    let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("beat-scheduler-{port}.log"));
    let mut cmd = Command::new(BIN);
    clean_env(&mut cmd)
        .env("BROKER_URL", vhost.amqp_url())
        .env("DATABASE_URL", db.url())
        .env("OPS_ADDR", format!("127.0.0.1:{port}"));
    let child = ChildGuard::spawn_logged(&mut cmd, &log).unwrap();
    let mut service = TestService {
        child,
        ops: format!("http://127.0.0.1:{port}"),
        vhost,
        db,
    };
    service.wait_healthy().await;
    service
}

/// Removes the variables a developer's shell may carry that would change what is under test.
pub fn clean_env(cmd: &mut Command) -> &mut Command {
    for variable in ["QUEUE_TYPE", "OTEL_EXPORTER_OTLP_ENDPOINT", "LOG_FORMAT"] {
        cmd.env_remove(variable);
    }
    cmd.env("RUST_LOG", "info")
}

impl TestService {
    async fn wait_healthy(&mut self) {
        let deadline = Instant::now() + STARTUP;
        loop {
            if let Ok(response) = reqwest::get(format!("{}/healthz", self.ops)).await
                && response.status() == reqwest::StatusCode::OK
            {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "{} exited ({status}) before /healthz",
                    self.child.describe()
                );
            }
            assert!(
                Instant::now() < deadline,
                "/healthz not 200 within {STARTUP:?}: {}",
                self.child.describe()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `GET path` on the ops port: status and body.
    pub async fn get(&self, path: &str) -> (reqwest::StatusCode, String) {
        let response = reqwest::get(format!("{}{path}", self.ops)).await.unwrap();
        let status = response.status();
        (status, response.text().await.unwrap())
    }

    /// Waits until `queue` exists in the vhost (the service declares the topology after start).
    pub async fn wait_for_queue(&self, queue: &str) {
        let deadline = Instant::now() + STARTUP;
        loop {
            match self.vhost.queue_depth(queue) {
                Ok(_) => return,
                Err(e) if Instant::now() >= deadline => {
                    panic!(
                        "queue {queue} not declared: {e:#}\n{}",
                        self.child.describe()
                    )
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Migrations the service applied to its database at start.
    pub async fn applied_migrations(&self) -> i64 {
        let pool = self.db.pool().await.unwrap();
        let applied = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
            .fetch_one(&pool)
            .await
            .unwrap();
        pool.close().await;
        applied
    }

    pub async fn terminate(&mut self) -> ExitStatus {
        self.child.terminate(Duration::from_secs(30)).await.unwrap()
    }
}

/// Runs the binary with `vars` set and returns its exit status and stderr; it must exit on its
/// own within 30 s (a settings error is reported before anything connects).
pub async fn run_with_env(vars: &[(&str, &str)]) -> (ExitStatus, String) {
    let mut cmd = Command::new(BIN);
    clean_env(&mut cmd)
        .env("OPS_ADDR", format!("127.0.0.1:{}", free_port()))
        .envs(vars.iter().copied());
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .expect("the binary kept running despite invalid settings")
        .unwrap();
    (
        output.status,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
