//! order-api: HTTP API + outbox relay; `order-api keys …` manages API keys.

use std::process::ExitCode;

use order_api::{Application, Settings};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|command| command == "keys") {
        return order_api::keys::main(&args[1..]);
    }
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
