//! What every drain of one harness run shares: a RabbitMQ vhost of the run's own (deleted at the
//! end) with the queues every worker declares (durable, `default` dead-lettering to `dlx`), a
//! PostgreSQL database of its own, and a confirmed publisher that pre-fills the queue with
//! persistent no-op task messages, the same bytes for every contender.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use serde_json::Map;
use shopfds_broker::{BrokerSettings, Outgoing, Publisher, QueueType, topology};
use shopfds_protocol::TaskMessage;
use shopfds_store::{DatabaseSettings, Store};
use shopfds_testkit::pg::TestDatabase;
use shopfds_testkit::rabbit::TestVhost;

use crate::ours::NOOP;

/// The queue every contender drains.
pub const QUEUE: &str = "default";
/// Messages per confirmed batch of the pre-fill.
const PUBLISH_BATCH: usize = 5_000;
const POLL: Duration = Duration::from_millis(20);

pub struct Env {
    pub vhost: TestVhost,
    pub db: TestDatabase,
    pub store: Store,
    pub broker: BrokerSettings,
    connection: lapin::Connection,
    channel: lapin::Channel,
    publisher: Publisher,
}

impl Env {
    pub async fn create() -> anyhow::Result<Env> {
        let vhost = tokio::task::spawn_blocking(TestVhost::create).await??;
        let db = TestDatabase::create().await?;
        let store = Store::connect(&DatabaseSettings::with_url(db.url())).await?;
        let broker = BrokerSettings::with_url(vhost.amqp_url(), "shopfds-bench");
        let connection = shopfds_broker::amqp::connect(&broker).await?;
        let channel = connection.create_channel().await?;
        topology::declare(&channel, QueueType::Classic).await?;
        let publisher = Publisher::new(&connection).await?;
        Ok(Env {
            vhost,
            db,
            store,
            broker,
            connection,
            channel,
            publisher,
        })
    }

    /// Size of one pre-filled message: body bytes and header count.
    pub fn message_shape() -> (usize, usize) {
        let (messages, _) = noop_messages(1);
        messages
            .first()
            .map_or((0, 0), |m| (m.body.len(), m.headers.len()))
    }

    /// Publishes `n` persistent no-op task messages to [`QUEUE`], confirmed in batches; their
    /// task ids. Once this returns, the broker holds every one of them.
    pub async fn publish(&self, n: usize) -> anyhow::Result<Vec<String>> {
        let (messages, ids) = noop_messages(n);
        for chunk in messages.chunks(PUBLISH_BATCH) {
            let failed = self
                .publisher
                .publish_batch(chunk)
                .await
                .into_iter()
                .filter(Result::is_err)
                .count();
            if failed > 0 {
                bail!("{failed} publishes were not confirmed");
            }
        }
        Ok(ids)
    }

    /// Messages ready in [`QUEUE`] (delivered, unacknowledged ones not counted).
    pub async fn ready(&self) -> anyhow::Result<u32> {
        let declared = self
            .channel
            .queue_declare(
                QUEUE.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .context("passive declare of the bench queue")?;
        Ok(declared.message_count())
    }

    /// Waits until [`QUEUE`] holds `want` ready messages.
    pub async fn wait_ready(&self, want: u32, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let ready = self.ready().await?;
            if ready == want {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{QUEUE} holds {ready} ready messages, expected {want}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Messages of [`QUEUE`] delivered and not yet acknowledged, and consumers on it, as the
    /// broker counts them now (one `rabbitmqctl list_queues`, about half a second).
    pub async fn unacked_and_consumers(&self) -> anyhow::Result<(u32, u32)> {
        let out = tokio::process::Command::new("rabbitmqctl")
            .args([
                "-q",
                "list_queues",
                "-p",
                &self.vhost.name,
                "--no-table-headers",
            ])
            .args(["name", "messages_unacknowledged", "consumers"])
            .output()
            .await
            .context("cannot run rabbitmqctl")?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "rabbitmqctl list_queues failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim_end()
            );
        }
        let line = text
            .lines()
            .map(|line| line.split('\t').collect::<Vec<_>>())
            .find(|fields| fields.first() == Some(&QUEUE))
            .with_context(|| format!("{QUEUE} not listed: {text}"))?;
        let number = |i: usize| -> anyhow::Result<u32> {
            line.get(i)
                .and_then(|f| f.trim().parse().ok())
                .with_context(|| format!("unexpected list_queues line: {line:?}"))
        };
        Ok((number(1)?, number(2)?))
    }

    pub async fn close(self) {
        let _ = self.connection.close(200, "bench done".into()).await;
        self.store.close().await;
        drop(self.db);
        drop(self.vhost);
    }
}

/// `n` no-op task messages and their task ids.
fn noop_messages(n: usize) -> (Vec<Outgoing>, Vec<String>) {
    (0..n)
        .map(|_| {
            let msg = TaskMessage::new(NOOP, Map::new());
            (Outgoing::task(&msg, QUEUE), msg.id().to_owned())
        })
        .unzip()
}
