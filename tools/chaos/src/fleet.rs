//! The service processes of a local run: order-api once, email-worker and fds-worker twice each,
//! report-worker once, started from the real binaries with their logs in the run's directory. The fleet kills,
//! terminates and restarts them on the fault runner's orders, and tells a crash (an exit nobody
//! asked for, a panic in a log) from an exit it caused.

use std::path::PathBuf;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use shopfds_auth::Scope;
use shopfds_testkit::keys::TestKey;
use shopfds_testkit::process::ChildGuard;

use crate::plan::WorkerKind;

/// Variables of the caller's environment that would change what the services do.
const CLEARED: [&str; 18] = [
    "API_KEYS",
    "FDS_API_KEY",
    "TRUSTED_PROXIES",
    "RESULT_BACKEND",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "WORKER_QUEUES",
    "WORKER_CONCURRENCY",
    "QUEUE_TYPE",
    "BROKER_MAX_PRIORITY",
    "SHUTDOWN_GRACE_SECS",
    "RELAY_ENABLED",
    "FDS_RULES_PATH",
    "FDS_FALLBACK_DECISION",
    "MAIL_FROM",
    "DATABASE_MAX_CONNECTIONS",
    "STORAGE_URL",
    "SHIPPING_PARTNER_TOKEN",
    "SHIPPING_PARTNER_RATE_LIMIT",
];

/// A worker's grace period after SIGTERM (`WORKER_SHUTDOWN_GRACE_SECS`): short, so tasks are
/// still running when it ends.
pub const WORKER_GRACE_SECS: u64 = 2;
/// A process that exited on its own is started again no sooner than this after its last start.
const RESTART_EVERY: Duration = Duration::from_secs(1);
/// How long past its grace period a process may take to exit before it counts as hung.
const EXIT_SLACK: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    OrderApi,
    Worker(WorkerKind),
}

#[derive(Debug)]
struct Process {
    role: Role,
    name: String,
    binary: PathBuf,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<ChildGuard>,
    started: Instant,
}

/// What went wrong with the processes, for the report.
#[derive(Debug, Default, Clone)]
pub struct Health {
    /// Exits by a signal nobody sent (`name: status`).
    pub crashes: Vec<String>,
    /// Exits nobody asked for, with an error code (`name: status`).
    pub error_exits: Vec<String>,
    /// Exits after SIGTERM that were not 0.
    pub unclean_exits: Vec<String>,
    /// Processes still running `EXIT_SLACK` past their grace period after SIGTERM (then killed).
    pub hung: Vec<String>,
    /// `panicked at` lines in the logs.
    pub panics: Vec<String>,
    /// When an email-worker was SIGKILLed (taken just before the signal): around these, a mail
    /// the server took may lack its once-only record.
    pub email_kills: Vec<SystemTime>,
}

#[derive(Debug)]
pub struct Fleet {
    processes: Vec<Process>,
    health: Health,
}

/// The addresses every process needs.
#[derive(Debug, Clone)]
pub struct Wiring {
    pub bin_dir: PathBuf,
    pub log_dir: PathBuf,
    pub database_url: String,
    pub broker_url: String,
    pub smtp_url: String,
    /// `SHIPPING_PARTNER_URL`: the partner stub.
    pub partner_url: String,
    /// `STORAGE_DIR` of order-api, email-worker and report-worker: invoices.
    pub storage_dir: PathBuf,
}

/// Ports of a fleet: order-api's HTTP port, each process's ops port (order-api's last); and the
/// API key to post with.
#[derive(Debug, Clone)]
pub struct Ports {
    pub http: u16,
    pub ops: Vec<u16>,
    /// An `admin` key: the load speaks for a shop backend that names each customer's address
    /// in `client_ip` (one address for every order would trip the IP velocity rules).
    pub api_key: String,
}

