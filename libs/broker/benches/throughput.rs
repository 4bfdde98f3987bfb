//! `make bench`: how fast the broker layer moves messages, on a RabbitMQ vhost and a PostgreSQL
//! database of its own. One run prints one side-by-side table that answers issue 8's speed
//! requirements:
//!
//! 1. **publish**: `BENCH_MESSAGES` persistent task messages through [`Publisher::publish_batch`]
//!    (`mandatory`, confirms pipelined over each batch of `BENCH_PUBLISH_BATCH`), in msgs/s
//!    (target ≥ 10,000, issue 4). These messages are the first drain's pre-fill.
//! 2. **the floor**: the fastest bare lapin consumer of the same pre-filled persistent messages
//!    we could write, with the same prefetch as the worker. Each [`FLOOR_VARIANTS`] entry drains
//!    a fresh pre-fill and the fastest is the floor. All consume on one channel of a connection
//!    of their own, on the same Tokio runtime as the worker, with manual acks (no `no_ack`: the
//!    broker holds every message until it is acknowledged, as for the worker):
//!    - `ack each`: every delivery acked on its own, acks in flight together (up to the prefetch);
//!    - `multiple ack every K` (K = prefetch/4 and prefetch/2): the consume loop acks with
//!      `multiple: true` every K deliveries and the last one, awaiting that ack: one ack frame
//!      per K messages;
//!    - `multiple ack every K, detached` (K = prefetch/4): the same, but the ack is queued with
//!      `Channel::basic_ack` and not waited for, so the loop never waits for lapin's I/O thread
//!      (`Acker::ack` cannot be used so: lapin runs those as concurrent tasks, a later `multiple`
//!      ack can overtake an earlier one and the broker closes the channel, unknown delivery tag).
//!
//!    On the 2-core development machine the multiple-ack variants drain 40–55 % faster than
//!    `ack each` and use 35–45 % less CPU per message (about 19 µs against 29–36 µs); which of
//!    them wins varies from run to run (within ~15 %), K = prefetch/4 most often.
//! 3. **contenders**: the same number of pre-filled no-op task messages drained by the real
//!    [`Worker`] runtime (decode, registry, limits, metrics, result backend, ack), one entry of
//!    [`contenders`] each: results ignored (target ≥ 90 % of the floor), SUCCESS recorded in
//!    PostgreSQL through the batched backend (target ≥ 50 %; every task's row is counted
//!    afterwards), and the same in Redis in Celery's format (target ≥ 50 %; every task's key is
//!    read back; `BENCH_REDIS_URL`, default `redis://127.0.0.1:6379/0`).
//!
//! A drain is timed from its first delivery to its last ack (for the worker: until `run`
//! returned after every task was recorded and acked). Nothing is published while a drain runs:
//! the pre-fill is published and confirmed first, so the CPU time per task (user + system of
//! this whole process, from `/proc/self/stat`, 10 ms resolution) is the consumer's.
//! RabbitMQ's, PostgreSQL's and Redis's own CPU is in their processes and not counted.
//!
//! A measurement, not a test: it prints the figures and whether each target was met, and exits
//! non-zero only when the run itself failed (including a contender whose results do not check
//! out, which would make its figure meaningless). `BENCH_MESSAGES` (110000, about 5 s of the
//! floor on the 2-core development machine when it is quiet), `BENCH_PUBLISH_BATCH` (5000),
//! `BENCH_CONCURRENCY` (64), `BENCH_PREFETCH_MULTIPLIER` (4): the worker's prefetch is
//! concurrency × multiplier (256; 512 was no faster), and the floor uses the same.
//! `BENCH_ROUNDS` (1): with more, the floor's variant and every contender run again, in turn,
//! and the table keeps each one's fastest drain (load from other work comes and goes; a round
//! adds about a minute). `BENCH_ONLY=floor,ignored,postgres,redis` runs only the named parts (e.g.
//! `BENCH_ONLY=postgres` to profile one contender; without the floor there is no share to
//! judge). `RUST_LOG=info` runs the worker with logging on, as in production.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use futures::future::BoxFuture;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use serde_json::{Map, Value};
use shopfds_broker::{
    BrokerSettings, Outgoing, Publisher, QueueType, Registry, ResultBackend, TaskOptions, Worker,
    WorkerSettings, topology,
};
use shopfds_protocol::TaskMessage;
use shopfds_store::{DatabaseSettings, Store};
use shopfds_testkit::pg::TestDatabase;
use shopfds_testkit::rabbit::TestVhost;
use tokio_util::sync::CancellationToken;

