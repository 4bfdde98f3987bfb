//! A service binary under test: started with a RabbitMQ vhost, a PostgreSQL database and an ops
//! port of its own, and talked to the way an operator would (ops endpoints, queues, signals).
//! The smoke tests of the worker and scheduler binaries use this instead of copies of their own.

use std::path::PathBuf;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use lapin::options::{BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Connection};
use serde_json::Value;

use crate::pg::TestDatabase;
use crate::process::ChildGuard;
use crate::rabbit::TestVhost;
use crate::{free_port, init_tracing};

const STARTUP: Duration = Duration::from_secs(30);

/// Variables a developer's shell may carry that would change what is under test. Among them
/// `RUST_MIN_STACK`, which `cargo test` sets for the test processes (`.cargo/config.toml`): a
/// binary under test sizes its own thread stack, as in production.
const CLEARED: [&str; 7] = [
    "RUST_MIN_STACK",
    "QUEUE_TYPE",
    "WORKER_QUEUES",
    "WORKER_CONCURRENCY",
    "WORKER_PREFETCH_MULTIPLIER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "LOG_FORMAT",
];

/// The running binary; dropped before its vhost and database (field order).
pub struct TestService {
    pub child: ChildGuard,
    /// `http://127.0.0.1:<OPS_ADDR port>`.
    pub ops: String,
    pub vhost: TestVhost,
    pub db: TestDatabase,
}

impl TestService {
    /// Starts `bin` with `BROKER_URL`, `DATABASE_URL` and `OPS_ADDR` of its own (plus `extra`)
    /// and waits until `/healthz` answers 200.
    pub async fn spawn(bin: &str, extra: &[(&str, String)]) -> anyhow::Result<TestService> {
        init_tracing();
        let vhost = tokio::task::spawn_blocking(TestVhost::create).await??;
        Self::spawn_on(bin, vhost, extra).await
    }

    /// As [`TestService::spawn`], on a vhost the test prepared (e.g. with a queue declared
    /// first by someone else).
    pub async fn spawn_on(
        bin: &str,
        vhost: TestVhost,
        extra: &[(&str, String)],
    ) -> anyhow::Result<TestService> {
        init_tracing();
        let db = TestDatabase::create().await?;
        let port = free_port();
        let name = PathBuf::from(bin)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let log = std::env::temp_dir().join(format!("shopfds-{name}-{port}.log"));
        let mut cmd = Command::new(bin);
        clean_env(&mut cmd)
            .env("BROKER_URL", vhost.amqp_url())
            .env("DATABASE_URL", db.url())
            .env("OPS_ADDR", format!("127.0.0.1:{port}"))
            .envs(extra.iter().map(|(k, v)| (*k, v.as_str())));
        let child = ChildGuard::spawn_logged(&mut cmd, &log)?;
        let mut service = TestService {
            child,
            ops: format!("http://127.0.0.1:{port}"),
            vhost,
            db,
        };
        service.wait_healthy().await?;
        Ok(service)
    }

