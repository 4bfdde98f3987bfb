//! The worker process of our contender (`shopfds-bench-worker`): the real [`Worker`] runtime
//! (decode, registry, limits, metrics, result backend, ack after the task) with one handler, the
//! no-op bench task, whose only work is counting itself into a [`Tally`].
//!
//! Its settings are what the harness passes on the command line, so every run of every
//! contender gets the same queue, prefetch and result handling without environment variables.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use serde_json::Value;
use shopfds_broker::{
    BrokerSettings, Registry, ResultBackend, TaskOptions, Worker, WorkerSettings,
};
use shopfds_store::{DatabaseSettings, Store};
use tokio_util::sync::CancellationToken;

use crate::tally::Tally;

/// The bench task's name, on the wire and in `interop/python/bench_celery.py`.
pub const NOOP: &str = "bench_noop";

/// Where a contender's results go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Results {
    /// `ignore_result`: nothing is written.
    Ignored,
    /// SUCCESS recorded in PostgreSQL (our batched backend / Celery's database backend).
    Postgres,
    /// SUCCESS recorded in Redis, in Celery's format.
    Redis(String),
}

impl Results {
    /// The `--results` argument.
    pub fn arg(&self) -> String {
        match self {
            Results::Ignored => "ignored".to_owned(),
            Results::Postgres => "postgres".to_owned(),
            Results::Redis(url) => format!("redis:{url}"),
        }
    }

    fn parse(arg: &str) -> anyhow::Result<Results> {
        match arg {
            "ignored" => Ok(Results::Ignored),
            "postgres" => Ok(Results::Postgres),
            _ => match arg.strip_prefix("redis:") {
                Some(url) => Ok(Results::Redis(url.to_owned())),
                None => bail!("--results must be ignored, postgres or redis:URL, not {arg:?}"),
            },
        }
    }
}

/// The command line of `shopfds-bench-worker`.
struct Args {
    broker: String,
    database: String,
    out: PathBuf,
    queue: String,
    concurrency: usize,
    prefetch_multiplier: u16,
    results: Results,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> anyhow::Result<Args> {
    let (mut broker, mut database, mut out) = (None, None, None);
    let mut parsed = Args {
        broker: String::new(),
        database: String::new(),
        out: PathBuf::new(),
        queue: "default".to_owned(),
        concurrency: 64,
        prefetch_multiplier: 4,
        results: Results::Ignored,
    };
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--broker" => broker = Some(value),
            "--database" => database = Some(value),
            "--out" => out = Some(PathBuf::from(value)),
            "--queue" => parsed.queue = value,
            "--concurrency" => {
                parsed.concurrency = value.parse().context("--concurrency: a number")?;
            }
            "--prefetch-multiplier" => {
                parsed.prefetch_multiplier =
                    value.parse().context("--prefetch-multiplier: a number")?;
            }
            "--results" => parsed.results = Results::parse(&value)?,
            _ => bail!("unknown argument {flag}"),
        }
    }
    parsed.broker = broker.context("--broker is required")?;
    parsed.database = database.context("--database is required")?;
    parsed.out = out.context("--out is required")?;
    Ok(parsed)
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Runs the worker until SIGTERM or SIGINT, then writes the tally to `--out`.
pub async fn serve(args: impl Iterator<Item = String>) -> anyhow::Result<()> {
    let args = parse_args(args)?;
    let store = Store::connect(&DatabaseSettings::with_url(&args.database)).await?;
    let backend: Arc<dyn ResultBackend> = match &args.results {
        Results::Ignored | Results::Postgres => shopfds_results::postgres(&store),
        Results::Redis(url) => {
            Arc::new(shopfds_results::RedisBackend::connect(url, Duration::from_secs(3600)).await?)
        }
    };

    let count = Arc::new(AtomicU64::new(0));
    let first = Arc::new(OnceLock::<f64>::new());
    // The last task's end as f64 bits; times only grow, so the latest store wins.
    let last = Arc::new(AtomicU64::new(0));
    let mut registry = Registry::new();
    let options = TaskOptions {
        ignore_result: args.results == Results::Ignored,
        ..TaskOptions::default()
    };
    {
        let (count, first, last) = (count.clone(), first.clone(), last.clone());
        registry.register(NOOP, options, move |_ctx| {
            let t = now();
            first.get_or_init(|| t);
            count.fetch_add(1, Ordering::Relaxed);
            last.fetch_max(t.to_bits(), Ordering::Relaxed);
            async { Ok(Value::Null) }
        });
    }
    let broker = BrokerSettings::with_url(args.broker.clone(), "shopfds-bench-worker");
    let mut settings = WorkerSettings::new("shopfds-bench-worker", &[&args.queue]);
    settings.concurrency = args.concurrency;
    if let Some(queue) = settings.queues.first_mut() {
        queue.prefetch_multiplier = args.prefetch_multiplier;
    }
    let shutdown = CancellationToken::new();
    {
        let shutdown = shutdown.clone();
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            shutdown.cancel();
        });
    }
    Worker::new(broker, settings, registry, backend)
        .run(shutdown)
        .await?;
    store.close().await;

    let count = count.load(Ordering::Relaxed);
    if count > 0 {
        let tally = Tally {
            count,
            first: first.get().copied().unwrap_or(0.0),
            last: f64::from_bits(last.load(Ordering::Relaxed)),
        };
        std::fs::write(&args.out, tally.to_json().to_string())
            .with_context(|| format!("cannot write {}", args.out.display()))?;
    }
    Ok(())
}
