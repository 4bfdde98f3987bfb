//! `shopfds-bench` (`make bench`): our worker runtime side by side with stock Celery and the
//! bare broker, in one run, on the local RabbitMQ, with the same settings for every contender:
//! a vhost of the run's own, durable queues, persistent messages published with confirms (the
//! same no-op task message for all), acks after the task, the same prefetch per consuming
//! process, results ignored.
//!
//! The contenders, each draining a pre-filled queue of `n` no-op tasks:
//! - **floor**: the fastest bare lapin consumer ([`floor`]), in this process;
//! - **ours**: the real worker runtime in a process of its own ([`ours`], `shopfds-bench-worker`);
//! - **Celery prefork -c2** and **Celery threads -c8**: stock Celery from the virtualenv of
//!   `interop/python` (`bench_celery.py`).
//!
//! The workers in processes of their own are measured the same way ([`external`]): drain time
//! from the first task to the last (their start is not counted), CPU per task of the whole
//! process tree, resident memory idle and at its peak. Each figure is the median of the runs
//! (contenders take turns within a run, so load from elsewhere hits them alike), with the
//! minimum and maximum; [`report`] prints one table with the ratios ours/Celery and ours/floor
//! and writes it, with the machine and the versions, to `bench/RESULTS.md`.
//!
//! `--tiny` runs every contender once on a few hundred tasks: what `make test` runs
//! (tests/tiny) so the harness cannot rot; its figures mean nothing.

pub mod env;
pub mod external;
pub mod floor;
pub mod ours;
pub mod proc_stat;
pub mod report;
pub mod tally;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;

use crate::env::Env;
use crate::floor::FloorAck;
use crate::ours::Results;

/// How one harness run is done.
#[derive(Debug, Clone)]
pub struct Options {
    pub tiny: bool,
    /// Runs per contender (the median is reported).
    pub runs: usize,
    /// Tasks per drain of the floor and of ours.
    pub messages: usize,
    /// Tasks per drain of the stock Celery workers (slower: fewer make the same ≥ 5 s).
    pub celery_messages: usize,
    /// Our runtime's concurrency; the prefetch of every contender is concurrency × multiplier.
    pub concurrency: usize,
    pub prefetch_multiplier: u16,
    /// `shopfds-bench-worker`.
    pub worker_exe: PathBuf,
}

impl Options {
    /// The full measurement: 3 runs, N large enough for at least 5 s a drain on the 2-core
    /// development machine.
    pub fn full(worker_exe: PathBuf) -> Options {
        Options {
            tiny: false,
            runs: 3,
            messages: 110_000,
            celery_messages: 20_000,
            concurrency: 64,
            prefetch_multiplier: 4,
            worker_exe,
        }
    }

    /// One run of 300 tasks per contender: checks that everything works, measures nothing.
    pub fn tiny(worker_exe: PathBuf) -> Options {
        Options {
            tiny: true,
            runs: 1,
            messages: 300,
            celery_messages: 300,
            ..Options::full(worker_exe)
        }
    }

    pub fn prefetch(&self) -> u16 {
        u16::try_from(
            self.concurrency
                .saturating_mul(usize::from(self.prefetch_multiplier)),
        )
        .unwrap_or(u16::MAX)
    }
}

/// A worker in a process of its own.
#[derive(Debug, Clone)]
pub enum Contender {
    Ours {
        results: Results,
    },
    Celery {
        pool: &'static str,
        concurrency: usize,
        results: Results,
    },
}

impl Contender {
    pub fn name(&self) -> String {
        match self {
            Contender::Ours { .. } => "ours: worker runtime".to_owned(),
            Contender::Celery {
                pool, concurrency, ..
            } => format!("Celery {pool} -c{concurrency}"),
        }
    }
}

/// What kind of row a contender's is, for the ratios.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Floor,
    Ours,
    CeleryPrefork,
    CeleryThreads,
}

/// One drain's figures.
#[derive(Debug, Clone)]
pub struct Drain {
    /// Tasks published.
    pub tasks: usize,
    /// Tasks the contender says it ran (the floor: messages acked).
    pub ran: u64,
    pub took: Duration,
    pub cpu: Duration,
    pub idle_rss: Option<u64>,
    pub peak_rss: Option<u64>,
    /// The published task ids (for checking stored results).
    pub ids: Vec<String>,
}

impl Drain {
    pub fn rate(&self) -> f64 {
        self.tasks as f64 / self.took.as_secs_f64()
    }

    pub fn cpu_per_task_us(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.tasks as f64
    }
}

/// One contender's drains.
#[derive(Debug, Clone)]
pub struct Row {
    pub name: String,
    pub kind: Kind,
    /// What the workers did with results (`ignored`, …).
    pub workload: String,
    pub drains: Vec<Drain>,
}

