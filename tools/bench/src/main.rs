//! `make bench`: see the crate docs (`src/lib.rs`) and the README, "Other make targets", `make bench`.
//!
//! `shopfds-bench [--tiny] [--runs N] [--messages N] [--celery-messages N] [--out FILE]`:
//! prints the table and writes it with the machine and versions to `--out` (default
//! `bench/RESULTS.md` of the workspace; in `--tiny` mode nothing is written without `--out`).
#![allow(clippy::expect_used)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use shopfds_bench::{Options, report};

fn main() -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shopfds-bench failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find the harness's own executable")?;
    let worker_exe = exe.with_file_name("shopfds-bench-worker");
    let mut args = std::env::args().skip(1);
    let mut options = Options::full(worker_exe);
    let mut out: Option<PathBuf> = None;
    let mut overrides = Vec::new();
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--tiny" => options = Options::tiny(options.worker_exe.clone()),
            "--runs" | "--messages" | "--celery-messages" => {
                let value: usize = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .with_context(|| format!("{flag} needs a number"))?;
                overrides.push((flag, value));
            }
            "--out" => out = Some(args.next().context("--out needs a path")?.into()),
            _ => bail!("unknown argument {flag}; see tools/bench/src/main.rs"),
        }
    }
    for (flag, value) in overrides {
        match flag.as_str() {
            "--runs" => options.runs = value,
            "--messages" => options.messages = value,
            _ => options.celery_messages = value,
        }
    }
    let out = out.or_else(|| {
        (!options.tiny).then(|| shopfds_testkit::workspace_root().join("bench/RESULTS.md"))
    });

    let report = shopfds_bench::run(options).await?;
    println!("\n{}", report::table(&report));
    println!("{}", report::ratios(&report));
    let short: Vec<String> = report
        .rows
        .iter()
        .flat_map(|r| r.drains.iter().map(move |d| (r, d)))
        .filter(|(_, d)| d.took.as_secs_f64() < 5.0)
        .map(|(r, d)| format!("{} ({:.1} s)", r.name, d.took.as_secs_f64()))
        .collect();
    if !report.options.tiny && !short.is_empty() {
        println!("note: drains shorter than 5 s: {}", short.join(", "));
    }
    if let Some(out) = out {
        if let Some(dir) = out.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&out, report::results_md(&report))
            .with_context(|| format!("cannot write {}", out.display()))?;
        println!("written to {}", out.display());
    }
    if let Some(row) = report.rows.iter().find(|r| !r.drained_all()) {
        bail!("{} did not run every task it was given", row.name);
    }
    Ok(())
}
