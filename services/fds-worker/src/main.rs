//! fds-worker: the fds.v1.FraudDetection gRPC score server and the consumer of queue `fds`.

use fds_worker::{Application, Settings};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shopfds_broker::stack::ensure_stack();
    let settings = Settings::from_env()?;
    let _telemetry = shopfds_telemetry::init(&settings.telemetry)?;
    let shutdown = shopfds_telemetry::ops::shutdown_on_signal();
    let app = Application::build(settings).await?;
    tracing::info!(
        ops_port = app.ops_port(),
        grpc_port = app.grpc_port(),
        "fds-worker started"
    );
    app.run_until_stopped(shutdown).await
}