const TARGET_PUBLISH: f64 = 10_000.0;
const QUEUE: &str = "default";
const NOOP: &str = "bench_noop";
/// A drain that has not finished by then has failed.
const LIMIT: Duration = Duration::from_secs(180);

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

/// What every pass shares.
struct Env {
    vhost: TestVhost,
    broker: BrokerSettings,
    store: Store,
    publisher: Publisher,
    n: usize,
    batch: usize,
    concurrency: usize,
    multiplier: u16,
    prefetch: u16,
    rounds: usize,
}

/// One drain's figures.
#[derive(Debug, Clone, Copy)]
struct Measured {
    tasks: usize,
    took: Duration,
    cpu: Duration,
}

impl Measured {
    fn rate(&self) -> f64 {
        self.tasks as f64 / self.took.as_secs_f64()
    }

    fn cpu_per_task_us(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.tasks as f64
    }
}

/// What a contender's result check found.
struct Checked {
    ok: bool,
    text: String,
}

type BuildBackend = for<'a> fn(&'a Env) -> BoxFuture<'a, anyhow::Result<Arc<dyn ResultBackend>>>;
type VerifyResults = for<'a> fn(&'a Env, &'a [String]) -> BoxFuture<'a, anyhow::Result<Checked>>;

/// A way of running the no-op task through the real worker.
struct Contender {
    /// For `BENCH_ONLY`.
    key: &'static str,
    name: &'static str,
    /// The share of the floor's rate it must reach (issue 8).
    target: f64,
    ignore_result: bool,
    backend: BuildBackend,
    /// Given the drained task ids, whether the backend holds what it should.
    verify: VerifyResults,
}

/// The contenders, in the order they run.
fn contenders() -> Vec<Contender> {
    vec![
        Contender {
            key: "ignored",
            name: "worker: no-op, results ignored",
            target: 0.90,
            ignore_result: true,
            backend: postgres_backend,
            verify: no_rows_written,
        },
        Contender {
            key: "postgres",
            name: "worker: no-op, SUCCESS in PostgreSQL",
            target: 0.50,
            ignore_result: false,
            backend: postgres_backend,
            verify: postgres_success_rows,
        },
        Contender {
            key: "redis",
            name: "worker: no-op, SUCCESS in Redis",
            target: 0.50,
            ignore_result: false,
            backend: redis_backend,
            verify: redis_success_keys,
        },
    ]
}

fn postgres_backend(env: &Env) -> BoxFuture<'_, anyhow::Result<Arc<dyn ResultBackend>>> {
    Box::pin(async move { Ok(shopfds_results::postgres(&env.store)) })
}

/// Redis for the bench: `BENCH_REDIS_URL` (default `redis://127.0.0.1:6379/0`); the keys are
/// the tasks' own (`celery-task-meta-<uuid>`) and expire after 10 minutes.
fn redis_url() -> String {
    std::env::var("BENCH_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".to_owned())
}

fn redis_backend(_env: &Env) -> BoxFuture<'_, anyhow::Result<Arc<dyn ResultBackend>>> {
    Box::pin(async move {
        let backend =
            shopfds_results::RedisBackend::connect(&redis_url(), Duration::from_secs(600)).await?;
        Ok(Arc::new(backend) as Arc<dyn ResultBackend>)
    })
}

/// Every task's `celery-task-meta-<id>` is there and SUCCESS (read through the backend, a
/// thousand at a time on its multiplexed connection).
fn redis_success_keys<'a>(
    _env: &'a Env,
    ids: &'a [String],
) -> BoxFuture<'a, anyhow::Result<Checked>> {
    Box::pin(async move {
        let backend =
            shopfds_results::RedisBackend::connect(&redis_url(), Duration::from_secs(600)).await?;
        let mut success = 0usize;
        for chunk in ids.chunks(1000) {
            let records = futures::future::join_all(chunk.iter().map(|id| backend.get(id))).await;
            for record in records {
                if record?.is_some_and(|r| r.state == shopfds_protocol::TaskState::Success) {
                    success += 1;
                }
            }
        }
        Ok(Checked {
            ok: success == ids.len(),
            text: format!("{success} of {} keys SUCCESS", ids.len()),
        })
    })
}

