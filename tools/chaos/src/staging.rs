//! A staging run: orders posted to a running order-api while the operator's `--fault` commands
//! run on the schedule, then the ledger as far as the database (and, with `--broker-url`, the
//! broker) shows it. Mails are not seen here: a confirmation counts as sent when its once-only
//! record (`order-confirmation:<order id>`) exists, so a doubled mail cannot be told.

use std::time::Instant;

use anyhow::Context;

use crate::ledger::{self, Accepted, Orders, Queues};
use crate::load;
use crate::options::Options;
use crate::plan::{self, Fault, Scheduled};
use crate::report::Report;
use crate::settle;

pub async fn run(
    options: &Options,
    run: &str,
    api_url: &str,
    database_url: &str,
    broker_url: Option<&str>,
    commands: &[(String, String)],
) -> anyhow::Result<Report> {
    // From the environment, not a flag: a key on a command line is in every process listing.
    let api_key = std::env::var("CHAOS_API_KEY")
        .ok()
        .filter(|k| !k.trim().is_empty())
        .context("CHAOS_API_KEY: the API key to post orders with (scope admin: the load names each customer's client_ip)")?;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(database_url)
        .await
        .context("--database-url: cannot connect")?;
    let kinds: Vec<Fault> = commands
        .iter()
        .map(|(name, _)| Fault::Command(name.clone()))
        .collect();
    let plan = plan::schedule(
        &kinds,
        options.faults_per_kind,
        options.posting_window(),
        options.seed,
    );
    let started = Instant::now();
    let (posted, (done, failed)) = tokio::join!(
        load::post_orders(
            api_url,
            api_key.trim(),
            run,
            options.orders,
            options.rate,
            options.seed
        ),
        apply(plan, started, commands),
    );
    let accepted = Accepted::of(&posted);
    let prefix = load::customer_prefix(run);
    let settled = settle::wait(&pool, &prefix, &accepted, options.settle).await;
    let orders = ledger::orders(&pool, &prefix, &accepted).await?;
    let queues = match broker_url {
        Some(url) => ledger::queues(url).await?,
        None => Queues::default(),
    };
    pool.close().await;

    let mut report = Report {
        title: format!(
            "shopfds-chaos (staging {api_url}): {} orders at {}/s, seed {}, run {run}",
            options.orders, options.rate, options.seed
        ),
        ..Report::default()
    };
    crate::local::orders_rows(&mut report, &posted, &accepted, &orders);
    let expected = accepted
        .orders
        .keys()
        .filter(|id| orders.rows.get(*id).is_none_or(|(s, _)| s != "blocked"));
    report.check(
        "confirmations never recorded (lost mails)",
        expected
            .filter(|id| !orders.confirmations_recorded.contains(*id))
            .count(),
    );
    task_rows(&mut report, &accepted, &orders, &queues, false);
    if broker_url.is_none() {
        report.note("no --broker-url: dead letters and queue depths not read");
    }
    for (name, _) in commands {
        let n = done.iter().filter(|d| *d == name).count();
        report.figure(format!("fault: command {name}"), n);
    }
    report.check("fault commands that failed", failed.len());
    for f in &failed {
        report.note(format!("fault failed: {f}"));
    }
    report.figure("seconds waited for quiet", settled.as_secs() as usize);
    Ok(report)
}

/// Task states and the broker's queues: the rows both modes print.
/// `own_broker`: the queues are the run's alone, so a message left in one is a violation (on a
/// shared broker it may be someone else's).
pub fn task_rows(
    report: &mut Report,
    accepted: &Accepted,
    orders: &Orders,
    queues: &Queues,
    own_broker: bool,
) {
    report.figure("tasks planned", accepted.task_ids.len());
    report.figure("tasks SUCCESS", orders.in_state("SUCCESS"));
    report.figure("tasks FAILURE", orders.in_state("FAILURE"));
    report.check("tasks not in a final state", orders.non_final(accepted));
    report.figure("dead letters", queues.dead_letters);
    report.check("dead letters without a reason", queues.without_reason);
    let left = usize::try_from(queues.left_in_work_queues).unwrap_or(usize::MAX);
    if own_broker {
        report.check("messages left in work queues", left);
    } else {
        report.figure("messages in the work queues", left);
    }
    for reason in &queues.reasons {
        report.note(format!("dead letter: {reason}"));
    }
}

/// Runs each scheduled command with `sh -c`; returns the names of those that succeeded and the
/// failures.
async fn apply(
    plan: Vec<Scheduled>,
    started: Instant,
    commands: &[(String, String)],
) -> (Vec<String>, Vec<String>) {
    let mut done = Vec::new();
    let mut failed = Vec::new();
    for Scheduled { at, fault } in plan {
        tokio::time::sleep_until((started + at).into()).await;
        let Fault::Command(name) = &fault else {
            continue;
        };
        let Some((_, command)) = commands.iter().find(|(n, _)| n == name) else {
            continue;
        };
        eprintln!("chaos: {:6.1} s  {fault}", started.elapsed().as_secs_f64());
        match tokio::process::Command::new("sh")
            .arg("-c")
            .arg(command)
            .status()
            .await
        {
            Ok(status) if status.success() => done.push(name.clone()),
            Ok(status) => failed.push(format!("{name}: {status}")),
            Err(e) => failed.push(format!("{name}: {e}")),
        }
    }
    (done, failed)
}
