//! fds-worker: the fds.v1.FraudDetection gRPC score server and the consumer of queue `fds`.

use std::process::ExitCode;

use fds_worker::{Application, Settings};

fn main() -> ExitCode {
    shopfds_service::main::<Settings, _>(|settings, shutdown| async move {
        let app = Application::build(settings).await?;
        tracing::info!(
            ops_port = app.ops_port(),
            grpc_port = app.grpc_port(),
            "fds-worker started"
        );
        app.run_until_stopped(shutdown).await
    })
}
