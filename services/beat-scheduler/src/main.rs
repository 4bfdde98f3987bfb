//! beat-scheduler: the periodic-task scheduler (no schedules yet: topology and ops endpoints only).

use beat_scheduler::{Application, Settings};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shopfds_broker::stack::ensure_stack();
    let settings = Settings::from_env()?;
    let _telemetry = shopfds_telemetry::init(&settings.telemetry)?;
    let shutdown = shopfds_telemetry::ops::shutdown_on_signal();
    let app = Application::build(settings).await?;
    tracing::info!(ops_port = app.ops_port(), "beat-scheduler started");
    app.run_until_stopped(shutdown).await
}
