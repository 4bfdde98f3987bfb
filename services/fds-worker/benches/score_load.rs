//! `make bench`: latency and throughput of `fds.v1.FraudDetection/Score` on loopback.
//!
//! Starts the real fds-worker in-process (a database and a RabbitMQ vhost of its own, gRPC and
//! operations ports on 127.0.0.1:0), seeds orders so the velocity query has rows to count, then
//! drives Score with tonic clients at a fixed number of calls in flight over several HTTP/2
//! connections:
//!
//! 1. warm-up at the target rate, not measured;
//! 2. open loop: call `n` is due at `n / BENCH_RATE` whether or not earlier calls have answered,
//!    so a slow server shows as latency and schedule lag instead of as a politely lower load;
//! 3. closed loop: as fast as the same concurrency allows (bounded in time), for the ceiling.
//!
//! Client and server share this machine's cores, so each pass also prints where the CPU went:
//! the server's threads, the load generator's threads, PostgreSQL, everything else.
//!
//! A measurement, not a test: it exits 0 whether or not the target is met, and non-zero only when
//! the run itself failed (setup, or more than 1% of the calls in error).
//!
//! Tuning: `BENCH_RATE` (5000), `BENCH_REQUESTS` (50000), `BENCH_CONCURRENCY` (32),
//! `BENCH_CONNECTIONS` (4), `BENCH_CLIENT_THREADS` (2), `BENCH_WARMUP_SECS` (2); the server takes
//! its usual variables (`DATABASE_MAX_CONNECTIONS`, `GRPC_CONCURRENCY`, …) except its addresses,
//! database and vhost. `RUST_LOG=warn` shows the server's warnings (silent otherwise).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use fds_worker::config::VelocitySource;
use fds_worker::{Application, Settings, metrics};
use hdrhistogram::Histogram;
use shopfds_protocol::grpc::{FraudDetectionClient, Item, ScoreRequest};
use shopfds_testkit::pg::TestDatabase;
use shopfds_testkit::rabbit::TestVhost;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// The target: p99 under 2 ms at 5,000 Score calls per second.
const TARGET_RATE: f64 = 5_000.0;
const TARGET_P99: Duration = Duration::from_millis(2);
/// More errors than this fraction of the calls means the run itself failed.
const MAX_ERROR_RATIO: f64 = 0.01;
/// An open-loop pass "held the rate" when it achieved at least this fraction of it.
const RATE_TOLERANCE: f64 = 0.98;
/// The closed-loop pass stops after this long even if requests remain.
const CLOSED_LOOP_LIMIT: Duration = Duration::from_secs(8);
/// A call that takes longer counts as an error (and keeps the run bounded).
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// Thread names (at most 15 bytes: what /proc shows) that tell server from client CPU time.
const SERVER_THREADS: &str = "fds-server";
const CLIENT_THREADS: &str = "bench-client";
/// /proc reports CPU time in USER_HZ ticks, 100 per second on every Linux ABI we run on.
const TICKS_PER_SECOND: f64 = 100.0;

/// Seeded history: customers `bench-c-<k>` with their own IP and card. The first
/// `HOT_CUSTOMERS` have ordered many times in the last hour (their calls trip every velocity
/// rule); the others have a few orders spread over the last day.
const CUSTOMERS: u64 = 5_000;
const HOT_CUSTOMERS: u64 = 50;
const HOT_ORDERS_EACH: u64 = 15;
const REGULAR_ORDERS: u64 = 15_000;

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("score_load: {e:#}");
            ExitCode::FAILURE
        }
    }
}

struct Config {
    rate: f64,
    requests: u64,
    concurrency: usize,
    connections: usize,
    warmup: Duration,
    client_threads: usize,
}

