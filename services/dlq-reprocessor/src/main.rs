//! dlq-reprocessor: serves the DLQ API beside its ops endpoints; `dlq-reprocessor queues | list |
//! replay | purge` is the same workbench from the command line.

use std::process::ExitCode;

use dlq_reprocessor::{Application, Settings};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args
        .first()
        .is_some_and(|command| dlq_reprocessor::cli::COMMANDS.contains(&command.as_str()))
    {
        return dlq_reprocessor::cli::main(&args);
    }
    shopfds_service::main::<Settings, _>(|settings, shutdown| async move {
        Application::build(settings)
            .await?
            .run_until_stopped(shutdown)
            .await
    })
}
