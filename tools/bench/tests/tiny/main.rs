//! `make test` runs the harness once in `--tiny` mode (a few hundred tasks, one run), so it
//! cannot rot: every contender must have run every task and the table must have its row. No
//! timing is asserted: the figures of a tiny run mean nothing.

use std::path::PathBuf;

use shopfds_bench::{Kind, Options, report};

#[tokio::test(flavor = "multi_thread")]
async fn tiny_mode_drains_every_task_with_every_contender() {
    let worker = PathBuf::from(env!("CARGO_BIN_EXE_shopfds-bench-worker"));
    let report = shopfds_bench::run(Options::tiny(worker))
        .await
        .expect("the tiny bench runs");
    let table = report::table(&report);
    for kind in [
        Kind::Floor,
        Kind::Ours,
        Kind::CeleryPrefork,
        Kind::CeleryThreads,
    ] {
        let row = report
            .rows
            .iter()
            .find(|r| r.kind == kind)
            .unwrap_or_else(|| panic!("no {kind:?} row in {table}"));
        assert_eq!(row.drains.len(), 1, "{} ran once", row.name);
        assert!(row.drained_all(), "{} ran every task:\n{table}", row.name);
        assert!(
            table
                .lines()
                .any(|l| l.starts_with(&format!("| {} |", row.name))),
            "{} has its line in the table:\n{table}",
            row.name
        );
    }
    let md = report::results_md(&report);
    assert!(md.contains("ours / Celery prefork -c2"), "{md}");
}