    async fn wait_healthy(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + STARTUP;
        loop {
            if let Ok(response) = reqwest::get(format!("{}/healthz", self.ops)).await
                && response.status() == reqwest::StatusCode::OK
            {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited ({status}) before /healthz",
                    self.child.describe()
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "/healthz not 200 within {STARTUP:?}: {}",
                    self.child.describe()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `GET path` on the ops port: status and body.
    pub async fn get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        let response = reqwest::get(format!("{}{path}", self.ops)).await?;
        let status = response.status().as_u16();
        Ok((status, response.text().await?))
    }

    /// Waits until `/readyz` answers 200 (a worker is ready once it consumes, a while after
    /// `/healthz`) and returns its body; the last answer and the log otherwise.
    pub async fn wait_ready(&self, within: Duration) -> anyhow::Result<Value> {
        let deadline = Instant::now() + within;
        loop {
            let (status, body) = self.get("/readyz").await?;
            if status == 200 {
                return Ok(serde_json::from_str(&body)?);
            }
            if Instant::now() >= deadline {
                bail!(
                    "/readyz still {status} after {within:?}: {body}\n{}",
                    self.child.describe()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until `queue` exists in the vhost (services declare the topology after start).
    pub async fn wait_for_queue(&self, queue: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + STARTUP;
        loop {
            match self.vhost.queue_depth(queue) {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() >= deadline => {
                    bail!(
                        "queue {queue} not declared: {e:#}\n{}",
                        self.child.describe()
                    )
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Migrations the service applied to its database at start.
    pub async fn applied_migrations(&self) -> anyhow::Result<i64> {
        let pool = self.db.pool().await?;
        let applied = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
            .fetch_one(&pool)
            .await?;
        pool.close().await;
        Ok(applied)
    }

    pub async fn terminate(&mut self) -> anyhow::Result<ExitStatus> {
        self.child.terminate(Duration::from_secs(30)).await
    }

    /// Sends SIGTERM and fails unless the process exits 0 (its output in the error).
    pub async fn assert_stops_cleanly(&mut self) -> anyhow::Result<()> {
        let status = self.terminate().await?;
        if !status.success() {
            bail!("exit {status}: {}", self.child.describe());
        }
        Ok(())
    }

    /// Publishes a task no handler knows to each of `queues` and checks it lands in
    /// `failed.<queue>` as it was, with a reason naming the task.
    pub async fn assert_unknown_tasks_dead_lettered(&self, queues: &[&str]) -> anyhow::Result<()> {
        let conn = self.vhost.connect().await?;
        for queue in queues {
            let task = format!("no_such_{queue}_task");
            let id = publish_task(&conn, &task, queue).await?;
            let (properties, body) = take_message(&conn, &format!("failed.{queue}")).await?;
            let reason = header(&properties, "x-shopfds-reason")
                .with_context(|| format!("failed.{queue}: no reason header"))?;
            if !(reason.contains("unknown task") && reason.contains(&task)) {
                bail!("failed.{queue}: reason {reason:?}");
            }
            if header(&properties, "id").as_deref() != Some(id.as_str()) {
                bail!("failed.{queue}: another message than {id}");
            }
            if !body.is_array() {
                bail!("failed.{queue}: the body was not forwarded as is: {body}");
            }
        }
        let _ = conn.close(200, "done".into()).await;
        Ok(())
    }
}

/// Starts `bin` with each `(variable, value)` in turn and fails unless every start exits
/// non-zero with the variable named on stderr.
pub async fn assert_invalid_variables_named(
    bin: &str,
    cases: &[(&str, &str)],
) -> anyhow::Result<()> {
    for (variable, value) in cases {
        let (status, stderr) = run_with_env(bin, &[(variable, value)]).await?;
        if status.success() {
            bail!("{variable}={value} accepted");
        }
        // The service shell's exit status for a configuration error: nothing was started.
        if status.code() != Some(2) {
            bail!("{variable}={value}: exit status {status}, expected 2: {stderr}");
        }
        if !stderr.contains(variable) {
            bail!("{variable}={value}: stderr does not name it: {stderr}");
        }
    }
    Ok(())
}

fn clean_env(cmd: &mut Command) -> &mut Command {
    for variable in CLEARED {
        cmd.env_remove(variable);
    }
    cmd.env("RUST_LOG", "info")
}

/// Publishes a minimal Celery protocol v2 message for `task` (no arguments) to work queue
/// `queue`, confirmed; returns its id.
pub async fn publish_task(conn: &Connection, task: &str, queue: &str) -> anyhow::Result<String> {
    let id = uuid::Uuid::new_v4().to_string();
    let mut headers = FieldTable::default();
    for (k, v) in [
        ("lang", "py"),
        ("task", task),
        ("id", id.as_str()),
        ("root_id", id.as_str()),
    ] {
        headers.insert(k.into(), AMQPValue::LongString(LongString::from(v)));
    }
    headers.insert("retries".into(), AMQPValue::LongInt(0));
    let props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_content_encoding("utf-8".into())
        .with_delivery_mode(2)
        .with_correlation_id(id.as_str().into())
        .with_headers(headers);
    let channel = conn.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let body = br#"[[], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]"#;
    let confirm = channel
        .basic_publish(
            queue.into(),
            queue.into(),
            BasicPublishOptions {
                mandatory: true,
                immediate: false,
            },
            body,
            props,
        )
        .await?
        .await?;
    if !confirm.is_ack() || confirm.take_message().is_some() {
        bail!("the broker did not accept the message for {queue}");
    }
    let _ = channel.close(200, "published".into()).await;
    Ok(id)
}

/// Takes the first message `basic_get` finds in `queue` within 30 s: properties and JSON body.
pub async fn take_message(
    conn: &Connection,
    queue: &str,
) -> anyhow::Result<(BasicProperties, Value)> {
    let channel = conn.create_channel().await?;
    let deadline = Instant::now() + STARTUP;
    loop {
        if let Some(message) = channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await?
        {
            let delivery = message.delivery;
            let body =
                serde_json::from_slice(&delivery.data).context("message body is not JSON")?;
            let _ = channel.close(200, "read".into()).await;
            return Ok((delivery.properties, body));
        }
        if Instant::now() >= deadline {
            bail!("nothing arrived in {queue} within {STARTUP:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An AMQP header as a string (`None` when missing or not a string).
pub fn header(properties: &BasicProperties, name: &str) -> Option<String> {
    match properties.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// Runs `bin` with `vars` set (and a free OPS_ADDR) and returns its exit status and stderr; it
/// must exit on its own within 30 s (a settings error is reported before anything connects).
pub async fn run_with_env(
    bin: &str,
    vars: &[(&str, &str)],
) -> anyhow::Result<(ExitStatus, String)> {
    let mut cmd = Command::new(bin);
    clean_env(&mut cmd)
        .env("OPS_ADDR", format!("127.0.0.1:{}", free_port()))
        .envs(vars.iter().copied());
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .context("the binary kept running despite invalid settings")??;
    Ok((
        output.status,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

/// The checks every service's smoke test makes once it is up: migrations applied, `/readyz`
/// 200 (within the start-up deadline) with `database` and `broker` ok, `/metrics` with our collectors, the topology declared.
pub async fn assert_operational(service: &TestService) -> anyhow::Result<()> {
    if service.applied_migrations().await? == 0 {
        bail!("no migration applied");
    }
    let ready = service.wait_ready(STARTUP).await?;
    if ready["checks"]["database"] != "ok" || ready["checks"]["broker"] != "ok" {
        bail!("/readyz: {ready}");
    }
    let (status, metrics) = service.get("/metrics").await?;
    if status != 200 || !metrics.contains("shopfds_") {
        bail!("/metrics {status}: {metrics}");
    }
    for queue in ["default", "email", "fds", "reports", "maintenance"] {
        service.wait_for_queue(queue).await?;
        service.wait_for_queue(&format!("failed.{queue}")).await?;
    }
    Ok(())
}
