//! beat-scheduler: the periodic-task scheduler; `beat-scheduler list` and
//! `beat-scheduler schedules …` manage the schedules.

use std::process::ExitCode;

use beat_scheduler::{Application, Settings};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args
        .first()
        .is_some_and(|command| command == "list" || command == "schedules")
    {
        return beat_scheduler::cli::main(&args);
    }
    shopfds_service::main::<Settings, _>(|settings, shutdown| async move {
        Application::build(settings)
            .await?
            .run_until_stopped(shutdown)
            .await
    })
}
