//! Settings of the fds-worker, from the environment, validated at start.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use shopfds_broker::settings::per_queue_variable;
use shopfds_broker::{BrokerSettings, WorkerSettings};
use shopfds_results::ResultSettings;
use shopfds_store::DatabaseSettings;
use shopfds_telemetry::TelemetrySettings;

pub const SERVICE: &str = "fds-worker";

/// Queues consumed unless `WORKER_QUEUES` says otherwise.
pub const DEFAULT_QUEUES: &[&str] = &["fds"];

/// Tasks running at once unless `WORKER_CONCURRENCY` says otherwise.
pub const DEFAULT_CONCURRENCY: usize = 4;

/// Score RPCs in progress at once unless `GRPC_CONCURRENCY` says otherwise.
pub const DEFAULT_GRPC_CONCURRENCY: usize = 256;

#[derive(Debug, Clone)]
pub struct Settings {
    pub broker: BrokerSettings,
    pub database: DatabaseSettings,
    pub worker: WorkerSettings,
    /// `RESULT_BACKEND` and its batch settings.
    pub results: ResultSettings,
    pub telemetry: TelemetrySettings,
    /// `OPS_ADDR`: `/healthz`, `/readyz`, `/metrics`. Default `127.0.0.1:9102`.
    pub ops_addr: SocketAddr,
    pub fds: FdsSettings,
    /// `API_KEYS`, `API_KEYS_CACHE_SECS`: the keys the gRPC server admits (with the `api_keys`
    /// table); see [`crate::auth`].
    pub auth: shopfds_auth::AuthSettings,
}

/// The gRPC score server and its rules.
#[derive(Debug, Clone)]
pub struct FdsSettings {
    /// `GRPC_ADDR`: the `fds.v1.FraudDetection` server. Default `127.0.0.1:50051`; port 0 picks one.
    pub grpc_addr: SocketAddr,
    /// `GRPC_CONCURRENCY`: RPCs served at once across all connections (more wait). Default 256.
    pub grpc_concurrency: usize,
    /// `FDS_RULES_PATH`: the rules file (TOML); unset or empty: the built-in defaults.
    pub rules_path: Option<PathBuf>,
    /// `FDS_RULES_RELOAD_SECS`: how often the rules file is checked for changes. Default 5.
    pub rules_reload: Duration,
    /// `FDS_VELOCITY_TIMEOUT_MS`: the velocity query's budget on the Score path; past it the
    /// velocity rules are skipped for that order. Default 50.
    pub velocity_timeout: Duration,
    /// `FDS_VELOCITY_SOURCE`: where Score counts velocity: `memory` (default: this replica's
    /// index of the last 24 h, fed by the database; see [`crate::velocity`]) or `database` (one
    /// query per Score).
    pub velocity_source: VelocitySource,
    /// `FDS_RESULTS_BUFFER`: decisions waiting for the background writer; beyond it new ones are
    /// dropped (and counted) rather than slowing Score. Default 10000.
    pub results_buffer: usize,
}

/// Where the Score path counts orders per customer, IP and card.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VelocitySource {
    /// The replica's in-memory index (the database while it is loading or lost its feed).
    Memory,
    /// One indexed query per Score.
    Database,
}

impl std::str::FromStr for VelocitySource {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s {
            "memory" => Ok(VelocitySource::Memory),
            "database" => Ok(VelocitySource::Database),
            other => {
                anyhow::bail!(
                    "FDS_VELOCITY_SOURCE: {other:?} is neither \"memory\" nor \"database\""
                )
            }
        }
    }
}

impl Default for FdsSettings {
    fn default() -> Self {
        FdsSettings {
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 50051)),
            grpc_concurrency: DEFAULT_GRPC_CONCURRENCY,
            rules_path: None,
            rules_reload: Duration::from_secs(5),
            velocity_timeout: Duration::from_millis(50),
            velocity_source: VelocitySource::Memory,
            results_buffer: 10_000,
        }
    }
}

impl FdsSettings {
    pub fn from_env() -> anyhow::Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// From any variable source (tests pass a map).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let defaults = FdsSettings::default();
        let var = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let grpc_addr = match var("GRPC_ADDR") {
            Some(v) => v
                .trim()
                .parse()
                .with_context(|| format!("GRPC_ADDR: {v:?} is not host:port"))?,
            None => defaults.grpc_addr,
        };
        let positive = |name: &str, default: u64| -> anyhow::Result<u64> {
            match var(name) {
                Some(v) => match v.trim().parse::<u64>() {
                    Ok(n) if n > 0 => Ok(n),
                    _ => anyhow::bail!("{name}: {v:?} is not a positive integer"),
                },
                None => Ok(default),
            }
        };
        Ok(FdsSettings {
            grpc_addr,
            grpc_concurrency: usize::try_from(positive(
                "GRPC_CONCURRENCY",
                defaults.grpc_concurrency as u64,
            )?)
            .context("GRPC_CONCURRENCY: too large")?,
            rules_path: var("FDS_RULES_PATH").map(PathBuf::from),
            rules_reload: Duration::from_secs(positive(
                "FDS_RULES_RELOAD_SECS",
                defaults.rules_reload.as_secs(),
            )?),
            velocity_timeout: Duration::from_millis(positive(
                "FDS_VELOCITY_TIMEOUT_MS",
                defaults.velocity_timeout.as_millis() as u64,
            )?),
            velocity_source: match var("FDS_VELOCITY_SOURCE") {
                Some(v) => v.trim().parse()?,
                None => defaults.velocity_source,
            },
            results_buffer: usize::try_from(positive(
                "FDS_RESULTS_BUFFER",
                defaults.results_buffer as u64,
            )?)
            .context("FDS_RESULTS_BUFFER: too large")?,
        })
    }
}

impl Settings {
    pub fn from_env() -> anyhow::Result<Self> {
        let ops_addr = std::env::var("OPS_ADDR").unwrap_or_else(|_| "127.0.0.1:9102".to_owned());
        Ok(Settings {
            broker: BrokerSettings::from_env(SERVICE)?,
            database: DatabaseSettings::from_env()?,
            worker: worker_settings()?,
            results: ResultSettings::from_env()?,
            telemetry: TelemetrySettings::from_env(SERVICE)?,
            ops_addr: ops_addr
                .parse()
                .with_context(|| format!("OPS_ADDR: {ops_addr:?} is not host:port"))?,
            fds: FdsSettings::from_env()?,
            auth: shopfds_auth::AuthSettings::read(&shopfds_config::Env::process())?,
        })
    }
}

/// The seed's prefetch table: 2–4 for batch FDS (short tasks, throughput), so the multiplier
/// defaults to 2 here unless `WORKER_PREFETCH_MULTIPLIER` or the queue's own
/// `WORKER_PREFETCH_MULTIPLIER_<QUEUE>` is set.
fn worker_settings() -> anyhow::Result<WorkerSettings> {
    let mut worker = WorkerSettings::from_env(SERVICE, DEFAULT_QUEUES, DEFAULT_CONCURRENCY)?;
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    if !set("WORKER_PREFETCH_MULTIPLIER") {
        for queue in &mut worker.queues {
            if !set(&per_queue_variable(
                "WORKER_PREFETCH_MULTIPLIER",
                &queue.queue,
            )) {
                queue.prefetch_multiplier = 2;
            }
        }
    }
    Ok(worker)
}
