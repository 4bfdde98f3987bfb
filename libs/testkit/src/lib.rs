//! Dev-only helpers for the tests of the other ShopFDS crates: real servers, never stand-ins.
//!
//! Each test gets its own RabbitMQ vhost ([`rabbit::TestVhost`]) and PostgreSQL database
//! ([`pg::TestDatabase`]) on the shared servers, so tests declaring the same queue and table names
//! run in parallel; a real SMTP server ([`smtp::SmtpSink`], aiosmtpd) and a stock Python Celery
//! worker and client ([`celery`]) for the interop tests; and [`process::ChildGuard`] to run the
//! service binaries in smoke tests. A test that stops, restarts or disturbs a broker starts a
//! RabbitMQ node of its own ([`rabbit_node::RabbitNode`]), or a cluster of them
//! ([`rabbit_cluster::RabbitCluster`]). Everything started here is torn down on `Drop`.
//!
//! The servers are expected at 127.0.0.1:5672 (guest/guest) and 127.0.0.1:5432 (user postgres,
//! trust); `scripts/ensure-services.sh` installs and starts them. The Python side lives in
//! `interop/python` and its virtualenv is built by `scripts/python-env.sh` on first use.

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::Duration;

use anyhow::bail;

pub mod binaries;
pub mod celery;
pub mod celery_monitor;
pub mod celery_results;
pub mod keys;
pub mod net;
pub mod otlp;
pub mod partner;
pub mod pdf;
pub mod pg;
pub mod process;
pub mod python;
pub mod rabbit;
pub mod rabbit_cluster;
pub mod rabbit_node;

pub mod raw_http;
pub mod s3;
pub mod service;
pub mod smtp;
pub mod tls;

/// The repository root (two levels above this crate's manifest).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| manifest.join("../.."))
}

/// A loopback TCP port that was free a moment ago (bound to port 0, read, released).
///
/// Another process may take it before the caller binds it; servers started by this crate retry
/// with a new port when that happens.
pub fn free_port() -> u16 {
    match TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).and_then(|l| l.local_addr()) {
        Ok(addr) => addr.port(),
        Err(err) => panic!("cannot bind an ephemeral port on 127.0.0.1: {err}"),
    }
}

/// A loopback TCP port below the kernel's ephemeral range that was free a moment ago: for a
/// server that is killed and started again on the same address. [`free_port`] hands out
/// ephemeral ports, which any outgoing connection may take while the server is down; the ports
/// chosen here are never given to outgoing connections. Falls back to [`free_port`] when the
/// ephemeral range starts too low to leave room below it.
pub fn stable_port() -> u16 {
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    // 10,000 ports just below the ephemeral range, away from the well-known low ones.
    let Some(low) = ephemeral_start
        .checked_sub(10_000)
        .filter(|low| *low >= 10_000)
    else {
        return free_port();
    };
    for _ in 0..100 {
        let bytes = *uuid::Uuid::new_v4().as_bytes();
        let draw = u16::from_le_bytes([bytes[0], bytes[1]]);
        let port = low + draw % 10_000;
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
    free_port()
}

/// Waits until something accepts TCP connections on 127.0.0.1:`port`.
pub async fn wait_for_port(port: u16, timeout: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await {
            Ok(_) => return Ok(()),
            Err(err) if tokio::time::Instant::now() >= deadline => {
                bail!("nothing accepts connections on 127.0.0.1:{port} after {timeout:?}: {err}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(25)).await,
        }
    }
}

/// Installs a `tracing` subscriber that writes through the test harness (so output is shown only
/// for failing tests), filtered by `RUST_LOG` (default `info`). Safe to call from every test.
pub fn init_tracing() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        // Another subscriber may already be installed by the test itself; keep it.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}

/// A fresh directory under the system temp dir, removed on drop; `prefix` names the owner.
pub(crate) fn temp_dir(prefix: &str) -> anyhow::Result<tempfile::TempDir> {
    Ok(tempfile::Builder::new()
        .prefix(&format!("shopfds-{prefix}-"))
        .tempdir()?)
}

/// The last `lines` lines of a text file, for error messages about a child process.
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(err) => format!("(cannot read {}: {err})", path.display()),
    }
}
