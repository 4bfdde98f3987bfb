//! `shopfds-chaos`: see the library's documentation and `--help`. Exits 0 when the ledger is
//! clean, 1 on any violation, 2 when the run itself could not be carried out.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let options = match shopfds_chaos::Options::parse(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(e) => {
            eprintln!("{e:#}");
            return ExitCode::from(2);
        }
    };
    match shopfds_chaos::run(&options).await {
        Ok(outcome) => {
            print!("{}", outcome.report);
            if let Some(logs) = outcome.logs {
                println!("logs: {}", logs.display());
            }
            if outcome.report.violations().is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("shopfds-chaos: the run failed: {e:#}");
            ExitCode::from(2)
        }
    }
}
