//! The stock Python side of the Celery interop tests: a Celery 5.5 worker running the app in
//! `interop/python/shopfds_celery.py` (the seed's configuration), and the stock client
//! (`app.send_task`). A task the stock worker executes appends one JSON line describing the
//! request it received, read back with [`CeleryWorker::executions`].

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

use crate::process::ChildGuard;
use crate::{python, temp_dir};

const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `celery worker`; stopped (SIGTERM, then SIGKILL after 5 s) on drop. Its log file is
/// printed when a test panics while it is alive.
#[derive(Debug)]
pub struct CeleryWorker {
    hostname: String,
    out: PathBuf,
    // Field order: the process stops before its directory is removed.
    child: ChildGuard,
    _dir: tempfile::TempDir,
}

impl CeleryWorker {
    /// Starts `celery -A shopfds_celery worker --pool threads --concurrency 2` consuming `queues`
    /// on `broker_url` and waits until it logs `ready.` (it has then declared the seed's whole
    /// topology: every work queue, `dlx` and the `failed.*` queues).
    pub async fn start(broker_url: &str, queues: &[&str]) -> anyhow::Result<CeleryWorker> {
        CeleryWorker::start_with_env(broker_url, queues, &[]).await
    }

    /// As [`CeleryWorker::start`], with extra environment variables for the Celery app (e.g.
    /// `BROKER_MAX_PRIORITY`, `SHOPFDS_QUEUE_TYPE`).
    pub async fn start_with_env(
        broker_url: &str,
        queues: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<CeleryWorker> {
        CeleryWorker::start_with_pool(broker_url, queues, env, "threads").await
    }

    /// As [`CeleryWorker::start_with_env`], with the pool `pool` (`threads`, `prefork`) of two.
    /// Celery 5.5's threads pool can lose task events (its event buffer is appended to by the
    /// pool's threads while the consumer flushes it); a test that reads a stock worker's events
    /// uses `prefork`.
    pub async fn start_with_pool(
        broker_url: &str,
        queues: &[&str],
        env: &[(&str, &str)],
        pool: &str,
    ) -> anyhow::Result<CeleryWorker> {
        if queues.is_empty() {
            bail!("CeleryWorker::start needs at least one queue");
        }
        let celery = tokio::task::spawn_blocking(|| python::bin("celery")).await??;
        let dir = temp_dir("celery")?;
        let out = dir.path().join("executions.jsonl");
        let log = dir.path().join("worker.log");
        let hostname = format!(
            "shopfds-test-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );

        let mut cmd = Command::new(celery);
        cmd.args(["-A", "shopfds_celery", "worker", "--loglevel=info", "-Q"])
            .arg(queues.join(","))
            .args(["--concurrency", "2", "--pool", pool, "-n"])
            .arg(format!("{hostname}@%h"))
            // Other workers on the broker are irrelevant to a test; mingle would wait for them.
            .args(["--without-mingle", "--without-gossip"])
            .current_dir(dir.path())
            .env("PYTHONPATH", python::interop_dir())
            .env("PYTHONUNBUFFERED", "1")
            .env("BROKER_URL", broker_url)
            .env("INTEROP_OUT", &out);
        cmd.envs(env.iter().copied());
        let mut child = ChildGuard::spawn_logged(&mut cmd, &log)?;
        child.wait_for_log(" ready.", READY_TIMEOUT).await?;
        Ok(CeleryWorker {
            hostname,
            out,
            child,
            _dir: dir,
        })
    }

    /// The worker's node name prefix (`<hostname>@<machine>`).
    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    /// The worker's log file.
    pub fn log_path(&self) -> Option<&Path> {
        self.child.log_path()
    }

    /// The worker's log so far.
    pub fn log(&self) -> String {
        self.child.log()
    }

    /// One JSON object per task executed so far, in order: `task, id, args, kwargs, retries,
    /// root_id, parent_id, group, eta, expires, traceparent, timelimit, correlation_id, origin,
    /// hostname, chain, callbacks, errbacks, chord, delivery_info {exchange, routing_key,
    /// redelivered, priority}, executed_at`.
    pub fn executions(&self) -> anyhow::Result<Vec<Value>> {
        let text = match std::fs::read_to_string(&self.out) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(err).context(format!("cannot read {}", self.out.display())),
        };
        // A line is written in one go; a line without its newline is still being written.
        text.split_inclusive('\n')
            .filter(|line| line.ends_with('\n') && !line.trim().is_empty())
            .map(|line| {
                serde_json::from_str(line).with_context(|| format!("bad execution line {line:?}"))
            })
            .collect()
    }

    /// Waits until at least `n` tasks have been executed and returns all executions.
    pub async fn wait_for_executions(
        &self,
        n: usize,
        timeout: Duration,
    ) -> anyhow::Result<Vec<Value>> {
        let deadline = Instant::now() + timeout;
        loop {
            let executions = self.executions()?;
            if executions.len() >= n {
                return Ok(executions);
            }
            if Instant::now() >= deadline {
                bail!(
                    "the Celery worker executed {} task(s), expected {n}, within {timeout:?}; {}",
                    executions.len(),
                    self.child.describe()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Warm shutdown (SIGTERM) and wait for the worker to exit.
    pub async fn stop(mut self, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
        self.child.terminate(timeout).await
    }
}

/// Everything `interop/python/send_task.py` can pass to `app.send_task`.
#[derive(Debug, Clone, Default)]
pub struct SendTask {
    pub name: String,
    /// Positional arguments (a JSON array); empty by default, as the seeds call with kwargs.
    pub args: Vec<Value>,
    /// Keyword arguments (a JSON object).
    pub kwargs: serde_json::Map<String, Value>,
    /// Overrides the app's `task_routes`.
    pub queue: Option<String>,
    pub countdown: Option<f64>,
    pub task_id: Option<String>,
    /// Extra message headers, e.g. `traceparent`.
    pub headers: serde_json::Map<String, Value>,
    /// Celery's `task_protocol`: `Some(1)` sends protocol v1 (the request in the body, no `task`
    /// header); `None` is the default, v2.
    pub protocol: Option<u8>,
    /// kombu's `compression` option (`zlib`, `bzip2`, `lzma`, …): the body is sent compressed.
    pub compression: Option<String>,
}

impl SendTask {
    pub fn new(name: &str, kwargs: Value) -> anyhow::Result<SendTask> {
        let Value::Object(kwargs) = kwargs else {
            bail!("kwargs must be a JSON object, got {kwargs}");
        };
        Ok(SendTask {
            name: name.to_owned(),
            kwargs,
            ..SendTask::default()
        })
    }
}

/// Enqueues `name` with the stock Celery client (`app.send_task(name, kwargs=…, queue=…)`) and
/// returns the task id it printed. Without `queue`, the app's `task_routes` decide.
pub async fn send_task(
    broker_url: &str,
    name: &str,
    kwargs: Value,
    queue: Option<&str>,
) -> anyhow::Result<String> {
    let mut task = SendTask::new(name, kwargs)?;
    task.queue = queue.map(str::to_owned);
    send_task_with(broker_url, &task).await
}

/// [`send_task`] with every option of the stock client.
pub async fn send_task_with(broker_url: &str, task: &SendTask) -> anyhow::Result<String> {
    let python = tokio::task::spawn_blocking(python::python).await??;
    let script = python::interop_dir().join("send_task.py");
    let mut cmd = tokio::process::Command::new(python);
    cmd.arg(&script)
        .arg(&task.name)
        .arg("--kwargs")
        .arg(Value::Object(task.kwargs.clone()).to_string())
        .arg("--args")
        .arg(Value::Array(task.args.clone()).to_string())
        .env("PYTHONPATH", python::interop_dir())
        .env("BROKER_URL", broker_url)
        .kill_on_drop(true);
    if let Some(queue) = &task.queue {
        cmd.arg("--queue").arg(queue);
    }
    if let Some(countdown) = task.countdown {
        cmd.arg("--countdown").arg(countdown.to_string());
    }
    if let Some(id) = &task.task_id {
        cmd.arg("--task-id").arg(id);
    }
    if let Some(protocol) = task.protocol {
        cmd.arg("--protocol").arg(protocol.to_string());
    }
    if let Some(compression) = &task.compression {
        cmd.arg("--compression").arg(compression);
    }
    if !task.headers.is_empty() {
        cmd.arg("--headers")
            .arg(Value::Object(task.headers.clone()).to_string());
    }
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .context("send_task.py did not finish within 60 s")?
        .context("cannot run send_task.py")?;
    if !out.status.success() {
        bail!(
            "send_task.py {} failed ({}):\n{}",
            task.name,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    match stdout.lines().map(str::trim).rfind(|line| !line.is_empty()) {
        Some(id) => Ok(id.to_owned()),
        None => bail!(
            "send_task.py printed no task id; stderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// What `interop/python/canvas.py send` enqueued: the task ids (a chain's in order, a group's
/// members in order) and the group id.
#[derive(Debug, Clone)]
pub struct SentCanvas {
    pub ids: Vec<String>,
    pub group: Option<String>,
}

/// Enqueues a canvas with the stock Celery client: `kind` "chain" is
/// `chain(generate_invoice_pdf, send_invoice_email)`, "group" is
/// `group(send_order_confirmation_email, generate_invoice_pdf, register_shipment)`, each with
/// `order_id`; `queue` overrides the app's routes for every task.
pub async fn send_canvas(
    broker_url: &str,
    kind: &str,
    order_id: &str,
    queue: Option<&str>,
) -> anyhow::Result<SentCanvas> {
    let python = tokio::task::spawn_blocking(python::python).await??;
    let script = python::interop_dir().join("canvas.py");
    let mut cmd = tokio::process::Command::new(python);
    cmd.arg(&script)
        .arg("send")
        .arg(kind)
        .arg("--order-id")
        .arg(order_id)
        .env("PYTHONPATH", python::interop_dir())
        .env("BROKER_URL", broker_url)
        .kill_on_drop(true);
    if let Some(queue) = queue {
        cmd.arg("--queue").arg(queue);
    }
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .context("canvas.py did not finish within 60 s")?
        .context("cannot run canvas.py")?;
    if !out.status.success() {
        bail!(
            "canvas.py send {kind} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .map(str::trim)
        .rfind(|line| !line.is_empty())
        .unwrap_or_default();
    let value: Value =
        serde_json::from_str(line).with_context(|| format!("canvas.py printed {line:?}"))?;
    let ids = value["ids"]
        .as_array()
        .map(|ids| {
            ids.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .ok_or_else(|| anyhow::anyhow!("canvas.py printed no ids: {line}"))?;
    Ok(SentCanvas {
        ids,
        group: value["group"].as_str().map(str::to_owned),
    })
}
