//! The small, seeded run of the fault harness that `make test` carries: 200 orders at 5 per
//! second through every fault once (an email-worker and an fds-worker SIGKILLed, each kind
//! SIGTERMed with a 2 s grace, the RabbitMQ node restarted, PostgreSQL cut for 5 s), then the
//! ledger: nothing lost, nothing doubled, nothing crashed. `make chaos` is the 1,000-order run.
//!
//! The service binaries are built first (`shopfds_testkit::binaries::build`; nothing to do when
//! they are fresh), so the run always exercises the code of this checkout.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use shopfds_chaos::Options;
use shopfds_chaos::plan::Fault;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_orders_through_every_fault_lose_none_double_none_and_crash_nothing() {
    let bin_dir = shopfds_testkit::binaries::build().expect("the services build");
    let mut options = Options::local(200, bin_dir);
    options.rate = 5.0;
    options.seed = 9;
    options.faults_per_kind = 1;
    options.settle = Duration::from_secs(45);
    let outcome = shopfds_chaos::run(&options)
        .await
        .expect("the run is carried out");
    let report = &outcome.report;
    let logs = outcome
        .logs
        .as_ref()
        .map(|l| format!("logs: {}", l.display()))
        .unwrap_or_default();
    println!("{report}{logs}");
    for fault in &Fault::LOCAL {
        assert_eq!(
            report.value(&format!("fault: {fault}")),
            Some(1),
            "{fault} was not applied once:\n{report}"
        );
    }
    assert_eq!(report.value("orders posted"), Some(200), "{report}");
    let violations: Vec<String> = report
        .violations()
        .iter()
        .map(|r| format!("{}: {}", r.label, r.value))
        .collect();
    assert!(
        violations.is_empty(),
        "violations: {violations:?}\n{report}{logs}"
    );
}
