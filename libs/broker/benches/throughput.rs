//! `make bench`: how fast the broker layer moves messages, on a RabbitMQ vhost of its own.
//!
//! 1. publish: `BENCH_MESSAGES` persistent task messages through [`Publisher::publish_batch`]
//!    (`mandatory`, confirms pipelined over each batch of `BENCH_PUBLISH_BATCH`), in msgs/s;
//! 2. raw lapin drain: the same number of messages consumed and acked one by one by a bare lapin
//!    consumer (prefetch `BENCH_PREFETCH`), the ceiling for what follows;
//! 3. worker drain: a no-op task with results ignored, pre-loaded, drained by the real
//!    [`Worker`] runtime (decode, registry, limits, metrics, ack), in tasks/s.
//!
//! Targets (issue 4): publish ≥ 10,000 msgs/s, worker drain ≥ 14,000 tasks/s. A measurement, not
//! a test: it prints the figures and whether the targets were met, and exits non-zero only when
//! the run itself failed. `BENCH_MESSAGES` (50000), `BENCH_PUBLISH_BATCH` (5000),
//! `BENCH_CONCURRENCY` (64), `BENCH_PREFETCH_MULTIPLIER` (4), `BENCH_PREFETCH` (256, raw drain).
//! `RUST_LOG=info` runs the worker with logging on, as in production.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use serde_json::{Map, Value};
use shopfds_broker::{
    BrokerSettings, Outgoing, Publisher, QueueType, Registry, TaskOptions, Worker, WorkerSettings,
    topology,
};
use shopfds_protocol::TaskMessage;
use shopfds_store::{DatabaseSettings, Store};
use shopfds_testkit::pg::TestDatabase;
use shopfds_testkit::rabbit::TestVhost;
use tokio_util::sync::CancellationToken;

const TARGET_PUBLISH: f64 = 10_000.0;
const TARGET_DRAIN: f64 = 14_000.0;
const QUEUE: &str = "default";
const NOOP: &str = "bench_noop";
/// A run that has not finished by then has failed.
const LIMIT: Duration = Duration::from_secs(120);

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> ExitCode {
    if std::env::var("RUST_LOG").is_ok() {
        shopfds_testkit::init_tracing();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let n: usize = env_or("BENCH_MESSAGES", 50_000);
    let batch: usize = env_or("BENCH_PUBLISH_BATCH", 5_000).max(1);
    let concurrency: usize = env_or("BENCH_CONCURRENCY", 64);
    let multiplier: u16 = env_or("BENCH_PREFETCH_MULTIPLIER", 4);
    let raw_prefetch: u16 = env_or("BENCH_PREFETCH", 256);

    let vhost = tokio::task::spawn_blocking(TestVhost::create).await??;
    let db = TestDatabase::create().await?;
    let store = Store::connect(&DatabaseSettings::with_url(db.url())).await?;
    let broker = BrokerSettings::with_url(vhost.amqp_url(), "throughput-bench");
    let conn = shopfds_broker::amqp::connect(&broker).await?;
    let channel = conn.create_channel().await?;
    topology::declare(&channel, QueueType::Classic).await?;
    let publisher = Publisher::new(&conn).await?;

    println!(
        "broker throughput: {n} messages, publish batches of {batch}, worker concurrency {concurrency} × prefetch multiplier {multiplier}, raw prefetch {raw_prefetch}"
    );

    // 1. Publish with confirms.
    let messages = noop_messages(n);
    let cpu = cpu_time();
    let publish = publish_all(&publisher, &messages, batch).await?;
    let publish_cpu = cpu_time().saturating_sub(cpu);
    let publish_rate = n as f64 / publish.as_secs_f64();
    println!(
        "publish (persistent, confirmed, pipelined): {:>8.0} msgs/s  ({n} in {:.2} s)  target ≥ {TARGET_PUBLISH:.0}: {}",
        publish_rate,
        publish.as_secs_f64(),
        verdict(publish_rate >= TARGET_PUBLISH)
    );
    println!("    {}", per_message(publish_cpu, n));
    wait_depth(&vhost, n).await?;

    // 2. Raw lapin drain of those messages.
    let cpu = cpu_time();
    let raw = raw_drain(&conn, n, raw_prefetch).await?;
    let raw_cpu = cpu_time().saturating_sub(cpu);
    let raw_rate = n as f64 / raw.as_secs_f64();
    println!(
        "raw lapin drain (ack each, acks pipelined): {:>8.0} msgs/s  ({n} in {:.2} s)  baseline",
        raw_rate,
        raw.as_secs_f64()
    );
    println!("    {}", per_message(raw_cpu, n));
    wait_depth(&vhost, 0).await?;

    // 3. The worker runtime on a no-op task with results ignored.
    publish_all(&publisher, &messages, batch).await?;
    wait_depth(&vhost, n).await?;
    let cpu = cpu_time();
    let drain = worker_drain(&broker, &store, n, concurrency, multiplier).await?;
    let drain_cpu = cpu_time().saturating_sub(cpu);
    let drain_rate = n as f64 / drain.as_secs_f64();
    println!(
        "worker drain (no-op, ignore_result):        {:>8.0} tasks/s ({n} in {:.2} s)  target ≥ {TARGET_DRAIN:.0}: {}  ({:.0}% of raw)",
        drain_rate,
        drain.as_secs_f64(),
        verdict(drain_rate >= TARGET_DRAIN),
        100.0 * drain_rate / raw_rate
    );
    println!("    {}", per_message(drain_cpu, n));
    println!(
        "load average while measuring: {} (2 cores shared with RabbitMQ and other work: the rates above are lower bounds)",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let _ = conn.close(200, "bench done".into()).await;
    store.close().await;
    Ok(())
}

/// CPU time this process has used (user + system), from /proc; zero where unreadable.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<u64>().ok()))
        .sum();
    Duration::from_millis(ticks * 10)
}

fn per_message(cpu: Duration, n: usize) -> String {
    format!(
        "{:.1} µs CPU/msg in this process",
        cpu.as_secs_f64() * 1e6 / n as f64
    )
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "NOT met" }
}

