//! A local run: a RabbitMQ node, a fresh database behind a TCP proxy, an SMTP sink and the
//! service fleet, all the harness's own; the orders posted while the planned faults happen,
//! each at its time; a wait for quiet; then the ledger.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use shopfds_testkit::net::TcpProxy;
use shopfds_testkit::partner::PartnerStub;
use shopfds_testkit::pg::TestDatabase;
use shopfds_testkit::rabbit_node::RabbitNode;
use shopfds_testkit::smtp::SmtpSink;
use tokio::sync::Mutex;

use crate::fleet::{Fleet, Health, Wiring};
use crate::ledger::{self, Accepted};
use crate::load::{self, Outcome, Posted};
use crate::options::Options;
use crate::plan::{self, Fault, Scheduled};
use crate::report::Report;
use crate::rng::Rng;
use crate::settle;

/// How long PostgreSQL stays cut.
const POSTGRES_CUT: Duration = Duration::from_secs(5);
/// A doubled mail whose first copy arrived at most `KILL_WINDOW` before an email-worker was
/// SIGKILLed, or at most `KILL_WINDOW_AFTER` after (a message fully sent as the process died is
/// stored a moment later), is counted apart: the process died after the mail server took the
/// message and before its once-only record (the slow server answers within 2 s; 1 s more for
/// the record).
const KILL_WINDOW: Duration = Duration::from_secs(3);
const KILL_WINDOW_AFTER: Duration = Duration::from_secs(1);

/// What the fault runner did.
#[derive(Debug, Default)]
pub struct Applied {
    /// `(fault, seconds since the first order, target)`.
    pub done: Vec<(Fault, f64, String)>,
    pub failed: Vec<String>,
}

pub async fn run(
    options: &Options,
    run: &str,
    bin_dir: &Path,
    log_dir: &Path,
) -> anyhow::Result<Report> {
    eprintln!(
        "chaos: starting a RabbitMQ node, a database, an SMTP sink, a shipping partner and 6 services"
    );
    let mut node = RabbitNode::start().await.context("RabbitMQ node")?;
    let db = TestDatabase::create().await.context("database")?;
    let proxy = TcpProxy::open_stable(([127, 0, 0, 1], 5432).into())
        .await
        .context("PostgreSQL proxy")?;
    let smtp = SmtpSink::start().await.context("SMTP sink")?;
    let partner = PartnerStub::start().await.context("partner stub")?;
    let wiring = Wiring {
        bin_dir: bin_dir.to_path_buf(),
        log_dir: log_dir.to_path_buf(),
        database_url: db.url().replace(":5432/", &format!(":{}/", proxy.port())),
        broker_url: node.url(),
        smtp_url: smtp.url(),
        partner_url: partner.url(),
        // Beside the logs: the invoices stay for a look when the run fails.
        storage_dir: log_dir.join("storage"),
    };
    let (fleet, ports) = Fleet::start(&wiring).await?;
    let fleet = Arc::new(Mutex::new(fleet));
    let api = format!("http://127.0.0.1:{}", ports.http);

    let plan = plan::schedule(
        &Fault::LOCAL,
        options.faults_per_kind,
        options.posting_window(),
        options.seed,
    );
    eprintln!(
        "chaos: run {run}: {} orders at {}/s, {} faults (seed {}); logs in {}",
        options.orders,
        options.rate,
        plan.len(),
        options.seed,
        log_dir.display()
    );
    let watcher = tokio::spawn(watch(Arc::clone(&fleet)));
    let started = Instant::now();
    let started_wall = SystemTime::now();
    let (posted, applied) = tokio::join!(
        load::post_orders(
            &api,
            &ports.api_key,
            run,
            options.orders,
            options.rate,
            options.seed
        ),
        apply(plan, started, &fleet, &mut node, &proxy, options.seed),
    );
    eprintln!(
        "chaos: {} orders posted and {} faults applied in {:.0} s; waiting for quiet",
        posted.len(),
        applied.done.len(),
        started.elapsed().as_secs_f64()
    );

    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&db.url())
        .await
        .context("connecting to the run's database")?;
    let accepted = Accepted::of(&posted);
    let prefix = load::customer_prefix(run);
    let settled = settle::wait(&pool, &prefix, &accepted, options.settle).await;
    watcher.abort();
    let _ = watcher.await;
    let fleet = Arc::try_unwrap(fleet)
        .map_err(|_| anyhow::anyhow!("the fleet is still shared"))?
        .into_inner();
    let health = fleet.stop().await;

    let orders = ledger::orders(&pool, &prefix, &accepted).await?;
    let mails = ledger::mails(smtp.mail_dir(), &accepted)?;
    let queues = ledger::queues(&node.url()).await?;
    pool.close().await;

    let mut report = Report {
        title: format!(
            "shopfds-chaos: {} orders at {}/s, seed {}, run {run}",
            options.orders, options.rate, options.seed
        ),
        ..Report::default()
    };
    orders_rows(&mut report, &posted, &accepted, &orders);
    mail_rows(
        &mut report,
        &accepted,
        &orders,
        &mails,
        &health,
        started_wall,
    );
    crate::staging::task_rows(&mut report, &accepted, &orders, &queues, true);
    health_rows(&mut report, &health);
    fault_rows(&mut report, &applied);
    report.figure("seconds waited for quiet", settled.as_secs() as usize);
    Ok(report)
}

