//! dlq-reprocessor: the dead-letter tool (no operations yet: topology and ops endpoints only).

use std::process::ExitCode;

use dlq_reprocessor::{Application, Settings};

fn main() -> ExitCode {
    shopfds_service::main::<Settings, _>(|settings, shutdown| async move {
        Application::build(settings)
            .await?
            .run_until_stopped(shutdown)
            .await
    })
}
