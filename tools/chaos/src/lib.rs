//! The fault harness behind `make chaos`: orders flow while workers are killed, the broker
//! restarts and PostgreSQL is cut; then the ledger is checked and printed as one table.
//!
//! A local run ([`local`]) owns everything it disturbs: a RabbitMQ node, a fresh database
//! behind a TCP proxy, an SMTP sink, and the real service binaries (order-api once,
//! email-worker and fds-worker twice each). It posts `--orders` orders at `--rate` per second,
//! each from a customer of its own and retried with its `Idempotency-Key` while order-api
//! cannot answer. Meanwhile, on a schedule drawn from `--seed` ([`plan`]), it applies every
//! fault `--faults-per-kind` times, each at its time (they may overlap): SIGKILL an
//! email-worker or fds-worker and start it again; SIGTERM one with a 2 s
//! `WORKER_SHUTDOWN_GRACE_SECS` and start it again; stop and start the RabbitMQ node; cut
//! PostgreSQL for 5 s. It waits until every accepted task
//! is final (or `--settle-secs` pass), stops the services with SIGTERM, and checks
//! ([`ledger`]): every accepted order stored whole, relayed, and mailed exactly once (by the
//! Message-ID `order-confirmation.<order id>`); every task final; every dead letter with its
//! reason; no process that exited on its own, panicked, exited non-zero or hung on SIGTERM.
//! Any violation makes the binary exit 1.
//!
//! A staging run ([`staging`]) posts to a running order-api and reads its database (and broker);
//! its faults are the operator's commands.

use std::path::PathBuf;

use anyhow::Context;

pub mod fleet;
pub mod ledger;
pub mod load;
pub mod local;
pub mod options;
pub mod plan;
pub mod report;
pub mod rng;
pub mod settle;
pub mod staging;

pub use options::{Mode, Options};
pub use report::Report;

/// A finished run: its table, and where the services' logs are (kept when something was
/// violated or `--keep-logs` was given; removed otherwise).
#[derive(Debug)]
pub struct Outcome {
    pub report: Report,
    pub logs: Option<PathBuf>,
}

pub async fn run(options: &Options) -> anyhow::Result<Outcome> {
    let run: String = uuid::Uuid::new_v4()
        .simple()
        .to_string()
        .chars()
        .take(8)
        .collect();
    match &options.mode {
        Mode::Local { bin_dir } => {
            let logs = std::env::temp_dir().join(format!("shopfds-chaos-{run}"));
            std::fs::create_dir_all(&logs)
                .with_context(|| format!("creating {}", logs.display()))?;
            let report = local::run(options, &run, bin_dir, &logs).await;
            let keep =
                options.keep_logs || report.as_ref().map_or(true, |r| !r.violations().is_empty());
            if !keep {
                let _ = std::fs::remove_dir_all(&logs);
            }
            Ok(Outcome {
                report: report?,
                logs: keep.then_some(logs),
            })
        }
        Mode::Staging {
            api_url,
            database_url,
            broker_url,
            faults,
        } => Ok(Outcome {
            report: staging::run(
                options,
                &run,
                api_url,
                database_url,
                broker_url.as_deref(),
                faults,
            )
            .await?,
            logs: None,
        }),
    }
}
