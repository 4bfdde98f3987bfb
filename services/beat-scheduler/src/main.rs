//! beat-scheduler: the periodic-task scheduler (no schedules yet: topology and ops endpoints only).

use std::process::ExitCode;

use beat_scheduler::{Application, Settings};

fn main() -> ExitCode {
    shopfds_service::main::<Settings, _>(|settings, shutdown| async move {
        Application::build(settings)
            .await?
            .run_until_stopped(shutdown)
            .await
    })
}
