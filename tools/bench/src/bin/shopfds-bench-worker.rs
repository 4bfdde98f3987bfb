//! Our contender in `make bench`: the real worker runtime ([`Worker`]) consuming one queue and
//! running the no-op bench task, in a process of its own so that its CPU time and memory are
//! measured as a stock Celery worker's are. It records how many tasks it ran and when the first
//! and the last ran ([`shopfds_bench::tally`]) and writes that when SIGTERM (or Ctrl-C) has
//! stopped it, after every task was recorded and acked.
//!
//! `shopfds-bench-worker --broker URL --database URL --out FILE [--queue default]
//! [--concurrency 64] [--prefetch-multiplier 4] [--results ignored|postgres|redis:URL]`; started
//! by the harness (`shopfds-bench`), not meant to be run by hand.
#![allow(clippy::expect_used)]

use std::process::ExitCode;

fn main() -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(shopfds_bench::ours::serve(std::env::args().skip(1))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shopfds-bench-worker: {e:#}");
            ExitCode::FAILURE
        }
    }
}