impl Fleet {
    /// Starts every process and waits until each answers `/readyz` with 200.
    pub async fn start(wiring: &Wiring) -> anyhow::Result<(Fleet, Ports)> {
        let common = |name: &str| -> Vec<(String, String)> {
            vec![
                ("DATABASE_URL".into(), wiring.database_url.clone()),
                ("BROKER_URL".into(), wiring.broker_url.clone()),
                ("HOSTNAME".into(), name.to_owned()),
                ("RUST_LOG".into(), "info".into()),
                ("LOG_FORMAT".into(), "json".into()),
            ]
        };
        let api_key = TestKey::new(&[Scope::Admin]);
        // order-api's key to fds-worker's Score.
        let fds_key = TestKey::new(&[Scope::FdsScore]);
        let mut processes = Vec::new();
        let mut ops = Vec::new();
        let grpc = shopfds_testkit::stable_port();
        let storage = wiring.storage_dir.display().to_string();
        for (kind, i) in [
            (WorkerKind::Fds, 1),
            (WorkerKind::Fds, 2),
            (WorkerKind::Email, 1),
            (WorkerKind::Email, 2),
            (WorkerKind::Report, 1),
        ] {
            let name = format!("{}-{i}", kind.binary());
            let port = shopfds_testkit::stable_port();
            ops.push(port);
            let mut env = common(&name);
            env.push(("OPS_ADDR".into(), format!("127.0.0.1:{port}")));
            env.push((
                "WORKER_SHUTDOWN_GRACE_SECS".into(),
                WORKER_GRACE_SECS.to_string(),
            ));
            match kind {
                WorkerKind::Email => {
                    env.push(("SMTP_URL".into(), wiring.smtp_url.clone()));
                    env.push(("SHIPPING_PARTNER_URL".into(), wiring.partner_url.clone()));
                    env.push(("STORAGE_DIR".into(), storage.clone()));
                }
                WorkerKind::Report => {
                    env.push(("SMTP_URL".into(), wiring.smtp_url.clone()));
                    env.push(("STORAGE_DIR".into(), storage.clone()));
                }
                WorkerKind::Fds => {
                    env.push(("API_KEYS".into(), fds_key.entry.clone()));
                    // order-api scores on the first; the second has a port of its own.
                    let port = if i == 1 {
                        grpc
                    } else {
                        shopfds_testkit::stable_port()
                    };
                    env.push(("GRPC_ADDR".into(), format!("127.0.0.1:{port}")));
                }
            }
            processes.push(Process::new(Role::Worker(kind), name, wiring, env));
        }
        let http = shopfds_testkit::stable_port();
        let mut env = common("order-api");
        env.push(("HTTP_ADDR".into(), format!("127.0.0.1:{http}")));
        let api_ops = shopfds_testkit::stable_port();
        ops.push(api_ops);
        env.push(("OPS_ADDR".into(), format!("127.0.0.1:{api_ops}")));
        env.push(("FDS_GRPC_URL".into(), format!("http://127.0.0.1:{grpc}")));
        env.push(("RELAY_POLL_INTERVAL_MS".into(), "200".into()));
        env.push(("API_KEYS".into(), api_key.entry.clone()));
        env.push(("FDS_API_KEY".into(), fds_key.key.clone()));
        env.push(("STORAGE_DIR".into(), storage));
        processes.push(Process::new(
            Role::OrderApi,
            "order-api".into(),
            wiring,
            env,
        ));

        let mut fleet = Fleet {
            processes,
            health: Health::default(),
        };
        for process in &mut fleet.processes {
            process.spawn()?;
        }
        let client = reqwest::Client::new();
        for port in &ops {
            fleet.wait_ready(&client, *port).await?;
        }
        Ok((
            fleet,
            Ports {
                http,
                ops,
                api_key: api_key.key,
            },
        ))
    }

