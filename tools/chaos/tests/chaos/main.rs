//! The small, seeded run of the fault harness that `make test` carries: 200 orders at 5 per
//! second through every fault once (an email-worker and an fds-worker SIGKILLed, each kind
//! SIGTERMed with a 2 s grace, the RabbitMQ node restarted, PostgreSQL cut for 5 s), then the
//! ledger: nothing lost, nothing doubled, nothing crashed. `make chaos` is the 1,000-order run.
//!
//! The service binaries are built first (`cargo build --workspace --bins` into this test's
//! target directory; nothing to do when they are fresh), so the run always exercises the code
//! of this checkout.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use shopfds_chaos::Options;
use shopfds_chaos::plan::Fault;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_orders_through_every_fault_lose_none_double_none_and_crash_nothing() {
    let bin_dir = build_services();
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

/// Builds the services into the target directory this test runs from and returns the directory
/// holding them (`<target>/debug`).
fn build_services() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // <target>/<profile>/deps/<this test>
    let bin_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap()
        .to_path_buf();
    let target = bin_dir.parent().unwrap();
    let cargo = std::env::var("CARGO")
        .ok()
        .or_else(|| option_env!("CARGO").map(str::to_owned))
        .unwrap_or_else(|| "cargo".to_owned());
    let mut cmd = Command::new(cargo);
    // The whole workspace, as `make build` and `cargo test --workspace` select it: a subset
    // would unify dependency features differently and compile a second copy of them.
    cmd.args(["build", "--workspace", "--bins"])
        .arg("--target-dir")
        .arg(target)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if bin_dir.file_name().is_some_and(|p| p == "release") {
        cmd.arg("--release");
    }
    let status = cmd.status().expect("cargo runs");
    assert!(status.success(), "building the services failed: {status}");
    bin_dir
}
