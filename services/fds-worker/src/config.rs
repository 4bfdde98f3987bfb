//! Settings of the fds-worker, from the environment, validated at start.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use shopfds_broker::{BrokerSettings, WorkerSettings};
use shopfds_results::ResultSettings;
use shopfds_service::{ConfigError, Env, ServiceSettings, ShellSettings};
use shopfds_store::DatabaseSettings;

use crate::tasks::TasksSettings;

pub const SERVICE: &str = "fds-worker";

/// Queues consumed unless `WORKER_QUEUES` says otherwise.
pub const DEFAULT_QUEUES: &[&str] = &["fds"];

/// Tasks running at once unless `WORKER_CONCURRENCY` says otherwise.
pub const DEFAULT_CONCURRENCY: usize = 4;

/// Score RPCs in progress at once unless `GRPC_CONCURRENCY` says otherwise.
pub const DEFAULT_GRPC_CONCURRENCY: usize = 256;

#[derive(Debug, Clone)]
pub struct Settings {
    /// Telemetry, `OPS_ADDR` (default `127.0.0.1:9102`), HTTP limits.
    pub shell: ShellSettings,
    pub broker: BrokerSettings,
    pub database: DatabaseSettings,
    pub worker: WorkerSettings,
    /// `RESULT_BACKEND` and its batch settings.
    pub results: ResultSettings,
    pub fds: FdsSettings,
    /// `GRPC_TLS_CERT_FILE`, `GRPC_TLS_KEY_FILE`, `GRPC_TLS_CLIENT_CA_FILE`: TLS and mutual TLS
    /// of the gRPC server (see [`crate::tls`]).
    pub grpc_tls: crate::tls::GrpcServerTls,
    /// `FDS_BATCH_CHUNK_SIZE`, `THREAT_INTEL_*`: the queue tasks.
    pub tasks: TasksSettings,
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
    /// `GRPC_ADDR`, `GRPC_CONCURRENCY`, `FDS_RULES_PATH`, `FDS_RULES_RELOAD_SECS`,
    /// `FDS_VELOCITY_TIMEOUT_MS`, `FDS_VELOCITY_SOURCE`, `FDS_RESULTS_BUFFER`.
    pub fn read(env: &Env) -> Result<Self, ConfigError> {
        let defaults = FdsSettings::default();
        Ok(FdsSettings {
            grpc_addr: env.addr("GRPC_ADDR", "127.0.0.1:50051")?,
            grpc_concurrency: env.positive("GRPC_CONCURRENCY", defaults.grpc_concurrency)?,
            rules_path: env.file("FDS_RULES_PATH")?,
            rules_reload: Duration::from_secs(
                env.positive("FDS_RULES_RELOAD_SECS", defaults.rules_reload.as_secs())?,
            ),
            velocity_timeout: Duration::from_millis(env.positive(
                "FDS_VELOCITY_TIMEOUT_MS",
                u64::try_from(defaults.velocity_timeout.as_millis()).unwrap_or(u64::MAX),
            )?),
            velocity_source: env.choice(
                "FDS_VELOCITY_SOURCE",
                defaults.velocity_source,
                &[
                    ("memory", VelocitySource::Memory),
                    ("database", VelocitySource::Database),
                ],
            )?,
            results_buffer: env.positive("FDS_RESULTS_BUFFER", defaults.results_buffer)?,
        })
    }
}

impl ServiceSettings for Settings {
    const SERVICE: &'static str = SERVICE;
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn read(env: &Env) -> Result<Self, ConfigError> {
        Ok(Settings {
            shell: ShellSettings::read(env, SERVICE, "127.0.0.1:9102")?,
            broker: BrokerSettings::read(env, SERVICE)?,
            database: DatabaseSettings::read(env)?,
            // The seed's prefetch table: 2–4 for batch FDS (short tasks, throughput), so the
            // multiplier defaults to 2 here unless `WORKER_PREFETCH_MULTIPLIER` or the queue's
            // own `WORKER_PREFETCH_MULTIPLIER_<QUEUE>` is set.
            worker: WorkerSettings::read(env, SERVICE, DEFAULT_QUEUES, DEFAULT_CONCURRENCY, 2)?,
            results: ResultSettings::read(env)?,
            fds: FdsSettings::read(env)?,
            grpc_tls: crate::tls::GrpcServerTls::read(env)?,
            auth: shopfds_auth::AuthSettings::read(env)?,
            tasks: TasksSettings::read(env)?,
        })
    }

    fn shell(&self) -> &ShellSettings {
        &self.shell
    }
}

impl Settings {
    /// The settings of the process environment (tests start from these and change a few).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::read(&Env::process())
    }
}
