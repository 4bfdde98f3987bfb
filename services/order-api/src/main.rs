//! order-api: HTTP API + outbox relay; `order-api keys …` manages API keys.

use order_api::{Application, Settings};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(("keys", rest)) = args.split_first().map(|(c, r)| (c.as_str(), r)) {
        return order_api::keys::run(rest).await;
    }
    shopfds_broker::stack::ensure_stack();
    let settings = Settings::from_env()?;
    let _telemetry = shopfds_telemetry::init(&settings.telemetry)?;
    let shutdown = shopfds_telemetry::ops::shutdown_on_signal();
    let app = Application::build(settings).await?;
    tracing::info!(port = app.port(), "order-api listening");
    app.run_until_stopped(shutdown).await
}
