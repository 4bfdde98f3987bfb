//! A RabbitMQ vhost of its own per test on the shared broker (127.0.0.1:5672, guest/guest), so
//! tests declaring the same exchange and queue names run in parallel without seeing each other's
//! messages. Created and deleted with `rabbitmqctl` (which needs root, as on the dev and CI
//! machines).

use std::process::Command;

use anyhow::{Context, bail};
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};

const AMQP_AUTHORITY: &str = "guest:guest@127.0.0.1:5672";

/// A vhost `shopfds-test-<uuid>` with full permissions for `guest`, deleted (with everything in
/// it) on drop.
#[derive(Debug)]
pub struct TestVhost {
    pub name: String,
}

impl TestVhost {
    /// Creates the vhost. Takes about 1.5 s (two `rabbitmqctl` calls).
    pub fn create() -> anyhow::Result<TestVhost> {
        let name = format!("shopfds-test-{}", uuid::Uuid::new_v4().simple());
        rabbitmqctl(&["add_vhost", &name])?;
        // From here on, Drop removes the vhost even if granting permissions fails.
        let vhost = TestVhost { name };
        rabbitmqctl(&[
            "set_permissions",
            "-p",
            &vhost.name,
            "guest",
            ".*",
            ".*",
            ".*",
        ])?;
        Ok(vhost)
    }

    /// `amqp://guest:guest@127.0.0.1:5672/<percent-encoded vhost>`.
    pub fn amqp_url(&self) -> String {
        format!(
            "amqp://{AMQP_AUTHORITY}/{}",
            utf8_percent_encode(&self.name, NON_ALPHANUMERIC)
        )
    }

    /// A new lapin connection to this vhost.
    pub async fn connect(&self) -> anyhow::Result<Connection> {
        Connection::connect(&self.amqp_url(), ConnectionProperties::default())
            .await
            .with_context(|| format!("cannot connect to RabbitMQ vhost {}", self.name))
    }

    /// Messages ready for delivery in `queue` (not counting delivered, unacknowledged ones), read
    /// with a passive declare; an error if the queue does not exist.
    ///
    /// Synchronous so it can be called anywhere: it talks to the broker on a thread of its own.
    pub fn queue_depth(&self, queue: &str) -> anyhow::Result<u32> {
        let url = self.amqp_url();
        let queue = queue.to_owned();
        let vhost = self.name.clone();
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    runtime.block_on(passive_depth(&url, &queue, &vhost))
                })
                .join()
                .unwrap_or_else(|_| bail!("queue_depth thread panicked"))
        })
    }

    /// Messages of `queue` delivered to consumers and not yet acknowledged, as the broker counts
    /// them.
    pub fn unacked(&self, queue: &str) -> anyhow::Result<u32> {
        self.queue_info(queue, "messages_unacknowledged")
    }

    /// Consumers registered on `queue`.
    pub fn consumers(&self, queue: &str) -> anyhow::Result<u32> {
        self.queue_info(queue, "consumers")
    }

    /// One numeric `rabbitmqctl list_queues` item of `queue`.
    fn queue_info(&self, queue: &str, item: &str) -> anyhow::Result<u32> {
        let out = rabbitmqctl_output(&[
            "-q",
            "list_queues",
            "-p",
            &self.name,
            "--no-table-headers",
            "name",
            item,
        ])?;
        out.lines()
            .filter_map(|line| line.split_once('\t'))
            .find(|(name, _)| *name == queue)
            .with_context(|| format!("queue {queue} not listed: {out}"))?
            .1
            .trim()
            .parse()
            .with_context(|| format!("{item} of {queue}: {out}"))
    }
}

async fn passive_depth(url: &str, queue: &str, vhost: &str) -> anyhow::Result<u32> {
    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .with_context(|| format!("cannot connect to RabbitMQ vhost {vhost}"))?;
    let result = async {
        let channel = conn.create_channel().await?;
        let declared = channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .with_context(|| format!("queue {queue} in vhost {vhost}"))?;
        anyhow::Ok(declared.message_count())
    }
    .await;
    let _ = conn.close(200, "queue_depth done".into()).await;
    result
}

impl Drop for TestVhost {
    fn drop(&mut self) {
        if let Err(err) = rabbitmqctl(&["delete_vhost", &self.name]) {
            eprintln!(
                "shopfds-testkit: cannot delete RabbitMQ vhost {}: {err:#}",
                self.name
            );
        }
    }
}

/// A RabbitMQ user of its own with a random password (e.g. to find that password in logs) and
/// full permissions on one vhost; deleted on drop. The vhost outlives it (field order in the
/// caller, or drop it first).
#[derive(Debug)]
pub struct TestUser {
    pub name: String,
    pub password: String,
}

impl TestUser {
    pub fn create(vhost: &TestVhost) -> anyhow::Result<TestUser> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let user = TestUser {
            name: format!("shopfds-user-{}", &id[..12]),
            password: format!("rabbit-secret-{id}"),
        };
        rabbitmqctl(&["add_user", &user.name, &user.password])?;
        rabbitmqctl(&[
            "set_permissions",
            "-p",
            &vhost.name,
            &user.name,
            ".*",
            ".*",
            ".*",
        ])?;
        Ok(user)
    }

    /// `amqp://<user>:<password>@127.0.0.1:5672/<vhost>`.
    pub fn amqp_url(&self, vhost: &TestVhost) -> String {
        vhost.amqp_url().replacen(
            "guest:guest",
            &format!("{}:{}", self.name, self.password),
            1,
        )
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        if let Err(err) = rabbitmqctl(&["delete_user", &self.name]) {
            eprintln!(
                "shopfds-testkit: cannot delete RabbitMQ user {}: {err:#}",
                self.name
            );
        }
    }
}

fn rabbitmqctl(args: &[&str]) -> anyhow::Result<()> {
    let mut quiet = vec!["-q"];
    quiet.extend_from_slice(args);
    rabbitmqctl_output(&quiet).map(|_| ())
}

/// Runs `rabbitmqctl` with `args` (stdin closed) and returns what it printed; a failure names
/// the command and carries its output.
pub(crate) fn rabbitmqctl_output(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("rabbitmqctl")
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .context(
            "cannot run rabbitmqctl (is rabbitmq-server installed? see scripts/ensure-services.sh)",
        )?;
    if !out.status.success() {
        bail!(
            "rabbitmqctl {} failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