/// With results ignored, not one row may have been written for these tasks.
fn no_rows_written<'a>(env: &'a Env, ids: &'a [String]) -> BoxFuture<'a, anyhow::Result<Checked>> {
    Box::pin(async move {
        let (rows,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM task_results WHERE task_id = ANY($1)")
                .bind(ids)
                .fetch_one(env.store.pool())
                .await?;
        Ok(Checked {
            ok: rows == 0,
            text: format!("{rows} rows written"),
        })
    })
}

/// Every task's row is there and SUCCESS.
fn postgres_success_rows<'a>(
    env: &'a Env,
    ids: &'a [String],
) -> BoxFuture<'a, anyhow::Result<Checked>> {
    Box::pin(async move {
        let (success,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM task_results WHERE task_id = ANY($1) AND state = 'SUCCESS'",
        )
        .bind(ids)
        .fetch_one(env.store.pool())
        .await?;
        Ok(Checked {
            ok: usize::try_from(success).ok() == Some(ids.len()),
            text: format!("{success} of {} rows SUCCESS", ids.len()),
        })
    })
}

/// How the bare consumer acknowledges.
#[derive(Debug, Clone, Copy)]
enum FloorAck {
    /// Each delivery on its own, acks in flight together.
    Each,
    /// `multiple: true` every prefetch / `divisor` deliveries, awaited in the consume loop, or
    /// (`detached`) sent from a task of its own so the loop never waits for lapin's I/O thread.
    MultipleEvery { divisor: u16, detached: bool },
}

const FLOOR_VARIANTS: [FloorAck; 4] = [
    FloorAck::Each,
    FloorAck::MultipleEvery {
        divisor: 4,
        detached: false,
    },
    FloorAck::MultipleEvery {
        divisor: 2,
        detached: false,
    },
    FloorAck::MultipleEvery {
        divisor: 4,
        detached: true,
    },
];

impl FloorAck {
    fn every(self, prefetch: u16) -> usize {
        match self {
            FloorAck::Each => 1,
            FloorAck::MultipleEvery { divisor, .. } => usize::from((prefetch / divisor).max(1)),
        }
    }

