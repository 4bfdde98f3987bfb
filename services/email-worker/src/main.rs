//! email-worker: consumes `email` and `default`, sends mail through SMTP.

use std::process::ExitCode;

use email_worker::{Application, Settings};

fn main() -> ExitCode {
    shopfds_service::main::<Settings, _>(|settings, shutdown| async move {
        Application::build(settings)
            .await?
            .run_until_stopped(shutdown)
            .await
    })
}
