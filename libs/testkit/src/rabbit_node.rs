//! A RabbitMQ node of the test's own, for tests that stop, restart or disturb a broker: the
//! shared server on 5672 stays up for every other test running in parallel.
//!
//! The node is the Debian package's `rabbitmq-server`, run as the `rabbitmq` user, with its own
//! node name, loopback ports (AMQP and Erlang distribution), data, log and config files in a temp
//! dir owned by that user (the server cannot write elsewhere), and no plugins. It boots in 5–13 s
//! on 2 cores, depending on load, and a restart keeping its data takes about as long. It needs
//! root, like `rabbitmqctl`, and `rabbitmq-server` installed (`scripts/ensure-services.sh`).
//! Dropping the node stops it and removes its data; no `beam` process is left behind.
//!
//! [`RabbitNode::start_with_tls`] adds an `amqps` listener that requires a client certificate
//! signed by the given CA (`ssl_options.verify = verify_peer`, `fail_if_no_peer_cert = true`).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

use crate::tail;

/// Debian's server script (`/usr/sbin/rabbitmq-server` is a wrapper that `su`s to it).
const SERVER_SCRIPT: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";
/// The `rabbitmq` user's home, holding the Erlang cookie shared with `rabbitmqctl`.
const RABBITMQ_HOME: &str = "/var/lib/rabbitmq";

/// How long a boot (or a restart) may take before `start` gives up.
const BOOT_TIMEOUT: Duration = Duration::from_secs(90);

/// The files of a node's TLS listener (PEM): its certificate and key, and the CA that its
/// clients' certificates must chain to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A running (or stopped, between [`RabbitNode::stop`] and [`RabbitNode::start_again`])
/// RabbitMQ node on loopback ports of its own, guest/guest allowed over loopback.
#[derive(Debug)]
pub struct RabbitNode {
    name: String,
    amqp_port: u16,
    dist_port: u16,
    /// The TLS listener's port and files, when started with [`RabbitNode::start_with_tls`].
    tls: Option<(u16, NodeTls)>,
    dir: tempfile::TempDir,
    server: Option<Child>,
}

impl RabbitNode {
    /// Boots a new node and waits until it accepts AMQP connections. A port taken between
    /// choosing and binding it is retried with new ports.
    pub async fn start() -> anyhow::Result<RabbitNode> {
        Self::start_node(None).await
    }

    /// [`RabbitNode::start`] with a TLS listener too ([`RabbitNode::amqps_url`]) that requires a
    /// client certificate chaining to `tls.ca`. The plain listener stays (the boot probe uses it).
    pub async fn start_with_tls(tls: &NodeTls) -> anyhow::Result<RabbitNode> {
        Self::start_node(Some(tls)).await
    }

    async fn start_node(tls: Option<&NodeTls>) -> anyhow::Result<RabbitNode> {
        let mut last_error = None;
        for _ in 0..3 {
            let dir = crate::temp_dir("rabbit-node")?;
            let mut node = RabbitNode {
                name: format!("shopfds-test-{}@localhost", uuid::Uuid::new_v4().simple()),
                amqp_port: crate::free_port(),
                dist_port: crate::free_port(),
                tls: tls.map(|tls| (crate::free_port(), tls.clone())),
                dir,
                server: None,
            };
            node.prepare_dir()?;
            match node.boot().await {
                Ok(()) => return Ok(node),
                Err(err) if node.log_tail().contains("eaddrinuse") => {
                    last_error = Some(err);
                }
                Err(err) => return Err(err),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("the node did not start")))
    }

    /// The node name, `shopfds-test-<uuid>@localhost` (for `rabbitmqctl -n`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process group of the running server: its start script and the Erlang VM.
    pub fn process_group(&self) -> Option<u32> {
        self.server.as_ref().map(Child::id)
    }

    /// The AMQP port on 127.0.0.1.
    pub fn amqp_port(&self) -> u16 {
        self.amqp_port
    }

