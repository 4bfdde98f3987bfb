//! The operations port (`/healthz`, `/readyz`, `/metrics`) every binary serves on an address of
//! its own, apart from any public port.

use anyhow::Context;
use shopfds_telemetry::ops::Readiness;
use tokio::net::TcpListener;

use crate::{ShellSettings, Supervisor};

/// Binds `OPS_ADDR`; the error names the variable and the address.
pub async fn bind_ops(shell: &ShellSettings) -> anyhow::Result<TcpListener> {
    TcpListener::bind(shell.ops_addr)
        .await
        .with_context(|| format!("OPS_ADDR: cannot listen on {}", shell.ops_addr))
}

/// Serves the operations endpoints on `listener` as the part `ops` of `parts`, with the HTTP
/// limits of `shell`, until the parts stop.
pub fn serve_ops(
    parts: &mut Supervisor,
    listener: TcpListener,
    readiness: Readiness,
    shell: &ShellSettings,
) {
    serve_ops_with(parts, listener, readiness, shell, None);
}

/// [`serve_ops`] with `api`'s routes on the same port.
pub fn serve_ops_with(
    parts: &mut Supervisor,
    listener: TcpListener,
    readiness: Readiness,
    shell: &ShellSettings,
    api: Option<axum::Router>,
) {
    let http = shell.http.clone();
    let token = parts.token();
    let router = match api {
        Some(api) => shopfds_telemetry::ops::router(readiness).merge(api),
        None => shopfds_telemetry::ops::router(readiness),
    };
    parts.spawn("ops", async move {
        shopfds_telemetry::server::serve(listener, router, &http, token).await
    });
}
