//! order-api: HTTP API + outbox relay.

use std::process::ExitCode;

use order_api::{Application, Settings};

fn main() -> ExitCode {
    shopfds_service::main::<Settings, _>(|settings, shutdown| async move {
        let app = Application::build(settings).await?;
        tracing::info!(
            port = app.port(),
            ops_port = app.ops_port(),
            "order-api listening"
        );
        app.run_until_stopped(shutdown).await
    })
}
