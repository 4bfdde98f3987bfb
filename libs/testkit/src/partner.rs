//! A shipping partner's API for tests that run the whole order: `interop/python/partner_stub.py`
//! (the one `make demo` runs) on a free loopback port. It books one shipment per
//! `Idempotency-Key` and lists its bookings, with the calls each took, at `GET /shipments`.
//!
//! Tests that script the partner's answers call by call (503, 429, 400) run a server of their
//! own (email-worker's `tests/email_worker/shipment.rs`).

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

use crate::process::ChildGuard;
use crate::{free_port, python, temp_dir};

const START_ATTEMPTS: usize = 3;
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// One booking as the partner keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Booking {
    /// The caller's `Idempotency-Key` (`shipment-<order id>`).
    pub key: String,
    pub tracking_number: String,
    /// Calls that asked for this booking (a retried call after a lost answer makes two).
    pub calls: u64,
}

pub struct PartnerStub {
    port: u16,
    // Dropped first, while its log file still exists.
    child: ChildGuard,
    _dir: tempfile::TempDir,
}

impl PartnerStub {
    /// Starts the stub and waits until it answers `GET /shipments`.
    pub async fn start() -> anyhow::Result<PartnerStub> {
        let venv_python = tokio::task::spawn_blocking(python::python).await??;
        let dir = temp_dir("partner")?;
        let script = python::interop_dir().join("partner_stub.py");
        let mut last_error = None;
        for attempt in 1..=START_ATTEMPTS {
            let port = free_port();
            let log = dir.path().join(format!("partner-{attempt}.log"));
            let mut cmd = Command::new(&venv_python);
            cmd.arg(&script)
                .arg(port.to_string())
                .env("PYTHONUNBUFFERED", "1");
            let mut child = ChildGuard::spawn_logged(&mut cmd, &log)
                .with_context(|| format!("starting {}", script.display()))?;
            match wait_ready(&mut child, port).await {
                Ok(()) => {
                    return Ok(PartnerStub {
                        port,
                        _dir: dir,
                        child,
                    });
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("the partner stub did not start")))
    }

    /// `http://127.0.0.1:<port>`: `SHIPPING_PARTNER_URL`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The stub's log (one line per call), for failure messages.
    pub fn log(&self) -> String {
        self.child.log()
    }

    /// Every booking so far.
    pub async fn bookings(&self) -> anyhow::Result<Vec<Booking>> {
        let list: Vec<Value> = reqwest::get(format!("{}/shipments", self.url()))
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok(list
            .iter()
            .map(|b| Booking {
                key: b["key"].as_str().unwrap_or_default().to_owned(),
                tracking_number: b["tracking_number"].as_str().unwrap_or_default().to_owned(),
                calls: b["calls"].as_u64().unwrap_or(0),
            })
            .collect())
    }
}

async fn wait_ready(child: &mut ChildGuard, port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    let url = format!("http://127.0.0.1:{port}/shipments");
    loop {
        if let Some(status) = child.try_wait()? {
            bail!(
                "the partner stub exited ({status}) on port {port}: {}",
                child.describe()
            );
        }
        if let Ok(resp) = reqwest::get(&url).await
            && resp.status().is_success()
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "the partner stub did not answer on port {port} within {START_TIMEOUT:?}: {}",
                child.describe()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