impl Config {
    fn from_env() -> anyhow::Result<Config> {
        let config = Config {
            rate: env_or("BENCH_RATE", TARGET_RATE)?,
            requests: env_or("BENCH_REQUESTS", 50_000)?,
            concurrency: env_or("BENCH_CONCURRENCY", 32)?,
            connections: env_or("BENCH_CONNECTIONS", 4)?,
            warmup: Duration::from_secs(env_or("BENCH_WARMUP_SECS", 2)?),
            client_threads: env_or("BENCH_CLIENT_THREADS", 2)?,
        };
        anyhow::ensure!(
            config.rate.is_finite() && config.rate > 0.0,
            "BENCH_RATE: must be positive"
        );
        anyhow::ensure!(config.requests > 0, "BENCH_REQUESTS: must be positive");
        anyhow::ensure!(
            config.concurrency > 0,
            "BENCH_CONCURRENCY: must be positive"
        );
        anyhow::ensure!(
            config.connections > 0,
            "BENCH_CONNECTIONS: must be positive"
        );
        anyhow::ensure!(
            config.client_threads > 0,
            "BENCH_CLIENT_THREADS: must be positive"
        );
        Ok(config)
    }
}

fn env_or<T: FromStr>(name: &str, default: T) -> anyhow::Result<T> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("{name}: {v:?} is not a number")),
        _ => Ok(default),
    }
}

/// Runs everything; `Ok(false)` when the run completed but too many calls failed.
fn run() -> anyhow::Result<bool> {
    let config = Config::from_env()?;
    // Silent by default: a log line per call would cost more than the call. `RUST_LOG=warn`
    // shows why calls were scored without velocity or decisions were not recorded.
    if std::env::var_os("RUST_LOG").is_some() {
        shopfds_testkit::init_tracing();
    }
    // Two runtimes only so that /proc can tell their threads apart; they share the same cores.
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(SERVER_THREADS)
        .enable_all()
        .build()?;
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.client_threads)
        .thread_name(CLIENT_THREADS)
        .enable_all()
        .build()?;

    let vhost = TestVhost::create().context("RabbitMQ vhost (is `make setup` done?)")?;
    let db = server_rt
        .block_on(TestDatabase::create())
        .context("PostgreSQL database (is `make setup` done?)")?;
    let mut settings = Settings::from_env()?;
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    settings.database.url = db.url();
    settings.broker.url = shopfds_service::SecretUrl::new(vhost.amqp_url());
    settings.shell.ops_addr = loopback;
    settings.fds.grpc_addr = loopback;
    // Score needs a key with fds:score, as order-api's.
    let key = shopfds_testkit::keys::TestKey::new(&[shopfds_auth::Scope::FdsScore]);
    settings.auth = shopfds_testkit::keys::auth_settings(&[&key]);
    let _ = AUTHORIZATION.set(key.bearer().parse()?);
    let app = server_rt.block_on(Application::build(settings.clone()))?;
    let grpc_addr = app.grpc_addr().context("gRPC listener has no address")?;
    let rules_version = app.engine().rules().version.clone();
    let shutdown = CancellationToken::new();
    let server = server_rt.spawn(app.run_until_stopped(shutdown.clone()));

    let pool = server_rt.block_on(db.pool())?;
    if settings.fds.velocity_source == VelocitySource::Memory {
        // Synced on the empty table first, so the seeded orders arrive as notifications.
        server_rt.block_on(index_caught_up(0))?;
    }
    let rss_before = resident_bytes();
    let seeded = server_rt.block_on(seed_orders(&pool))?;
    let indexed = match settings.fds.velocity_source {
        VelocitySource::Memory => Some(server_rt.block_on(index_caught_up(seeded))?),
        VelocitySource::Database => None,
    };

    print_header(&config, &settings, &rules_version, grpc_addr, seeded);
    if let Some((indexed, waited)) = indexed {
        let grown = resident_bytes().saturating_sub(rss_before);
        println!(
            "velocity index: {indexed} orders in memory, followed from orders_new (the seeded \
             orders were all in it {} ms after seeding returned); the process \
             grew by {:.1} MiB meanwhile (about {} bytes per order)",
            waited.as_millis(),
            grown as f64 / (1024.0 * 1024.0),
            grown / indexed.max(1),
        );
        println!();
    }
    let outcome = client_rt.block_on(drive(&config, grpc_addr));

    shutdown.cancel();
    // The server flushes queued decisions to fds_results on the way out.
    let stopped =
        server_rt.block_on(async { tokio::time::timeout(Duration::from_secs(30), server).await });
    let recorded = server_rt.block_on(count_recorded(&pool));
    server_rt.block_on(pool.close());
    drop(client_rt);
    drop(server_rt);
    drop(db);
    drop(vhost);

    let (open, closed, sent) = outcome?;
    match stopped {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => return Err(e.context("fds-worker failed")),
        Ok(Err(e)) => anyhow::bail!("fds-worker task: {e}"),
        Err(_) => anyhow::bail!("fds-worker did not stop within 30 s"),
    }
    println!(
        "recorded decisions: {} of {sent} successful calls in fds_results \
         (dropped by the writer: {}, write failures: {})",
        recorded?,
        metrics::results_dropped_total().get(),
        metrics::results_write_failed_total().get(),
    );
    print_verdict(&config, &open, &closed)
}

