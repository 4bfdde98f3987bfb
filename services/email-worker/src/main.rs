//! email-worker: consumes `email` and `default`, sends mail through SMTP.

use email_worker::{Application, Settings};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shopfds_broker::stack::ensure_stack();
    let settings = Settings::from_env()?;
    let _telemetry = shopfds_telemetry::init(&settings.telemetry)?;
    let shutdown = shopfds_telemetry::ops::shutdown_on_signal();
    let app = Application::build(settings).await?;
    tracing::info!(ops_port = app.ops_port(), "email-worker started");
    app.run_until_stopped(shutdown).await
}