    fn describe(self, prefetch: u16) -> String {
        match self {
            FloorAck::Each => "lapin, ack each".to_owned(),
            FloorAck::MultipleEvery { detached, .. } => format!(
                "lapin, multiple ack every {}{}",
                self.every(prefetch),
                if detached { ", detached" } else { "" }
            ),
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let n: usize = env_or("BENCH_MESSAGES", 110_000).max(1);
    let batch: usize = env_or("BENCH_PUBLISH_BATCH", 5_000).max(1);
    let concurrency: usize = env_or("BENCH_CONCURRENCY", 64).max(1);
    let multiplier: u16 = env_or("BENCH_PREFETCH_MULTIPLIER", 4).max(1);
    let only: Option<Vec<String>> = std::env::var("BENCH_ONLY")
        .ok()
        .map(|v| v.split(',').map(|k| k.trim().to_owned()).collect());
    let rounds: usize = env_or("BENCH_ROUNDS", 1).max(1);
    let wanted = |key: &str| {
        only.as_ref()
            .is_none_or(|keys| keys.iter().any(|k| k == key))
    };

    let vhost = tokio::task::spawn_blocking(TestVhost::create).await??;
    let db = TestDatabase::create().await?;
    let store = Store::connect(&DatabaseSettings::with_url(db.url())).await?;
    let broker = BrokerSettings::with_url(vhost.amqp_url(), "throughput-bench");
    let conn = shopfds_broker::amqp::connect(&broker).await?;
    let channel = conn.create_channel().await?;
    topology::declare(&channel, QueueType::Classic).await?;
    let publisher = Publisher::new(&conn).await?;
    let mut settings = WorkerSettings::new("throughput-bench", &[QUEUE]);
    settings.concurrency = concurrency;
    settings.queues[0].prefetch_multiplier = multiplier;
    let prefetch = settings.prefetch_count(&settings.queues[0]);
    let env = Env {
        vhost,
        broker,
        store,
        publisher,
        n,
        batch,
        concurrency,
        multiplier,
        prefetch,
        rounds,
    };

    let (messages, publish_ids) = noop_messages(n);
    println!(
        "broker throughput: {n} persistent messages per drain ({} body bytes, {} headers each), prefetch {prefetch} for every consumer (worker concurrency {concurrency} × prefetch multiplier {multiplier}), publish batches of {batch}, {} tokio worker threads",
        messages[0].body.len(),
        messages[0].headers.len(),
        tokio::runtime::Handle::current().metrics().num_workers(),
    );

    // 1. Publish with confirms; these are also the first floor variant's pre-fill.
    let cpu = cpu_time();
    let publish = publish_all(&env, &messages).await?;
    let publish_cpu = cpu_time().saturating_sub(cpu);
    let publish_rate = n as f64 / publish.as_secs_f64();
    println!(
        "publish (persistent, confirmed, pipelined): {publish_rate:.0} msgs/s ({n} in {:.2} s), {:.1} µs CPU/msg; target ≥ {TARGET_PUBLISH:.0}: {}",
        publish.as_secs_f64(),
        publish_cpu.as_secs_f64() * 1e6 / n as f64,
        verdict(publish_rate >= TARGET_PUBLISH)
    );
    drop(messages);
    wait_depth(&env, n).await?;
    // Task ids of the messages waiting in the queue, if they are the next drain's.
    let mut queued = Some(publish_ids);

    // 2. The floor: the fastest of the bare consumers.
    let mut floor: Option<(FloorAck, String, Measured)> = None;
    for variant in FLOOR_VARIANTS.into_iter().filter(|_| wanted("floor")) {
        if queued.take().is_none() {
            prefill(&env).await?;
        }
        let m = floor_drain(&env, variant).await?;
        let name = variant.describe(prefetch);
        report(&name, &m, "msgs/s", "");
        if floor.as_ref().is_none_or(|(_, _, f)| m.rate() > f.rate()) {
            floor = Some((variant, name, m));
        }
    }

    // 3. The contenders through the real worker; with more rounds, the floor's variant and every
    // contender again, in turn, keeping each one's best (load from elsewhere comes and goes).
    let contenders: Vec<Contender> = contenders().into_iter().filter(|c| wanted(c.key)).collect();
    let mut best: Vec<Option<(Measured, Checked)>> = contenders.iter().map(|_| None).collect();
    for round in 1..=rounds {
        if round > 1
            && let Some((variant, name, kept)) = floor.as_mut()
        {
            prefill(&env).await?;
            let m = floor_drain(&env, *variant).await?;
            report(name, &m, "msgs/s", &format!(" (round {round})"));
            if m.rate() > kept.rate() {
                *kept = m;
            }
        }
        for (contender, best) in contenders.iter().zip(best.iter_mut()) {
            let ids = match queued.take() {
                Some(ids) => ids,
                None => prefill(&env).await?,
            };
            let backend = (contender.backend)(&env).await?;
            let m = worker_drain(&env, backend, contender.ignore_result).await?;
            wait_depth(&env, 0).await?;
            let checked = (contender.verify)(&env, &ids).await?;
            report(
                contender.name,
                &m,
                "tasks/s",
                &format!("; results: {} (round {round})", checked.text),
            );
            // A failed check is kept whatever the speed: it voids the contender's figure.
            let keep = match best.as_ref() {
                None => true,
                Some((_, kept)) if !kept.ok => false,
                Some((kept, _)) => !checked.ok || m.rate() > kept.rate(),
            };
            if keep {
                *best = Some((m, checked));
            }
        }
    }
    let rows: Vec<(Contender, Measured, Checked)> = contenders
        .into_iter()
        .zip(best)
        .filter_map(|(c, b)| b.map(|(m, checked)| (c, m, checked)))
        .collect();
    let floor = floor.map(|(_, name, m)| (name, m));
    print_table(&env, floor.as_ref(), &rows);
    let _ = conn.close(200, "bench done".into()).await;
    env.store.close().await;
    drop(db);
    let failed: Vec<&str> = rows
        .iter()
        .filter(|(_, _, c)| !c.ok)
        .map(|(c, _, _)| c.name)
        .collect();
    if !failed.is_empty() {
        bail!("results did not check out for: {}", failed.join(", "));
    }
    Ok(())
}

fn print_table(
    env: &Env,
    floor: Option<&(String, Measured)>,
    rows: &[(Contender, Measured, Checked)],
) {
    println!();
    println!(
        "issue 8, side by side: {} messages per drain, prefetch {} everywhere, worker concurrency {}, best of {} round(s)",
        env.n, env.prefetch, env.concurrency, env.rounds
    );
    println!(
        "| {:<44} | {:>7} | {:>6} | {:>8} | {:>10} | {:>6} | {:>5} | {:>12} | {:<32} |",
        "contender",
        "tasks",
        "s",
        "tasks/s",
        "% of floor",
        "target",
        "met?",
        "CPU µs/task",
        "results"
    );
    println!(
        "|{}|{}|{}|{}|{}|{}|{}|{}|{}|",
        "-".repeat(46),
        "-".repeat(9),
        "-".repeat(8),
        "-".repeat(10),
        "-".repeat(12),
        "-".repeat(8),
        "-".repeat(7),
        "-".repeat(14),
        "-".repeat(34)
    );
    if let Some((name, floor)) = floor {
        println!(
            "| {:<44} | {:>7} | {:>6.2} | {:>8.0} | {:>10} | {:>6} | {:>5} | {:>12.1} | {:<32} |",
            format!("floor: {name}"),
            floor.tasks,
            floor.took.as_secs_f64(),
            floor.rate(),
            "100 %",
            "—",
            "—",
            floor.cpu_per_task_us(),
            "—"
        );
    }
    for (c, m, checked) in rows {
        // Without a floor (`BENCH_ONLY` left it out) there is no share to judge.
        let share = floor.map(|(_, f)| m.rate() / f.rate());
        println!(
            "| {:<44} | {:>7} | {:>6.2} | {:>8.0} | {:>10} | ≥{:>3.0} % | {:>5} | {:>12.1} | {:<32} |",
            c.name,
            m.tasks,
            m.took.as_secs_f64(),
            m.rate(),
            share.map_or("—".to_owned(), |s| format!("{:.0} %", 100.0 * s)),
            100.0 * c.target,
            match share {
                None => "—",
                Some(s) if s >= c.target => "yes",
                Some(_) => "NO",
            },
            m.cpu_per_task_us(),
            format!("{} {}", checked.text, if checked.ok { "✓" } else { "✗" }),
        );
    }
    println!(
        "CPU µs/task: user + system time of this process (consumer, lapin's I/O thread, the result writer) per task; \
         RabbitMQ's, PostgreSQL's and Redis's own CPU is in their processes and not counted."
    );
    println!(
        "load average after the run: {} (2 cores shared with RabbitMQ, PostgreSQL and other work: compare ratios within one run)",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
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

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "NOT met" }
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

async fn publish_all(env: &Env, messages: &[Outgoing]) -> anyhow::Result<Duration> {
    let started = Instant::now();
    for chunk in messages.chunks(env.batch) {
        let failed = env
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
    Ok(started.elapsed())
}

fn report(name: &str, m: &Measured, unit: &str, extra: &str) {
    println!(
        "{name:<44} {:>8.0} {unit} ({} in {:.2} s), {:.1} µs CPU each{extra}",
        m.rate(),
        m.tasks,
        m.took.as_secs_f64(),
        m.cpu_per_task_us()
    );
}

/// Publishes `n` fresh messages and waits until the queue holds them all; their task ids.
async fn prefill(env: &Env) -> anyhow::Result<Vec<String>> {
    let (messages, ids) = noop_messages(env.n);
    publish_all(env, &messages).await?;
    wait_depth(env, env.n).await?;
    Ok(ids)
}

async fn floor_drain(env: &Env, ack: FloorAck) -> anyhow::Result<Measured> {
    let n = env.n;
    let conn = shopfds_broker::amqp::connect(&env.broker).await?;
    let channel = conn.create_channel().await?;
    channel
        .basic_qos(env.prefetch, BasicQosOptions::default())
        .await?;
    let first = OnceLock::new();
    let cpu = cpu_time();
    let mut consumer = channel
        .basic_consume(
            QUEUE.into(),
            "floor".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    match ack {
        FloorAck::Each => {
            let mut acked = (&mut consumer)
                .take(n)
                .map(|delivery| {
                    first.get_or_init(Instant::now);
                    async move {
                        delivery?.ack(BasicAckOptions::default()).await?;
                        Ok::<(), lapin::Error>(())
                    }
                })
                .buffer_unordered(usize::from(env.prefetch));
            for _ in 0..n {
                tokio::time::timeout(LIMIT, acked.next())
                    .await
                    .context("floor drain stalled")?
                    .context("consumer ended")??;
            }
        }
        FloorAck::MultipleEvery { detached, .. } => {
            let every = ack.every(env.prefetch);
            // Detached acks go straight to the channel (`Channel::basic_ack`, whose first poll
            // queues the frame, so they leave in order: a later `multiple` ack never overtakes
            // an earlier one) and are completed at the end. Through `Acker::ack` they could
            // overtake: lapin runs those as concurrent internal tasks, and the broker then
            // refuses the earlier tag (PRECONDITION_FAILED, unknown delivery tag).
            let mut pending = futures::stream::FuturesUnordered::new();
            for seen in 1..=n {
                let delivery = tokio::time::timeout(LIMIT, consumer.next())
                    .await
                    .context("floor drain stalled")?
                    .context("consumer ended")??;
                first.get_or_init(Instant::now);
                if seen % every == 0 || seen == n {
                    let multiple = BasicAckOptions { multiple: true };
                    if detached {
                        let (channel, tag) = (channel.clone(), delivery.delivery_tag);
                        let mut ack =
                            Box::pin(async move { channel.basic_ack(tag, multiple).await });
                        if let std::task::Poll::Ready(done) = futures::poll!(ack.as_mut()) {
                            done?;
                        } else {
                            pending.push(ack);
                        }
                    } else {
                        delivery.ack(multiple).await?;
                    }
                }
            }
            while let Some(done) = pending.next().await {
                done?;
            }
        }
    }
    let ended = Instant::now();
    let cpu = cpu_time().saturating_sub(cpu);
    let _ = channel.close(200, "drained".into()).await;
    let _ = conn.close(200, "drained".into()).await;
    wait_depth(env, 0).await?;
    Ok(Measured {
        tasks: n,
        took: ended.duration_since(*first.get().context("no delivery")?),
        cpu,
    })
}

async fn worker_drain(
    env: &Env,
    backend: Arc<dyn ResultBackend>,
    ignore_result: bool,
) -> anyhow::Result<Measured> {
    let n = env.n;
    let done = Arc::new(AtomicUsize::new(0));
    let first = Arc::new(OnceLock::new());
    let all_done = Arc::new(tokio::sync::Notify::new());
    let mut registry = Registry::new();
    let options = TaskOptions {
        ignore_result,
        ..TaskOptions::default()
    };
    {
        let (done, first, all_done) = (done.clone(), first.clone(), all_done.clone());
        registry.register(NOOP, options, move |_ctx| {
            first.get_or_init(Instant::now);
            if done.fetch_add(1, Ordering::Relaxed) + 1 == n {
                all_done.notify_one();
            }
            async { Ok(Value::Null) }
        });
    }
    let mut settings = WorkerSettings::new("throughput-bench", &[QUEUE]);
    settings.concurrency = env.concurrency;
    settings.queues[0].prefetch_multiplier = env.multiplier;
    // Nothing may be abandoned: every task is recorded and acked before `run` returns.
    settings.shutdown_grace = LIMIT;
    let shutdown = CancellationToken::new();
    let cpu = cpu_time();
    let worker = tokio::spawn(
        Worker::new(env.broker.clone(), settings, registry, backend).run(shutdown.clone()),
    );
    let waited = tokio::time::timeout(LIMIT, all_done.notified()).await;
    // Stop consuming (the queue is empty) and wait for the last tasks' records and acks.
    shutdown.cancel();
    worker.await??;
    let ended = Instant::now();
    let cpu = cpu_time().saturating_sub(cpu);
    waited.with_context(|| {
        format!(
            "worker drain stalled at {} of {n}",
            done.load(Ordering::Relaxed)
        )
    })?;
    Ok(Measured {
        tasks: n,
        took: ended.duration_since(*first.get().context("no task ran")?),
        cpu,
    })
}

/// Polls until `queue`'s ready count is `want` (the broker's statistics lag a little).
async fn wait_depth(env: &Env, want: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + LIMIT;
    loop {
        let depth = env.vhost.queue_depth(QUEUE)? as usize;
        if depth == want {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{QUEUE} holds {depth} messages, expected {want}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