/// How long the in-memory index may take to follow the seeded orders.
const INDEX_DEADLINE: Duration = Duration::from_secs(60);

/// Waits until the server's velocity index holds every seeded order (it learns of them from the
/// `orders_new` notifications, as it would of orders placed through order-api).
async fn index_caught_up(seeded: u64) -> anyhow::Result<(u64, Duration)> {
    let started = Instant::now();
    loop {
        let held = u64::try_from(metrics::velocity_index_orders().get()).unwrap_or(0);
        if metrics::velocity_index_synced().get() == 1 && held >= seeded {
            return Ok((held, started.elapsed()));
        }
        if started.elapsed() > INDEX_DEADLINE {
            anyhow::bail!(
                "the velocity index holds {held} of {seeded} seeded orders after {INDEX_DEADLINE:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// This process's resident memory (VmRSS), 0 where /proc does not tell.
fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status.lines().find_map(|l| {
                l.strip_prefix("VmRSS:")
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
        })
        .map_or(0, |kb| kb * 1024)
}

fn print_header(
    config: &Config,
    settings: &Settings,
    rules_version: &str,
    grpc_addr: SocketAddr,
    seeded: u64,
) {
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    println!("== fds.v1.FraudDetection/Score load (benches/score_load.rs) ==");
    println!("machine: {nproc} CPUs (nproc), {cpu}");
    println!(
        "server: in-process fds-worker on {grpc_addr}, rules {rules_version}, \
         FDS_VELOCITY_SOURCE={}, GRPC_CONCURRENCY={}, DATABASE_MAX_CONNECTIONS={}, \
         FDS_VELOCITY_TIMEOUT_MS={}, 2 runtime threads",
        match settings.fds.velocity_source {
            VelocitySource::Memory => "memory",
            VelocitySource::Database => "database",
        },
        settings.fds.grpc_concurrency,
        settings.database.max_connections,
        settings.fds.velocity_timeout.as_millis(),
    );
    println!(
        "data: {seeded} seeded orders ({CUSTOMERS} customers, {HOT_CUSTOMERS} of them with \
         {HOT_ORDERS_EACH} orders in the last hour)"
    );
    println!(
        "load: BENCH_CONCURRENCY={} calls in flight over BENCH_CONNECTIONS={} HTTP/2 \
         connections, BENCH_CLIENT_THREADS={}, BENCH_RATE={} req/s, BENCH_REQUESTS={} after \
         BENCH_WARMUP_SECS={} s of warm-up",
        config.concurrency,
        config.connections,
        config.client_threads,
        config.rate,
        config.requests,
        config.warmup.as_secs(),
    );
    println!();
}

/// Warm-up, open loop, closed loop. Returns both measured passes and the successful calls
/// of all three (what the server should have recorded).
async fn drive(config: &Config, addr: SocketAddr) -> anyhow::Result<(PassReport, PassReport, u64)> {
    let mut clients = Vec::with_capacity(config.connections);
    for _ in 0..config.connections {
        // One Channel is one HTTP/2 connection.
        let channel = Channel::from_shared(format!("http://{addr}"))?
            .tcp_nodelay(true)
            .connect()
            .await
            .with_context(|| format!("connect to fds-worker at {addr}"))?;
        clients.push(FraudDetectionClient::new(channel));
    }
    // Rate × duration, and at least one call per worker.
    let warmup_calls = ((config.rate * config.warmup.as_secs_f64()) as u64).max(1);
    let warmup = run_pass(
        &clients,
        config.concurrency,
        Plan {
            first: 0,
            count: warmup_calls,
            rate: Some(config.rate),
            limit: Some(open_loop_limit(warmup_calls, config.rate)),
        },
    )
    .await?;
    let open = run_pass(
        &clients,
        config.concurrency,
        Plan {
            first: warmup_calls,
            count: config.requests,
            rate: Some(config.rate),
            limit: Some(open_loop_limit(config.requests, config.rate)),
        },
    )
    .await?;
    open.print(&format!("open loop at {} req/s", config.rate));
    let closed = run_pass(
        &clients,
        config.concurrency,
        Plan {
            first: warmup_calls + config.requests,
            count: config.requests,
            rate: None,
            limit: Some(CLOSED_LOOP_LIMIT),
        },
    )
    .await?;
    closed.print(&format!(
        "closed loop, as fast as {} in flight allow",
        config.concurrency
    ));
    let sent = warmup.ok() + open.ok() + closed.ok();
    Ok((open, closed, sent))
}

/// How long an open-loop pass of `count` calls at `rate` may take: its schedule plus a margin.
/// A server that cannot keep up would otherwise stretch the run without bound; it then shows as a
/// lower achieved rate and fewer requests.
fn open_loop_limit(count: u64, rate: f64) -> Duration {
    let schedule = count as f64 / rate;
    Duration::from_secs_f64(schedule + (schedule * 0.2).max(1.0))
}

/// The calls of one pass: numbers `first..first + count` (the number picks the request).
#[derive(Clone, Copy)]
struct Plan {
    first: u64,
    count: u64,
    /// Open loop: call `i` of the pass is due at `i / rate` s. `None`: as soon as a slot frees.
    rate: Option<f64>,
    /// Stop taking new calls after this long.
    limit: Option<Duration>,
}

/// What one in-flight slot saw.
struct Tally {
    /// From sending the call to its answer, µs.
    latency: Histogram<u64>,
    /// From when the call was due to when it was sent, µs (open loop only).
    lag: Histogram<u64>,
    /// Answers by decision: unspecified, approve, review, block.
    decisions: [u64; 4],
    errors: u64,
    first_error: Option<String>,
    last_done: Option<Instant>,
}

impl Tally {
    fn new() -> anyhow::Result<Tally> {
        Ok(Tally {
            latency: micros_histogram()?,
            lag: micros_histogram()?,
            decisions: [0; 4],
            errors: 0,
            first_error: None,
            last_done: None,
        })
    }

    fn merge(&mut self, other: Tally) -> anyhow::Result<()> {
        self.latency.add(&other.latency)?;
        self.lag.add(&other.lag)?;
        for (mine, theirs) in self.decisions.iter_mut().zip(other.decisions) {
            *mine += theirs;
        }
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.last_done = self.last_done.max(other.last_done);
        Ok(())
    }
}

/// 1 µs to 60 s at 3 significant digits.
fn micros_histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 60_000_000, 3)?)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

async fn run_pass(
    clients: &[FraudDetectionClient<Channel>],
    concurrency: usize,
    plan: Plan,
) -> anyhow::Result<PassReport> {
    let next = Arc::new(AtomicU64::new(0));
    let score_before = server_score_time();
    let velocity_skipped_before = metrics::velocity_unavailable_total().get();
    let cpu_before = CpuTicks::now();
    let start = Instant::now();
    let mut slots = tokio::task::JoinSet::new();
    for slot in 0..concurrency {
        let client = clients[slot % clients.len()].clone();
        slots.spawn(run_slot(client, Arc::clone(&next), plan, start));
    }
    let mut tally = Tally::new()?;
    while let Some(slot) = slots.join_next().await {
        tally.merge(slot??)?;
    }
    let elapsed = tally.last_done.unwrap_or(start).duration_since(start);
    let cpu = CpuTicks::now().since(&cpu_before);
    let (score_sum, score_count) = server_score_time();
    Ok(PassReport {
        tally,
        elapsed,
        cpu,
        open_loop: plan.rate.is_some(),
        server_score_mean: Duration::from_secs_f64(
            (score_sum - score_before.0) / (score_count - score_before.1).max(1) as f64,
        ),
        velocity_skipped: metrics::velocity_unavailable_total().get() - velocity_skipped_before,
    })
}

/// The server's own Score timing (velocity query and rules, not the transport): sum s, count.
fn server_score_time() -> (f64, u64) {
    let h = metrics::score_duration_seconds();
    (h.get_sample_sum(), h.get_sample_count())
}

/// `Bearer <key>` of the run's `fds:score` key, sent with every Score.
static AUTHORIZATION: std::sync::OnceLock<tonic::metadata::AsciiMetadataValue> =
    std::sync::OnceLock::new();

async fn run_slot(
    mut client: FraudDetectionClient<Channel>,
    next: Arc<AtomicU64>,
    plan: Plan,
    start: Instant,
) -> anyhow::Result<Tally> {
    let mut tally = Tally::new()?;
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= plan.count || plan.limit.is_some_and(|limit| start.elapsed() >= limit) {
            break;
        }
        let due = match plan.rate {
            Some(rate) => {
                let due = start + Duration::from_secs_f64(i as f64 / rate);
                if due > Instant::now() {
                    tokio::time::sleep_until(due.into()).await;
                }
                due
            }
            None => Instant::now(),
        };
        let mut request = tonic::Request::new(score_request(plan.first + i));
        request.set_timeout(CALL_TIMEOUT);
        if let Some(authorization) = AUTHORIZATION.get() {
            request
                .metadata_mut()
                .insert("authorization", authorization.clone());
        }
        let sent = Instant::now();
        let answer = client.score(request).await;
        let done = Instant::now();
        tally.latency.saturating_record(micros(done - sent).max(1));
        tally
            .lag
            .saturating_record(micros(sent.saturating_duration_since(due)).max(1));
        tally.last_done = Some(done);
        match answer {
            Ok(response) => {
                let decision = usize::try_from(response.get_ref().decision).unwrap_or(0);
                tally.decisions[decision.min(3)] += 1;
            }
            Err(status) => {
                tally.errors += 1;
                tally
                    .first_error
                    .get_or_insert_with(|| format!("{:?}: {}", status.code(), status.message()));
            }
        }
    }
    Ok(tally)
}

