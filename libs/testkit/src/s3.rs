//! An S3-compatible server for the tests of `STORAGE_URL=s3://…`: moto's standalone server
//! (`moto_server`, from the pinned `interop/python/requirements.txt`) on a free loopback port. It
//! speaks the S3 REST API over plain HTTP and accepts any credentials; [`S3Server::bucket`]
//! creates a bucket.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::process::ChildGuard;
use crate::{free_port, python, temp_dir};

const START_ATTEMPTS: usize = 3;
const START_TIMEOUT: Duration = Duration::from_secs(30);

pub struct S3Server {
    port: u16,
    // Dropped first, while its log file still exists.
    child: ChildGuard,
    _dir: tempfile::TempDir,
}

impl S3Server {
    /// Starts `moto_server` and waits until it answers.
    pub async fn start() -> anyhow::Result<S3Server> {
        let server = tokio::task::spawn_blocking(|| python::bin("moto_server")).await??;
        let dir = temp_dir("s3")?;
        let mut last_error = None;
        for attempt in 1..=START_ATTEMPTS {
            let port = free_port();
            let log = dir.path().join(format!("moto-{attempt}.log"));
            let mut cmd = Command::new(&server);
            cmd.args(["-H", "127.0.0.1", "-p"]).arg(port.to_string());
            let mut child = ChildGuard::spawn_logged(&mut cmd, &log)
                .with_context(|| format!("starting {}", server.display()))?;
            match wait_ready(&mut child, port).await {
                Ok(()) => {
                    return Ok(S3Server {
                        port,
                        _dir: dir,
                        child,
                    });
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("moto_server did not start")))
    }

    /// `http://127.0.0.1:<port>`: `AWS_ENDPOINT` (with `AWS_ALLOW_HTTP=true`).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates bucket `name`.
    pub async fn bucket(&self, name: &str) -> anyhow::Result<()> {
        let resp = reqwest::Client::new()
            .put(format!("{}/{name}", self.endpoint()))
            .send()
            .await?;
        if !resp.status().is_success() {
            bail!("creating bucket {name}: {}", resp.status());
        }
        Ok(())
    }

    /// The server's log, for failure messages.
    pub fn log(&self) -> String {
        self.child.log()
    }
}

async fn wait_ready(child: &mut ChildGuard, port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    let url = format!("http://127.0.0.1:{port}/");
    loop {
        if let Some(status) = child.try_wait()? {
            bail!(
                "moto_server exited ({status}) on port {port}: {}",
                child.describe()
            );
        }
        if reqwest::get(&url).await.is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "moto_server did not answer on port {port} within {START_TIMEOUT:?}: {}",
                child.describe()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
