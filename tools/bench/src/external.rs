//! One drain by a worker in a process of its own (ours or stock Celery), measured the same way
//! for both:
//!
//! 1. start the worker on the empty queue and wait until its consumer is registered;
//! 2. after a second of idling, read its resident memory (idle RSS) and CPU time so far;
//! 3. stop its process group (SIGSTOP), pre-fill the queue with `n` confirmed persistent
//!    messages, and let it go on (SIGCONT): the broker has already pushed the first prefetch to
//!    the stopped consumer, the rest waits in the queue, exactly a pre-filled queue's state,
//!    while the start, imports and connecting stay out of the figures;
//! 4. wait until nothing is ready and nothing unacknowledged, then read the CPU time again (the
//!    drain's CPU) and each process's peak resident memory (VmHWM);
//! 5. stop it with SIGTERM (warm shutdown) and read the [`Tally`] its processes wrote: the
//!    count must be `n`, and the drain's time is from its first task to its last.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use shopfds_testkit::process::ChildGuard;

use crate::env::{Env, QUEUE};
use crate::floor::LIMIT;
use crate::ours::Results;
use crate::proc_stat;
use crate::tally::Tally;
use crate::{Contender, Drain};

/// A worker that has not registered its consumer by then has failed to start.
const START_LIMIT: Duration = Duration::from_secs(90);
/// How long a started worker idles before its idle memory is read.
const SETTLE: Duration = Duration::from_secs(1);
const POLL: Duration = Duration::from_millis(20);

/// The worker's process group, let go on (SIGCONT) when dropped so that a stopped worker can
/// still be terminated by its [`ChildGuard`] (dropped after this).
struct Group {
    pgid: Pid,
}

impl Group {
    fn signal(&self, sig: Signal) -> anyhow::Result<()> {
        killpg(self.pgid, sig).with_context(|| format!("cannot send {sig} to the worker's group"))
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        let _ = killpg(self.pgid, Signal::SIGCONT);
    }
}

/// What the harness needs to start a contender's process.
pub struct Launch {
    /// `shopfds-bench-worker`.
    pub worker_exe: PathBuf,
    /// The prefetch every contender's consuming process gets.
    pub prefetch: u16,
    /// Ours: the runtime's concurrency (prefetch = concurrency × multiplier).
    pub concurrency: usize,
    pub redis_url: String,
}

fn command(
    env: &Env,
    launch: &Launch,
    contender: &Contender,
    out: &std::path::Path,
) -> anyhow::Result<Command> {
    match contender {
        Contender::Ours { results } => {
            let multiplier = usize::from(launch.prefetch) / launch.concurrency.max(1);
            let mut cmd = Command::new(&launch.worker_exe);
            cmd.arg("--broker")
                .arg(env.vhost.amqp_url())
                .arg("--database")
                .arg(env.db.url())
                .arg("--out")
                .arg(out.join("ours.json"))
                .args(["--queue", QUEUE, "--concurrency"])
                .arg(launch.concurrency.to_string())
                .arg("--prefetch-multiplier")
                .arg(multiplier.max(1).to_string())
                .arg("--results")
                .arg(results.arg());
            Ok(cmd)
        }
        Contender::Celery {
            pool,
            concurrency,
            results,
        } => {
            let celery = shopfds_testkit::python::bin("celery")?;
            let multiplier = usize::from(launch.prefetch) / (*concurrency).max(1);
            let mut cmd = Command::new(celery);
            cmd.args([
                "-A",
                "bench_celery",
                "worker",
                "--loglevel=warning",
                "-Q",
                QUEUE,
            ])
            .args(["--pool", pool, "--concurrency"])
            .arg(concurrency.to_string())
            .arg("-n")
            .arg(format!(
                "bench-{}@%h",
                &uuid::Uuid::new_v4().simple().to_string()[..12]
            ))
            .args(["--without-mingle", "--without-gossip"])
            .current_dir(out)
            .env("PYTHONPATH", shopfds_testkit::python::interop_dir())
            .env("PYTHONUNBUFFERED", "1")
            .env("BROKER_URL", env.vhost.amqp_url())
            .env("BENCH_OUT", out)
            .env("BENCH_PREFETCH_MULTIPLIER", multiplier.max(1).to_string());
            match results {
                Results::Ignored => {}
                Results::Redis(url) => {
                    cmd.env("SHOPFDS_RESULT_BACKEND", url);
                }
                Results::Postgres => {
                    cmd.env(
                        "SHOPFDS_RESULT_BACKEND",
                        format!(
                            "db+postgresql+psycopg2://{}",
                            env.db.url().trim_start_matches("postgres://")
                        ),
                    );
                }
            }
            Ok(cmd)
        }
    }
}

/// One drain of `n` tasks by `contender`; see the module docs.
pub async fn drain(
    env: &Env,
    launch: &Launch,
    contender: &Contender,
    n: usize,
) -> anyhow::Result<Drain> {
    let dir = tempfile::Builder::new()
        .prefix("shopfds-bench-")
        .tempdir()?;
    let tallies = dir.path().join("tallies");
    std::fs::create_dir(&tallies)?;
    let mut cmd = command(env, launch, contender, &tallies)?;
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let log = dir.path().join("worker.log");
    // Field order of the locals: `group` is dropped first (SIGCONT), then `child` (SIGTERM).
    let mut child = ChildGuard::spawn_logged(&mut cmd, &log)?;
    let pid = child.pid();
    let group = Group {
        pgid: Pid::from_raw(i32::try_from(pid)?),
    };

    let deadline = Instant::now() + START_LIMIT;
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("{} exited ({status}) before consuming", child.describe());
        }
        if env.unacked_and_consumers().await?.1 > 0 {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "{} did not consume {QUEUE} within {START_LIMIT:?}",
                child.describe()
            );
        }
    }
    tokio::time::sleep(SETTLE).await;
    let idle_rss = proc_stat::tree_rss(pid);
    let cpu = proc_stat::tree_cpu(pid);

    group.signal(Signal::SIGSTOP)?;
    let ids = env.publish(n).await?;
    group.signal(Signal::SIGCONT)?;

    let deadline = Instant::now() + LIMIT;
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("{} exited ({status}) while draining", child.describe());
        }
        if env.ready().await? == 0 {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "{} did not drain {n} tasks within {LIMIT:?}",
                child.describe()
            );
        }
        tokio::time::sleep(POLL).await;
    }
    // What was delivered last is acknowledged within moments; the broker's count says when.
    while env.unacked_and_consumers().await?.0 > 0 {
        if Instant::now() > deadline {
            bail!("{} left tasks unacknowledged", child.describe());
        }
    }
    let cpu = proc_stat::tree_cpu(pid).saturating_sub(cpu);
    let peak_rss = proc_stat::tree_peak_rss(pid);
    drop(group);
    let status = child.terminate(Duration::from_secs(60)).await?;
    if !status.success() {
        bail!("{} exited with {status} on SIGTERM", child.describe());
    }
    let tally = Tally::read_dir(&tallies).with_context(|| child.describe())?;
    Ok(Drain {
        tasks: n,
        ran: tally.count,
        took: Duration::from_secs_f64((tally.last - tally.first).max(1e-6)),
        cpu,
        idle_rss: Some(idle_rss),
        peak_rss: Some(peak_rss),
        ids,
    })
}