/// Request number `n`: a deterministic mix of customers and of the rules they trip.
fn score_request(n: u64) -> ScoreRequest {
    let h = splitmix64(n);
    let pick = h >> 8;
    let regular = HOT_CUSTOMERS + pick % (CUSTOMERS - HOT_CUSTOMERS);
    let plain_amount = 10_000 + (pick % 30) as i64 * 10_000;
    // (customer, amount, billing country, account age in days)
    let (customer, amount, billing, account_days) = match h % 100 {
        // Velocity: every hot customer is far over the hourly limits → BLOCK.
        0..=1 => (Some(pick % HOT_CUSTOMERS), plain_amount, "KR", 400),
        // amount.review (→ APPROVE with 20), amount.high (→ REVIEW).
        2..=5 => (Some(regular), 1_500_000, "KR", 400),
        6 => (Some(regular), 6_000_000, "KR", 400),
        // country.mismatch.
        7..=9 => (Some(regular), plain_amount, "US", 400),
        // account.new_large_order, with amount.review: REVIEW.
        10..=11 => (Some(regular), 1_200_000, "KR", 1),
        // A first order: no history at all.
        12..=21 => (None, plain_amount, "KR", 0),
        _ => (Some(regular), plain_amount, "KR", 400),
    };
    let (customer_id, client_ip, card) = match customer {
        Some(k) => (customer_name(k), customer_ip(k), format!("bench-fp-{k}")),
        None => (
            format!("bench-new-{n}"),
            format!("172.16.{}.{}", (n >> 8) % 256, n % 256),
            format!("bench-new-fp-{n}"),
        ),
    };
    let created = 1_750_000_000 - account_days * 86_400;
    let account_created_at = if account_days == 1 {
        // Relative to now, so the new-account rule keeps firing whenever this runs.
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(created, |now| now.as_secs() as i64 - 86_400)
    } else {
        created
    };
    ScoreRequest {
        order_id: uuid::Uuid::new_v4().to_string(),
        email: format!("{customer_id}@example.com"),
        customer_id,
        client_ip,
        amount,
        currency: "KRW".into(),
        items: vec![Item {
            sku: format!("SKU-{}", pick % 500),
            name: "벤치마크 상품".into(),
            quantity: 1,
            unit_price: amount,
        }],
        shipping_country: "KR".into(),
        billing_country: billing.into(),
        card_fingerprint: card,
        payment_token: "tok_bench".into(),
        account_created_at: Some(prost_types::Timestamp {
            seconds: account_created_at,
            nanos: 0,
        }),
    }
}

