//! What stock Celery's monitoring tools see, through `interop/python/monitor_probe.py`: the
//! replies to a remote-control command (`celery inspect …`, `celery control …`) and the events
//! on `celeryev`, as JSON, so a test can put the same question to a stock worker and a Rust one.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::python;

async fn probe() -> anyhow::Result<Command> {
    let python = tokio::task::spawn_blocking(python::python).await??;
    let mut cmd = Command::new(python);
    cmd.arg(python::interop_dir().join("monitor_probe.py"))
        .env("PYTHONPATH", python::interop_dir())
        .kill_on_drop(true);
    Ok(cmd)
}

/// Broadcasts `command` with `args` to `destination` (everyone if empty) and returns
/// `{node: reply}` of the replies that came within `timeout`.
pub async fn inspect(
    broker_url: &str,
    command: &str,
    destination: &[&str],
    args: &Value,
    timeout: Duration,
) -> anyhow::Result<Value> {
    let mut cmd = probe().await?;
    cmd.args(["inspect", command, "--timeout"])
        .arg(timeout.as_secs_f64().to_string())
        .arg("--args")
        .arg(args.to_string())
        .env("BROKER_URL", broker_url);
    for node in destination {
        cmd.args(["--dest", node]);
    }
    let out = cmd.output().await.context("run monitor_probe.py inspect")?;
    if !out.status.success() {
        bail!(
            "monitor_probe.py inspect {command} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "inspect {command}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Events captured on `celeryev` by a stock `app.events.Receiver`.
pub struct EventCapture {
    child: Child,
}

impl EventCapture {
    /// Starts capturing for at most `seconds`, or until `until` (`("task-succeeded", 3)`)
    /// events of that type arrived; returns once the receiver's queue is bound.
    pub async fn start(
        broker_url: &str,
        seconds: f64,
        until: Option<(&str, usize)>,
    ) -> anyhow::Result<EventCapture> {
        let mut cmd = probe().await?;
        cmd.args(["events", "--seconds"])
            .arg(seconds.to_string())
            .env("BROKER_URL", broker_url)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some((kind, count)) = until {
            cmd.arg("--until").arg(format!("{kind}:{count}"));
        }
        let mut child = cmd.spawn().context("start monitor_probe.py events")?;
        let stderr = child.stderr.take().context("no stderr")?;
        let mut lines = BufReader::new(stderr).lines();
        let ready = async {
            while let Some(line) = lines.next_line().await? {
                if line.trim() == "ready" {
                    return Ok(());
                }
            }
            bail!("the event receiver exited before it was ready")
        };
        tokio::time::timeout(Duration::from_secs(30), ready)
            .await
            .context("the event receiver did not get ready in 30 s")??;
        // Keep draining stderr so the receiver never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(EventCapture { child })
    }

    /// Waits for the capture to end and returns the events, in arrival order.
    pub async fn finish(mut self) -> anyhow::Result<Vec<Value>> {
        let mut stdout = self.child.stdout.take().context("no stdout")?;
        let mut text = String::new();
        stdout.read_to_string(&mut text).await?;
        let status = self.child.wait().await?;
        if !status.success() {
            bail!("the event receiver failed ({status})");
        }
        serde_json::from_str(&text).with_context(|| format!("events: {text}"))
    }
}
