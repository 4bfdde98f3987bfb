//! report-worker: consumes queues `reports` and `maintenance` (sales reports, log archiving).

use std::process::ExitCode;

use report_worker::{Application, Settings};

fn main() -> ExitCode {
    shopfds_service::main::<Settings, _>(|settings, shutdown| async move {
        Application::build(settings)
            .await?
            .run_until_stopped(shutdown)
            .await
    })
}