fn customer_name(k: u64) -> String {
    format!("bench-c-{k}")
}

/// Each seeded customer's own address (the seeding SQL builds the same string).
fn customer_ip(k: u64) -> String {
    format!("10.{}.{}.{}", (k >> 16) % 256, (k >> 8) % 256, k % 256)
}

/// A well-mixed 64-bit hash of `n` (SplitMix64's finaliser).
fn splitmix64(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Writes the order history the velocity query counts; returns how many orders.
async fn seed_orders(pool: &PgPool) -> anyhow::Result<u64> {
    // Regular customers: a few orders each, spread over the last 24 h. Hot customers:
    // HOT_ORDERS_EACH orders within the last hour.
    let inserted = sqlx::query(
        "INSERT INTO orders (id, customer_id, customer_email, customer_name, currency, total, \
                             shipping_address, billing_country, payment, client_ip, status, fds, \
                             tasks, created_at) \
         SELECT gen_random_uuid(), 'bench-c-' || k, 'bench-c-' || k || '@example.com', 'Bench', \
                'KRW', 50000, '{}', 'KR', \
                jsonb_build_object('method', 'card', 'card_fingerprint', 'bench-fp-' || k), \
                '10.' || (k >> 16) % 256 || '.' || (k >> 8) % 256 || '.' || k % 256, \
                'accepted', '{}', '{}', now() - make_interval(mins => minutes::int) \
         FROM ( \
           SELECT $1 + g % ($2 - $1) AS k, (g * 37) % 1440 AS minutes \
             FROM generate_series(0, $3 - 1) AS g \
           UNION ALL \
           SELECT g % $1, g % 55 FROM generate_series(0, $1 * $4 - 1) AS g \
         ) AS seed",
    )
    .bind(HOT_CUSTOMERS as i64)
    .bind(CUSTOMERS as i64)
    .bind(REGULAR_ORDERS as i64)
    .bind(HOT_ORDERS_EACH as i64)
    .execute(pool)
    .await
    .context("seed orders")?
    .rows_affected();
    sqlx::query("ANALYZE orders").execute(pool).await?;
    Ok(inserted)
}

async fn count_recorded(pool: &PgPool) -> anyhow::Result<i64> {
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM fds_results")
        .fetch_one(pool)
        .await?;
    Ok(n)
}

struct PassReport {
    tally: Tally,
    elapsed: Duration,
    cpu: CpuUsage,
    open_loop: bool,
    /// Mean time the server spent in Score itself (velocity lookup + rules).
    server_score_mean: Duration,
    /// Calls scored without velocity because the query failed or was over its budget.
    velocity_skipped: u64,
}

impl PassReport {
    fn ok(&self) -> u64 {
        self.tally.latency.len() - self.tally.errors
    }

    fn calls(&self) -> u64 {
        self.tally.latency.len()
    }

    fn throughput(&self) -> f64 {
        self.calls() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn error_ratio(&self) -> f64 {
        self.tally.errors as f64 / self.calls().max(1) as f64
    }

    fn p99(&self) -> Duration {
        Duration::from_micros(self.tally.latency.value_at_quantile(0.99))
    }

    fn print(&self, title: &str) {
        let ms = |us: u64| us as f64 / 1000.0;
        let latency = &self.tally.latency;
        let [_, approve, review, block] = self.tally.decisions;
        println!("-- {title} --");
        println!(
            "requests {}  errors {} ({:.2}%)  elapsed {:.2} s  throughput {:.0} req/s",
            self.calls(),
            self.tally.errors,
            self.error_ratio() * 100.0,
            self.elapsed.as_secs_f64(),
            self.throughput(),
        );
        if let Some(error) = &self.tally.first_error {
            println!("first error: {error}");
        }
        println!(
            "latency ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  (mean {:.3})",
            ms(latency.value_at_quantile(0.50)),
            ms(latency.value_at_quantile(0.90)),
            ms(latency.value_at_quantile(0.99)),
            ms(latency.value_at_quantile(0.999)),
            ms(latency.max()),
            latency.mean() / 1000.0,
        );
        if self.open_loop {
            // Lag includes the timer's 1 ms granularity; large values mean every slot was busy
            // when calls fell due, i.e. the concurrency could not carry the rate.
            println!(
                "schedule lag ms (due → sent): p50 {:.3}  p99 {:.3}  max {:.3}",
                ms(self.tally.lag.value_at_quantile(0.50)),
                ms(self.tally.lag.value_at_quantile(0.99)),
                ms(self.tally.lag.max()),
            );
        }
        println!(
            "decisions: APPROVE {approve}  REVIEW {review}  BLOCK {block}; server-side Score \
             mean {:.3} ms (velocity lookup + rules); scored without velocity: {}",
            self.server_score_mean.as_secs_f64() * 1000.0,
            self.velocity_skipped,
        );
        self.cpu.print(self.calls());
        println!();
    }
}

fn print_verdict(config: &Config, open: &PassReport, closed: &PassReport) -> anyhow::Result<bool> {
    let held_rate = open.throughput() >= config.rate * RATE_TOLERANCE;
    let at_target_rate = config.rate >= TARGET_RATE;
    let met = at_target_rate && held_rate && open.p99() < TARGET_P99;
    println!("== summary ==");
    println!(
        "open loop:   {:.0} req/s, p99 {:.3} ms, errors {}",
        open.throughput(),
        open.p99().as_secs_f64() * 1000.0,
        open.tally.errors
    );
    println!(
        "closed loop: {:.0} req/s, p99 {:.3} ms, errors {}",
        closed.throughput(),
        closed.p99().as_secs_f64() * 1000.0,
        closed.tally.errors
    );
    let why = if !at_target_rate {
        format!("offered only {} req/s", config.rate)
    } else if !held_rate {
        format!("achieved {:.0} req/s", open.throughput())
    } else {
        format!("p99 {:.3} ms", open.p99().as_secs_f64() * 1000.0)
    };
    println!(
        "target p99 < {} ms at {TARGET_RATE} req/s: {} ({why})",
        TARGET_P99.as_millis(),
        if met { "MET" } else { "NOT MET" },
    );
    let failed = [open, closed]
        .into_iter()
        .any(|pass| pass.error_ratio() > MAX_ERROR_RATIO);
    if failed {
        println!(
            "run FAILED: more than {}% of calls in error",
            MAX_ERROR_RATIO * 100.0
        );
    }
    Ok(!failed)
}

/// CPU time consumed so far, in /proc ticks.
#[derive(Default)]
struct CpuTicks {
    server: u64,
    client: u64,
    process: u64,
    postgres: u64,
    /// Every other process: pid → (name, ticks).
    others: HashMap<u32, (String, u64)>,
    machine_busy: u64,
    /// Time the hypervisor gave this machine's cores to someone else.
    steal: u64,
    machine_total: u64,
}

/// Cores kept busy during a pass, by whom.
struct CpuUsage {
    ticks: CpuTicks,
    /// The other processes that used the most CPU during the pass: (name, ticks).
    busiest_others: Vec<(String, u64)>,
}

impl CpuTicks {
    fn now() -> CpuTicks {
        let mut ticks = CpuTicks::default();
        if let Ok(threads) = std::fs::read_dir("/proc/self/task") {
            for thread in threads.flatten() {
                if let Some((name, used)) = read_stat(&thread.path().join("stat")) {
                    if name.starts_with(SERVER_THREADS) {
                        ticks.server += used;
                    } else if name.starts_with(CLIENT_THREADS) {
                        ticks.client += used;
                    }
                }
            }
        }
        ticks.process = read_stat("/proc/self/stat".as_ref()).map_or(0, |(_, used)| used);
        let me = std::process::id();
        if let Ok(processes) = std::fs::read_dir("/proc") {
            for process in processes.flatten() {
                let Some(pid) = process
                    .file_name()
                    .to_str()
                    .and_then(|n| n.parse::<u32>().ok())
                else {
                    continue;
                };
                if pid == me {
                    continue;
                }
                if let Some((name, used)) = read_stat(&process.path().join("stat")) {
                    if name == "postgres" {
                        ticks.postgres += used;
                    } else {
                        ticks.others.insert(pid, (name, used));
                    }
                }
            }
        }
        if let Some(machine) = machine_ticks() {
            (ticks.machine_busy, ticks.steal, ticks.machine_total) = machine;
        }
        ticks
    }

    fn since(self, before: &CpuTicks) -> CpuUsage {
        // By name, so many short-lived processes of one kind (rustc, cc) add up.
        let mut by_name: HashMap<String, u64> = HashMap::new();
        for (pid, (name, used)) in &self.others {
            let earlier = before.others.get(pid).map_or(0, |(_, used)| *used);
            *by_name.entry(name.clone()).or_default() += used.saturating_sub(earlier);
        }
        let mut busiest_others: Vec<(String, u64)> =
            by_name.into_iter().filter(|(_, used)| *used > 0).collect();
        busiest_others.sort_by_key(|(_, used)| std::cmp::Reverse(*used));
        busiest_others.truncate(3);
        CpuUsage {
            ticks: CpuTicks {
                server: self.server.saturating_sub(before.server),
                client: self.client.saturating_sub(before.client),
                process: self.process.saturating_sub(before.process),
                postgres: self.postgres.saturating_sub(before.postgres),
                others: HashMap::new(),
                machine_busy: self.machine_busy.saturating_sub(before.machine_busy),
                steal: self.steal.saturating_sub(before.steal),
                machine_total: self.machine_total.saturating_sub(before.machine_total),
            },
            busiest_others,
        }
    }
}

impl CpuUsage {
    /// Cores busy per party (machine-wide ticks count every core) and CPU time per call.
    fn print(&self, calls: u64) {
        let t = &self.ticks;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        // The machine's ticks over all cores: wall time = total / cores.
        let wall = t.machine_total as f64 / cores / TICKS_PER_SECOND;
        if wall <= 0.0 {
            return;
        }
        let share = |ticks: u64| ticks as f64 / TICKS_PER_SECOND / wall;
        let per_call = |ticks: u64| ticks as f64 / TICKS_PER_SECOND * 1e6 / calls.max(1) as f64;
        let rest_of_process = t.process.saturating_sub(t.server + t.client);
        let elsewhere = t
            .machine_busy
            .saturating_sub(t.process + t.postgres + t.steal);
        println!(
            "CPU (cores busy of {cores}): server {:.2}  load generator {:.2}  PostgreSQL {:.2}  \
             rest of this process {:.2}  other processes {:.2}  stolen by the hypervisor {:.2}  \
             idle {:.2}",
            share(t.server),
            share(t.client),
            share(t.postgres),
            share(rest_of_process),
            share(elsewhere),
            share(t.steal),
            (cores - share(t.machine_busy)).max(0.0),
        );
        println!(
            "CPU per call µs: server {:.0}  load generator {:.0}  PostgreSQL {:.0}",
            per_call(t.server),
            per_call(t.client),
            per_call(t.postgres),
        );
        // Other engineers' builds and tests share these cores: say so, since the figures then
        // understate what the service can do.
        if share(elsewhere + t.steal) > 0.25 {
            // Processes that started and ended within the pass (a build's rustc) are in the
            // machine's total but never seen by name.
            let names: Vec<String> = self
                .busiest_others
                .iter()
                .filter(|(_, used)| share(*used) >= 0.05)
                .map(|(name, used)| format!("{name} {:.2}", share(*used)))
                .collect();
            println!(
                "WARNING: {:.2} cores went to other work during this pass (busiest: {}); the \
                 figures are pessimistic",
                share(elsewhere + t.steal),
                if names.is_empty() {
                    "short-lived processes, e.g. another build or test run".to_owned()
                } else {
                    names.join(", ")
                },
            );
        }
    }
}

/// `(comm, utime + stime)` of a /proc `stat` file.
fn read_stat(path: &std::path::Path) -> Option<(String, u64)> {
    let stat = std::fs::read_to_string(path).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?.to_owned();
    // After "pid (comm) ": state is field 3, utime field 14, stime field 15.
    let fields: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((name, utime + stime))
}

/// `(busy, steal, total)` ticks of all cores from /proc/stat (idle and iowait are not busy;
/// steal is counted in busy).
fn machine_ticks() -> Option<(u64, u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|v| v.parse().ok())
        .collect();
    let at = |i: usize| values.get(i).copied().unwrap_or(0);
    let total: u64 = values.iter().sum();
    Some((total.saturating_sub(at(3) + at(4)), at(7), total))
}