fn noop_messages(n: usize) -> Vec<Outgoing> {
    (0..n)
        .map(|_| Outgoing::task(&TaskMessage::new(NOOP, Map::new()), QUEUE))
        .collect()
}

async fn publish_all(
    publisher: &Publisher,
    messages: &[Outgoing],
    batch: usize,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    for chunk in messages.chunks(batch) {
        let failed = publisher
            .publish_batch(chunk)
            .await
            .into_iter()
            .filter(Result::is_err)
            .count();
        if failed > 0 {
            bail!("{failed} publishes were not confirmed");
        }
    }
    Ok(started.elapsed())
}

async fn raw_drain(conn: &lapin::Connection, n: usize, prefetch: u16) -> anyhow::Result<Duration> {
    let channel = conn.create_channel().await?;
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    let started = Instant::now();
    let mut consumer = channel
        .basic_consume(
            QUEUE.into(),
            "raw-drain".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    // Acks in flight together (up to the prefetch), not one round trip to lapin's I/O loop each.
    let mut acked = (&mut consumer)
        .take(n)
        .map(|delivery| async move {
            delivery?.ack(BasicAckOptions::default()).await?;
            Ok::<(), lapin::Error>(())
        })
        .buffer_unordered(usize::from(prefetch).max(1));
    let mut seen = 0;
    while seen < n {
        tokio::time::timeout(LIMIT, acked.next())
            .await
            .context("raw drain stalled")?
            .context("consumer ended")??;
        seen += 1;
    }
    drop(acked);
    let took = started.elapsed();
    let _ = channel.close(200, "drained".into()).await;
    Ok(took)
}

async fn worker_drain(
    broker: &BrokerSettings,
    store: &Store,
    n: usize,
    concurrency: usize,
    multiplier: u16,
) -> anyhow::Result<Duration> {
    let done = Arc::new(AtomicUsize::new(0));
    let all_done = Arc::new(tokio::sync::Notify::new());
    let mut registry = Registry::new();
    let options = TaskOptions {
        ignore_result: true,
        ..TaskOptions::default()
    };
    {
        let (done, all_done) = (done.clone(), all_done.clone());
        registry.register(NOOP, options, move |_ctx| {
            if done.fetch_add(1, Ordering::Relaxed) + 1 == n {
                all_done.notify_one();
            }
            async { Ok(Value::Null) }
        });
    }
    let mut settings = WorkerSettings::new("throughput-bench", &[QUEUE]);
    settings.concurrency = concurrency;
    settings.queues[0].prefetch_multiplier = multiplier;
    settings.shutdown_grace = Duration::from_secs(5);
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let worker = tokio::spawn(
        Worker::new(
            broker.clone(),
            settings,
            registry,
            shopfds_results::postgres(store),
        )
        .run(shutdown.clone()),
    );
    tokio::time::timeout(LIMIT, all_done.notified())
        .await
        .with_context(|| {
            format!(
                "worker drain stalled at {} of {n}",
                done.load(Ordering::Relaxed)
            )
        })?;
    let took = started.elapsed();
    shutdown.cancel();
    worker.await??;
    Ok(took)
}

/// Polls until `queue`'s ready count is `want` (the broker's statistics lag a little).
async fn wait_depth(vhost: &TestVhost, want: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + LIMIT;
    loop {
        let depth = vhost.queue_depth(QUEUE)? as usize;
        if depth == want {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{QUEUE} holds {depth} messages, expected {want}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