    /// `amqp://guest:guest@127.0.0.1:<port>/%2f`: the default vhost of this node.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.amqp_port)
    }

    /// `amqps://guest:guest@127.0.0.1:<port>/%2f`: the TLS listener of a node started with
    /// [`RabbitNode::start_with_tls`] (its certificate must name `127.0.0.1`).
    pub fn amqps_url(&self) -> Option<String> {
        self.tls
            .as_ref()
            .map(|(port, _)| format!("amqps://guest:guest@127.0.0.1:{port}/%2f"))
    }

    /// Stops the node gracefully (as an operator's restart does: clients get a connection close)
    /// and waits until its process is gone. Durable queues and persistent messages stay on disk.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        let pid_file = self.pid_file();
        rabbitmqctl(&["-n", &self.name, "stop", &path_str(&pid_file)?]).await?;
        self.reap(Duration::from_secs(30)).await
    }

    /// Starts the stopped node again with the same name, ports and data.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        if self.server.is_some() {
            bail!("node {} is still running", self.name);
        }
        self.boot().await
    }

    /// `rabbitmqctl close_all_connections`: the broker closes every client connection, as an
    /// operator or a load balancer would, and stays up.
    pub async fn close_all_connections(&self) -> anyhow::Result<()> {
        rabbitmqctl(&["-n", &self.name, "close_all_connections", "test"]).await
    }

    /// Makes this running node a member of `seed`'s cluster (`stop_app`, `join_cluster`,
    /// `start_app`), dropping whatever data it had. Both must share the Erlang cookie, which
    /// nodes started here do (the `rabbitmq` user's).
    pub async fn join_cluster(&self, seed: &RabbitNode) -> anyhow::Result<()> {
        rabbitmqctl(&["-n", &self.name, "stop_app"]).await?;
        rabbitmqctl(&["-n", &self.name, "join_cluster", &seed.name])
            .await
            .with_context(|| self.log_tail())?;
        rabbitmqctl(&["-n", &self.name, "start_app"]).await?;
        rabbitmqctl(&["-n", &self.name, "await_startup", "--timeout", "60"])
            .await
            .with_context(|| self.log_tail())
    }

    /// Whether the server process of this node runs (between [`RabbitNode::stop`] and
    /// [`RabbitNode::start_again`] it does not).
    pub fn is_running(&self) -> bool {
        self.server.is_some()
    }

    /// `rabbitmqctl -n <this node> <args>` (or `rabbitmq-queues` when `tool` says so), its
    /// standard output.
    pub async fn ctl(&self, tool: &str, args: &[&str]) -> anyhow::Result<String> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        if tool == "rabbitmqctl" {
            return rabbitmqctl_output(&all).await;
        }
        let tool = tool.to_owned();
        let all: Vec<String> = all.iter().map(|a| (*a).to_owned()).collect();
        tokio::task::spawn_blocking(move || {
            let out = Command::new(&tool)
                .args(&all)
                .stdin(Stdio::null())
                .output()
                .with_context(|| format!("cannot run {tool}"))?;
            if !out.status.success() {
                bail!(
                    "{tool} {} failed ({}): {}{}",
                    all.join(" "),
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim(),
                    String::from_utf8_lossy(&out.stdout).trim()
                );
            }
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        })
        .await
        .context("CLI task")?
    }

    /// Names of the client connections the node has now (`connection_name` of each client).
    pub async fn connection_names(&self) -> anyhow::Result<Vec<String>> {
        let out = rabbitmqctl_output(&[
            "-n",
            &self.name,
            "-q",
            "list_connections",
            "--no-table-headers",
            "client_properties",
        ])
        .await?;
        Ok(out
            .lines()
            .filter_map(|line| {
                // `{"connection_name","<name>"}` among the client properties.
                let key = "\"connection_name\",";
                let rest = &line[line.find(key)? + key.len()..];
                let rest = rest
                    .strip_prefix("longstr,")
                    .unwrap_or(rest)
                    .strip_prefix('"')?;
                rest.find('"').map(|end| rest[..end].to_owned())
            })
            .collect())
    }

    /// Messages ready in `queue` of the default vhost (`rabbitmqctl list_queues`); 0 if no such
    /// queue.
    pub async fn queue_depth(&self, queue: &str) -> anyhow::Result<u64> {
        let out = rabbitmqctl_output(&[
            "-n",
            &self.name,
            "-q",
            "list_queues",
            "--no-table-headers",
            "name",
            "messages",
        ])
        .await?;
        for line in out.lines() {
            let mut cols = line.split_whitespace();
            if cols.next() == Some(queue) {
                let count = cols.next().unwrap_or("0");
                return count
                    .parse()
                    .with_context(|| format!("list_queues: {line:?}"));
            }
        }
        Ok(0)
    }

    /// The last lines of the node's logs (startup output and main log), for error messages.
    pub fn log_tail(&self) -> String {
        let main_log = self
            .dir
            .path()
            .join("log")
            .join(format!("{}.log", self.name));
        format!(
            "{}\n{}",
            tail(&self.dir.path().join("server.out"), 20),
            tail(&main_log, 20)
        )
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.path().join("node.pid")
    }

    /// Data and log dirs, an empty plugin list and a config with only our listener (the
    /// system's `/etc/rabbitmq/rabbitmq.conf` may pin 5672), all owned by `rabbitmq`.
    fn prepare_dir(&self) -> anyhow::Result<()> {
        let dir = self.dir.path();
        std::fs::create_dir_all(dir.join("mnesia"))?;
        std::fs::create_dir_all(dir.join("log"))?;
        std::fs::write(dir.join("enabled_plugins"), "[].\n")?;
        let mut config = format!("listeners.tcp.default = 127.0.0.1:{}\n", self.amqp_port);
        if let Some((port, tls)) = &self.tls {
            // Copies the server can read (the originals may sit in a directory only root reads).
            let tls_dir = dir.join("tls");
            std::fs::create_dir_all(&tls_dir)?;
            let mut copy = |name: &str, from: &Path| -> anyhow::Result<()> {
                let to = tls_dir.join(name);
                std::fs::copy(from, &to)
                    .with_context(|| format!("cannot copy {}", from.display()))?;
                config.push_str(&format!("ssl_options.{name} = {}\n", path_str(&to)?));
                Ok(())
            };
            copy("cacertfile", &tls.ca)?;
            copy("certfile", &tls.cert)?;
            copy("keyfile", &tls.key)?;
            config.push_str(&format!(
                "listeners.ssl.default = 127.0.0.1:{port}\n\
                 ssl_options.verify = verify_peer\n\
                 ssl_options.fail_if_no_peer_cert = true\n"
            ));
        }
        std::fs::write(dir.join("rabbitmq.conf"), config)?;
        let status = Command::new("chown")
            .args(["-R", "rabbitmq:rabbitmq"])
            .arg(dir)
            .status()
            .context("cannot run chown")?;
        if !status.success() {
            bail!(
                "chown -R rabbitmq:rabbitmq {} failed ({status}); is rabbitmq-server installed?",
                dir.display()
            );
        }
        Ok(())
    }

    /// Starts `rabbitmq-server` for this node and waits for `await_startup`.
    async fn boot(&mut self) -> anyhow::Result<()> {
        let dir = self.dir.path().to_path_buf();
        let _ = std::fs::remove_file(self.pid_file());
        let out = std::fs::File::options()
            .create(true)
            .append(true)
            .open(dir.join("server.out"))?;
        let err = out.try_clone()?;
        let (uid, gid) = rabbitmq_user()?;
        // The server script itself, as the `rabbitmq` user (what Debian's wrapper does with
        // `su`, but `su` would start a new session that teardown could not reach).
        let mut cmd = Command::new(SERVER_SCRIPT);
        cmd.env("RABBITMQ_NODENAME", &self.name)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.amqp_port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.join("log"))
            .env("RABBITMQ_PID_FILE", self.pid_file())
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
            .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq.conf"))
            // The Erlang cookie the CLI uses too.
            .env("HOME", RABBITMQ_HOME)
            .env("USER", "rabbitmq")
            .env("LOGNAME", "rabbitmq")
            .current_dir(RABBITMQ_HOME)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .uid(uid)
            .gid(gid)
            // Its own process group, so teardown can reach every process it started.
            .process_group(0);
        let child = cmd
            .spawn()
            .context("cannot run rabbitmq-server (see scripts/ensure-services.sh)")?;
        self.server = Some(child);

        let deadline = Instant::now() + BOOT_TIMEOUT;
        loop {
            // The AMQP listener opens near the end of the boot; `await_startup` then confirms the
            // whole boot finished (called earlier, it may sleep 10 s between its checks).
            let accepted = tokio::time::timeout(
                Duration::from_secs(5),
                lapin::Connection::connect(&self.url(), lapin::ConnectionProperties::default()),
            )
            .await;
            if let Ok(Ok(conn)) = accepted {
                let _ = conn.close(200, "boot probe".into()).await;
                return rabbitmqctl(&["-n", &self.name, "await_startup", "--timeout", "60"])
                    .await
                    .with_context(|| self.log_tail());
            }
            if let Some(child) = self.server.as_mut()
                && let Some(status) = child.try_wait()?
            {
                self.server = None;
                bail!(
                    "rabbitmq node {} exited during boot ({status}):\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "rabbitmq node {} not up within {BOOT_TIMEOUT:?}\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits for the server process (and so its process group leader) to exit.
    async fn reap(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let Some(mut child) = self.server.take() else {
            return Ok(());
        };
        let deadline = Instant::now() + timeout;
        loop {
            if child.try_wait()?.is_some() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                kill_group(&child);
                let _ = child.wait();
                bail!("rabbitmq node {} did not exit; killed", self.name);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for RabbitNode {
    fn drop(&mut self) {
        let Some(mut child) = self.server.take() else {
            return;
        };
        let stopped = path_str(&self.pid_file()).and_then(|pid_file| {
            let out = Command::new("rabbitmqctl")
                .args(["-q", "-n", &self.name, "stop", &pid_file])
                .output()?;
            Ok(out.status.success())
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while stopped.as_ref().is_ok_and(|ok| *ok) && Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Whatever is left of the group (a node that would not stop): SIGKILL.
        kill_group(&child);
        let _ = child.wait();
    }
}

/// Uid and gid of the `rabbitmq` user.
fn rabbitmq_user() -> anyhow::Result<(u32, u32)> {
    let id = |flag: &str| -> anyhow::Result<u32> {
        let out = Command::new("id")
            .args([flag, "rabbitmq"])
            .output()
            .context("cannot run id")?;
        if !out.status.success() {
            bail!("no rabbitmq user: is rabbitmq-server installed? (scripts/ensure-services.sh)");
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
    };
    Ok((id("-u")?, id("-g")?))
}

fn kill_group(child: &Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = signal::killpg(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

fn path_str(path: &Path) -> anyhow::Result<String> {
    path.to_str()
        .map(str::to_owned)
        .with_context(|| format!("path is not UTF-8: {}", path.display()))
}

async fn rabbitmqctl(args: &[&str]) -> anyhow::Result<()> {
    rabbitmqctl_output(args).await.map(|_| ())
}

/// `rabbitmqctl` off the async threads (it takes a second or more to start).
async fn rabbitmqctl_output(args: &[&str]) -> anyhow::Result<String> {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        crate::rabbit::rabbitmqctl_output(&args)
    })
    .await
    .context("rabbitmqctl task")?
}
