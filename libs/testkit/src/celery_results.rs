//! A stock Celery client reading results (`interop/python/results_client.py`), for the tests of
//! the Rust result backends: it sends with `app.send_task` (or builds a stock `chord`) and reads
//! with `AsyncResult` — `.get(timeout=…)`, `.state`, `.info` — through the result backend given
//! as `SHOPFDS_RESULT_BACKEND` (`redis://…`, `rpc://`), exactly as a Python user would.
//!
//! The client prints one JSON object per line; [`ResultsClient::next`] reads them as they come,
//! so a test can act between two of them (release a task once the client saw its PROGRESS).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use crate::{python, tail, temp_dir};

/// A running `results_client.py`; killed on drop.
pub struct ResultsClient {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    stderr: PathBuf,
    _dir: tempfile::TempDir,
}

impl ResultsClient {
    /// Starts `results_client.py <args…>` against `broker_url` with `result_backend`.
    pub async fn spawn(
        broker_url: &str,
        result_backend: &str,
        args: &[String],
    ) -> anyhow::Result<ResultsClient> {
        let python = tokio::task::spawn_blocking(python::python).await??;
        let dir = temp_dir("results-client")?;
        let stderr = dir.path().join("stderr.log");
        let err_file = std::fs::File::create(&stderr)?;
        let mut child = Command::new(python)
            .arg(python::interop_dir().join("results_client.py"))
            .args(args)
            .env("PYTHONPATH", python::interop_dir())
            .env("PYTHONUNBUFFERED", "1")
            .env("BROKER_URL", broker_url)
            .env("SHOPFDS_RESULT_BACKEND", result_backend)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(err_file))
            .kill_on_drop(true)
            .spawn()
            .context("cannot start results_client.py")?;
        let stdout = child
            .stdout
            .take()
            .context("results_client.py has no stdout")?;
        Ok(ResultsClient {
            child,
            lines: BufReader::new(stdout).lines(),
            stderr,
            _dir: dir,
        })
    }

    /// The next JSON line the client printed, within `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> anyhow::Result<Value> {
        let line = match tokio::time::timeout(timeout, self.lines.next_line()).await {
            Ok(Ok(Some(line))) => line,
            Ok(Ok(None)) => bail!(
                "results_client.py ended without printing more; stderr:\n{}",
                tail(&self.stderr, 30)
            ),
            Ok(Err(e)) => return Err(e).context("cannot read results_client.py's output"),
            Err(_) => bail!(
                "results_client.py printed nothing within {timeout:?}; stderr:\n{}",
                tail(&self.stderr, 30)
            ),
        };
        serde_json::from_str(&line).with_context(|| format!("results_client.py printed {line:?}"))
    }

    /// The client's stderr so far (its log, a traceback).
    pub fn stderr(&self) -> String {
        tail(&self.stderr, 60)
    }

    /// Waits for the client to exit.
    pub async fn wait(mut self, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
        tokio::time::timeout(timeout, self.child.wait())
            .await
            .context("results_client.py did not exit")?
            .context("cannot wait for results_client.py")
    }
}

/// The arguments of `get` / `progress` (`command`) for task `name`.
pub fn task_args(
    command: &str,
    name: &str,
    kwargs: &Value,
    queue: Option<&str>,
    timeout: Duration,
) -> Vec<String> {
    let mut args = vec![
        command.to_owned(),
        name.to_owned(),
        "--kwargs".to_owned(),
        kwargs.to_string(),
        "--timeout".to_owned(),
        timeout.as_secs_f64().to_string(),
    ];
    if let Some(queue) = queue {
        args.push("--queue".to_owned());
        args.push(queue.to_owned());
    }
    args
}

/// `app.send_task(name, kwargs=…, queue=…).get(timeout=…)` with the stock client: the outcome
/// line, `{"id", "state", "result"}` or `{"id", "state", "raised", "raised_module", "message"}`.
pub async fn send_and_get(
    broker_url: &str,
    result_backend: &str,
    name: &str,
    kwargs: &Value,
    queue: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<Value> {
    let args = task_args("get", name, kwargs, queue, timeout);
    let mut client = ResultsClient::spawn(broker_url, result_backend, &args).await?;
    client.next(timeout + Duration::from_secs(30)).await
}

/// The arguments of `chord`: parts as `(task, queue, kwargs)`, the body as `(task, queue)`.
pub fn chord_args(
    parts: &[(&str, &str, Value)],
    body: (&str, &str),
    timeout: Duration,
) -> Vec<String> {
    let mut args = vec!["chord".to_owned()];
    for (task, queue, kwargs) in parts {
        args.push("--part".to_owned());
        args.push(format!("{task}:{queue}:{kwargs}"));
    }
    args.push("--body".to_owned());
    args.push(format!("{}:{}", body.0, body.1));
    args.push("--timeout".to_owned());
    args.push(timeout.as_secs_f64().to_string());
    args
}