impl Row {
    /// Whether every drain ran every task it was given.
    pub fn drained_all(&self) -> bool {
        !self.drains.is_empty() && self.drains.iter().all(|d| d.ran == d.tasks as u64)
    }
}

/// Everything one harness run measured.
#[derive(Debug, Clone)]
pub struct Report {
    pub options: Options,
    pub rows: Vec<Row>,
    /// Body bytes and headers of each message.
    pub message_shape: (usize, usize),
}

/// The workers in processes of their own, in the order they take turns.
fn contenders() -> Vec<(Kind, Contender)> {
    vec![
        (
            Kind::Ours,
            Contender::Ours {
                results: Results::Ignored,
            },
        ),
        (
            Kind::CeleryPrefork,
            Contender::Celery {
                pool: "prefork",
                concurrency: 2,
                results: Results::Ignored,
            },
        ),
        (
            Kind::CeleryThreads,
            Contender::Celery {
                pool: "threads",
                concurrency: 8,
                results: Results::Ignored,
            },
        ),
    ]
}

/// Runs every contender `options.runs` times and returns the figures.
pub async fn run(options: Options) -> anyhow::Result<Report> {
    if options.runs == 0 || options.messages == 0 || options.celery_messages == 0 {
        bail!("runs and message counts must be at least 1");
    }
    // Install the virtualenv (first time only) before anything is timed.
    tokio::task::spawn_blocking(shopfds_testkit::python::venv).await??;
    let env = Env::create().await?;
    let result = measure(&env, &options).await;
    env.close().await;
    let rows = result?;
    Ok(Report {
        options,
        rows,
        message_shape: Env::message_shape(),
    })
}

async fn measure(env: &Env, options: &Options) -> anyhow::Result<Vec<Row>> {
    let prefetch = options.prefetch();
    let launch = external::Launch {
        worker_exe: options.worker_exe.clone(),
        prefetch,
        concurrency: options.concurrency,
        redis_url: "redis://127.0.0.1:6379/0".to_owned(),
    };

    // The floor's variant: one drain each, the fastest is measured on (its drain is run 1).
    let mut best: Option<(FloorAck, Drain)> = None;
    for variant in floor::FLOOR_VARIANTS {
        let d = floor_drain(env, options, variant).await?;
        eprintln!(
            "floor {}: {:.0} msgs/s",
            variant.describe(prefetch),
            d.rate()
        );
        if best.as_ref().is_none_or(|(_, b)| d.rate() > b.rate()) {
            best = Some((variant, d));
        }
    }
    let Some((variant, first)) = best else {
        bail!("no floor variant ran");
    };
    let mut floor_row = Row {
        name: format!("floor: {}", variant.describe(prefetch)),
        kind: Kind::Floor,
        workload: "ack only".to_owned(),
        drains: vec![first],
    };
    let mut rows: Vec<(Contender, Row)> = contenders()
        .into_iter()
        .map(|(kind, c)| {
            let row = Row {
                name: c.name(),
                kind,
                workload: "no-op, results ignored".to_owned(),
                drains: Vec::new(),
            };
            (c, row)
        })
        .collect();

    for run in 1..=options.runs {
        if run > 1 {
            let d = floor_drain(env, options, variant).await?;
            eprintln!("run {run}: {}: {:.0} msgs/s", floor_row.name, d.rate());
            floor_row.drains.push(d);
        }
        for (contender, row) in &mut rows {
            let n = match contender {
                Contender::Ours { .. } => options.messages,
                Contender::Celery { .. } => options.celery_messages,
            };
            let d = external::drain(env, &launch, contender, n).await?;
            eprintln!(
                "run {run}: {}: {:.0} tasks/s, {} of {n} ran",
                row.name,
                d.rate(),
                d.ran
            );
            row.drains.push(d);
        }
    }
    let mut all = vec![floor_row];
    all.extend(rows.into_iter().map(|(_, row)| row));
    Ok(all)
}

async fn floor_drain(env: &Env, options: &Options, variant: FloorAck) -> anyhow::Result<Drain> {
    let n = options.messages;
    let ids = env.publish(n).await?;
    env.wait_ready(u32::try_from(n)?, floor::LIMIT).await?;
    let d = floor::drain(&env.broker, env::QUEUE, options.prefetch(), n, variant).await?;
    env.wait_ready(0, floor::LIMIT).await?;
    Ok(Drain {
        tasks: n,
        ran: n as u64,
        took: d.took,
        cpu: d.cpu,
        idle_rss: None,
        peak_rss: None,
        ids,
    })
}