/// Restarts a process that exits on its own (a crash, recorded) while the run goes on.
async fn watch(fleet: Arc<Mutex<Fleet>>) {
    loop {
        if let Err(e) = fleet.lock().await.check() {
            eprintln!("chaos: cannot restart a crashed process: {e:#}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Applies each fault at its time, each on its own: a fault may start while a slow one (a broker
/// restart) is still under way, as faults do in production. Two broker restarts, or two
/// signals to the fleet, still take turns.
async fn apply(
    plan: Vec<Scheduled>,
    started: Instant,
    fleet: &Mutex<Fleet>,
    node: &mut RabbitNode,
    proxy: &TcpProxy,
    seed: u64,
) -> Applied {
    // Which worker of a kind is hit: from the seed too, apart from the schedule's draws.
    let mut rng = Rng::new(seed ^ 0x5eed);
    let node = Mutex::new(node);
    let runs = plan.into_iter().map(|Scheduled { at, fault }| {
        let pick = rng.below(2);
        let node = &node;
        async move {
            tokio::time::sleep_until((started + at).into()).await;
            let offset = started.elapsed().as_secs_f64();
            eprintln!("chaos: {offset:6.1} s  {fault}");
            let outcome = match &fault {
                Fault::Kill(kind) => fleet.lock().await.kill(*kind, pick),
                Fault::Term(kind) => fleet.lock().await.term(*kind, pick).await,
                Fault::BrokerRestart => {
                    let mut node = node.lock().await;
                    restart(&mut node).await.map(|()| "rabbitmq".to_owned())
                }
                Fault::PostgresCut => {
                    proxy.cut().await;
                    tokio::time::sleep(POSTGRES_CUT).await;
                    proxy.resume().await.map(|()| "postgresql".to_owned())
                }
                Fault::Command(_) => Ok(String::new()),
            };
            (fault, offset, outcome)
        }
    });
    let mut applied = Applied::default();
    for (fault, offset, outcome) in futures::future::join_all(runs).await {
        match outcome {
            Ok(target) => applied.done.push((fault, offset, target)),
            Err(e) => applied.failed.push(format!("{fault}: {e:#}")),
        }
    }
    applied
}

async fn restart(node: &mut RabbitNode) -> anyhow::Result<()> {
    node.stop().await?;
    node.start_again().await
}

/// The orders' rows both modes print: posted, accepted, stored whole, relayed.
pub fn orders_rows(
    report: &mut Report,
    posted: &[Posted],
    accepted: &Accepted,
    orders: &ledger::Orders,
) {
    let count = |f: fn(&Outcome) -> bool| posted.iter().filter(|p| f(&p.outcome)).count();
    report.figure("orders posted", posted.len());
    report.figure("orders accepted (201)", accepted.orders.len());
    report.figure(
        "requests retried by the client (5xx, timeouts)",
        posted
            .iter()
            .map(|p| p.attempts.saturating_sub(1) as usize)
            .sum(),
    );
    report.check(
        "orders refused (4xx)",
        count(|o| matches!(o, Outcome::Refused { .. })),
    );
    report.check(
        "orders never answered 2xx",
        count(|o| matches!(o, Outcome::Unanswered { .. })),
    );
    report.check(
        "accepted orders missing in PostgreSQL",
        accepted
            .orders
            .keys()
            .filter(|id| !orders.rows.contains_key(*id))
            .count(),
    );
    report.check(
        "orders stored without a 201",
        orders
            .rows
            .keys()
            .filter(|id| !accepted.orders.contains_key(*id))
            .count(),
    );
    report.check(
        "orders half-written (no item row)",
        orders
            .rows
            .values()
            .filter(|(_, items)| *items != 1)
            .count(),
    );
    report.check(
        "outbox rows never relayed",
        usize::try_from(orders.unsent_outbox).unwrap_or(usize::MAX),
    );
    for p in posted
        .iter()
        .filter(|p| !matches!(p.outcome, Outcome::Accepted { .. }))
        .take(3)
    {
        report.note(format!("order {}: {:?}", p.index, p.outcome));
    }
}

fn mail_rows(
    report: &mut Report,
    accepted: &Accepted,
    orders: &ledger::Orders,
    mails: &ledger::Mails,
    health: &Health,
    started: SystemTime,
) {
    let blocked = |id: &str| orders.rows.get(id).is_some_and(|(s, _)| s == "blocked");
    let expected: Vec<&String> = accepted.orders.keys().filter(|id| !blocked(id)).collect();
    report.figure(
        "orders blocked (no mail, invoice or shipment expected)",
        accepted.orders.len() - expected.len(),
    );
    for (kind, _) in ledger::MAIL_KINDS {
        kind_rows(report, kind, &expected, mails, health, started);
    }
    report.check(
        "mails to a blocked order or no order of the run",
        mails.unmatched
            + accepted
                .orders
                .keys()
                .filter(|id| {
                    blocked(id)
                        && ledger::MAIL_KINDS
                            .iter()
                            .any(|(kind, _)| !mails.of(kind, id).is_empty())
                })
                .count(),
    );
    report.check(
        "orders without their invoice",
        expected
            .iter()
            .filter(|id| !orders.invoiced.contains(id.as_str()))
            .count(),
    );
    report.check(
        "orders without a tracking number",
        expected
            .iter()
            .filter(|id| !orders.shipped.contains(id.as_str()))
            .count(),
    );
}

/// Lost and doubled mails of one kind (confirmation, invoice).
fn kind_rows(
    report: &mut Report,
    kind: &str,
    expected: &[&String],
    mails: &ledger::Mails,
    health: &Health,
    started: SystemTime,
) {
    let copies = |id: &str| mails.of(kind, id).len();
    let doubled: Vec<&String> = expected
        .iter()
        .copied()
        .filter(|id| copies(id) > 1)
        .collect();
    let in_kill_window = |id: &str| {
        let first = mails.of(kind, id).iter().min().copied();
        first.is_some_and(|first| {
            health
                .email_kills
                .iter()
                .any(|kill| match kill.duration_since(first) {
                    Ok(before) => before <= KILL_WINDOW,
                    Err(after) => after.duration() <= KILL_WINDOW_AFTER,
                })
        })
    };
    let in_window = doubled.iter().filter(|id| in_kill_window(id)).count();
    // When each copy arrived, to match a doubled mail with the fault log on stderr.
    for id in doubled.iter().filter(|id| !in_kill_window(id)).take(5) {
        let mut at: Vec<f64> = mails
            .of(kind, id)
            .iter()
            .map(|t| t.duration_since(started).map_or(0.0, |d| d.as_secs_f64()))
            .collect();
        at.sort_by(f64::total_cmp);
        let at: Vec<String> = at.iter().map(|t| format!("{t:.1} s")).collect();
        report.note(format!(
            "doubled {kind}: order {id}, copies at {}",
            at.join(", ")
        ));
    }
    report.figure(
        format!("{kind} mailed exactly once"),
        expected.iter().filter(|id| copies(id) == 1).count(),
    );
    report.check(
        format!("{kind} mails lost (accepted, never mailed)"),
        expected.iter().filter(|id| copies(id) == 0).count(),
    );
    report.check(format!("{kind} mails doubled"), doubled.len() - in_window);
    report.figure(
        format!("{kind} mails doubled in the SIGKILL window"),
        in_window,
    );
}

fn health_rows(report: &mut Report, health: &Health) {
    report.check(
        "crashes (killed by a signal the harness did not send)",
        health.crashes.len(),
    );
    report.figure("exits with an error (restarted)", health.error_exits.len());
    report.check("panics in the services' logs", health.panics.len());
    report.check("unclean exits after SIGTERM", health.unclean_exits.len());
    report.check("hung after SIGTERM (killed)", health.hung.len());
    for line in health
        .crashes
        .iter()
        .chain(&health.error_exits)
        .chain(&health.panics)
        .chain(&health.unclean_exits)
        .chain(&health.hung)
        .take(8)
    {
        report.note(format!("process: {line}"));
    }
}

fn fault_rows(report: &mut Report, applied: &Applied) {
    for kind in &Fault::LOCAL {
        let n = applied.done.iter().filter(|(f, _, _)| f == kind).count();
        report.figure(format!("fault: {kind}"), n);
    }
    report.check("faults that could not be applied", applied.failed.len());
    let log: Vec<String> = applied
        .done
        .iter()
        .map(|(fault, at, target)| format!("{at:.1} s {fault} ({target})"))
        .collect();
    report.note(format!("faults: {}", log.join("; ")));
    for failure in &applied.failed {
        report.note(format!("fault failed: {failure}"));
    }
}