    async fn wait_ready(&mut self, client: &reqwest::Client, port: u16) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(90);
        let url = format!("http://127.0.0.1:{port}/readyz");
        loop {
            if let Ok(resp) = client.get(&url).send().await
                && resp.status().is_success()
            {
                return Ok(());
            }
            for process in &mut self.processes {
                if let Some(child) = process.child.as_mut()
                    && let Some(status) = child.try_wait()?
                {
                    bail!(
                        "{} exited at start ({status}): {}",
                        process.name,
                        child.describe()
                    );
                }
            }
            if Instant::now() >= deadline {
                bail!("nothing answered 200 on {url} within 90 s");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// SIGKILL one worker of `kind` (picked by `pick`), then start it again.
    pub fn kill(&mut self, kind: WorkerKind, pick: usize) -> anyhow::Result<String> {
        if kind == WorkerKind::Email {
            self.health.email_kills.push(SystemTime::now());
        }
        let process = self.pick(kind, pick)?;
        if let Some(mut child) = process.child.take() {
            child.kill()?;
        }
        let name = process.name.clone();
        process.spawn()?;
        Ok(name)
    }

    /// SIGTERM one worker of `kind`, wait for its exit (its grace period plus some slack), then
    /// start it again.
    pub async fn term(&mut self, kind: WorkerKind, pick: usize) -> anyhow::Result<String> {
        let timeout = Duration::from_secs(WORKER_GRACE_SECS) + EXIT_SLACK;
        let process = self.pick(kind, pick)?;
        let name = process.name.clone();
        if let Some(mut child) = process.child.take() {
            let outcome = child.terminate(timeout).await;
            record_exit(&mut self.health, &name, outcome);
        }
        self.pick(kind, pick)?.spawn()?;
        Ok(name)
    }

    /// Records whatever exited without being asked to and starts it again, at most once a
    /// second (as a supervisor would). An exit by a signal nobody sent (SIGABRT, SIGSEGV) is a
    /// crash; an exit with an error code (a binary that stops at start because PostgreSQL is
    /// cut, say) is counted apart.
    pub fn check(&mut self) -> anyhow::Result<()> {
        for process in &mut self.processes {
            match process.child.as_mut() {
                Some(child) => {
                    if let Some(status) = child.try_wait()? {
                        let line = format!("{}: {}", process.name, describe(status));
                        if status.code().is_some() {
                            self.health.error_exits.push(line);
                        } else {
                            self.health.crashes.push(line);
                        }
                        process.child = None;
                    }
                }
                None if process.started.elapsed() >= RESTART_EVERY => process.spawn()?,
                None => {}
            }
        }
        Ok(())
    }

    /// SIGTERM to every process (order-api first, so nothing new is queued), each checked to
    /// exit 0; then the logs are searched for panics. Returns what went wrong over the run.
    pub async fn stop(mut self) -> Health {
        let _ = self.check();
        self.processes.sort_by_key(|p| p.role != Role::OrderApi);
        for process in &mut self.processes {
            if let Some(mut child) = process.child.take() {
                let grace = match process.role {
                    Role::OrderApi => Duration::from_secs(30),
                    Role::Worker(_) => Duration::from_secs(WORKER_GRACE_SECS),
                };
                let outcome = child.terminate(grace + EXIT_SLACK).await;
                record_exit(&mut self.health, &process.name, outcome);
            }
        }
        for process in &self.processes {
            let log = std::fs::read(&process.log).unwrap_or_default();
            for line in String::from_utf8_lossy(&log).lines() {
                if line.contains("panicked at") {
                    let line: String = line.chars().take(300).collect();
                    self.health.panics.push(format!("{}: {line}", process.name));
                }
            }
        }
        self.health
    }

    fn pick(&mut self, kind: WorkerKind, pick: usize) -> anyhow::Result<&mut Process> {
        let mut candidates: Vec<&mut Process> = self
            .processes
            .iter_mut()
            .filter(|p| p.role == Role::Worker(kind))
            .collect();
        let n = candidates.len();
        if n == 0 {
            bail!("no {} in the fleet", kind.binary());
        }
        Ok(candidates.swap_remove(pick % n))
    }
}

impl Process {
    fn new(role: Role, name: String, wiring: &Wiring, env: Vec<(String, String)>) -> Process {
        let binary = match role {
            Role::OrderApi => "order-api",
            Role::Worker(kind) => kind.binary(),
        };
        Process {
            role,
            log: wiring.log_dir.join(format!("{name}.log")),
            binary: wiring.bin_dir.join(binary),
            name,
            env,
            child: None,
            started: Instant::now(),
        }
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        if !self.binary.is_file() {
            bail!(
                "{} is missing: build the services first (cargo build --workspace --bins) or \
                 pass --bin-dir",
                self.binary.display()
            );
        }
        let mut cmd = Command::new(&self.binary);
        for name in CLEARED {
            cmd.env_remove(name);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        self.started = Instant::now();
        self.child = Some(
            ChildGuard::spawn_logged(&mut cmd, &self.log)
                .with_context(|| format!("cannot start {}", self.name))?,
        );
        Ok(())
    }
}

fn record_exit(health: &mut Health, name: &str, outcome: anyhow::Result<ExitStatus>) {
    match outcome {
        Ok(status) if status.success() => {}
        Ok(status) => health
            .unclean_exits
            .push(format!("{name}: {}", describe(status))),
        Err(_) => health.hung.push(name.to_owned()),
    }
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => status.to_string(),
    }
}
