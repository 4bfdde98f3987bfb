//! The operations endpoints every binary serves, workers included: `/healthz` for the liveness
//! probe, `/readyz` for the readiness probe (the named checks a service registers, e.g.
//! `database` and `broker`) and `/metrics` for Prometheus.
//!
//! A probe runs every check on each call, so a check should be cheap: a service reports the
//! state of connections it already holds (the broker's `broker` check reads a watch, no I/O)
//! rather than opening one per probe.
//!
//! Liveness never looks at dependencies: a database outage must take pods out of the Service,
//! not make Kubernetes restart all of them.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::future::BoxFuture;
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use crate::server::HttpServerSettings;

/// A named readiness probe: `Err(reason)` when the dependency is unreachable.
pub type Check = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// Longer than any healthy round trip, shorter than a kubelet probe's default 1 s × retries, so
/// a hung dependency reports "timed out" instead of hanging the probe.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The set of checks `/readyz` runs.
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Vec<(String, Check)>,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.checks.iter().map(|(name, _)| name))
            .finish()
    }
}

impl Readiness {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a check reported under `name` (e.g. `broker`, `database`).
    pub fn with(mut self, name: &str, check: Check) -> Self {
        self.checks.push((name.to_owned(), check));
        self
    }

    /// Runs every check concurrently, each bounded by a 2 s timeout; results in insertion order.
    pub async fn run(&self) -> Vec<(String, Result<(), String>)> {
        futures::future::join_all(self.checks.iter().map(|(name, check)| async move {
            let outcome = match tokio::time::timeout(CHECK_TIMEOUT, check()).await {
                Ok(outcome) => outcome,
                Err(_) => Err(format!("timed out after {}s", CHECK_TIMEOUT.as_secs())),
            };
            (name.clone(), outcome)
        }))
        .await
    }
}

/// `GET /healthz`, `GET /readyz` and `GET /metrics`, to merge into a service's router or serve on
/// a separate port with [`serve`].
pub fn router(readiness: Readiness) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(readiness)
}

/// Serves [`router`] on `listener` until `shutdown` is cancelled, then finishes in-flight
/// requests; with the default limits of [`HttpServerSettings`] (see [`crate::server`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    readiness: Readiness,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve_with(
        listener,
        readiness,
        &HttpServerSettings::default(),
        shutdown,
    )
    .await
}

/// [`serve`] with the given limits.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    readiness: Readiness,
    settings: &HttpServerSettings,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    crate::server::serve(listener, router(readiness), settings, shutdown).await
}

async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(readiness): State<Readiness>) -> Response {
    let results = readiness.run().await;
    let ready = results.iter().all(|(_, outcome)| outcome.is_ok());
    let checks: Map<String, Value> = results
        .into_iter()
        .map(|(name, outcome)| {
            let value = match outcome {
                Ok(()) => "ok".to_owned(),
                Err(reason) => {
                    tracing::warn!(check = %name, %reason, "readiness check failed");
                    reason
                }
            };
            (name, Value::String(value))
        })
        .collect();
    if ready {
        (
            StatusCode::OK,
            Json(json!({ "status": "ready", "checks": checks })),
        )
            .into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "unavailable", "checks": checks })),
        )
            .into_response()
    }
}

async fn metrics() -> Response {
    (
        [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
        crate::metrics::render(),
    )
        .into_response()
}

/// A token cancelled on the first SIGTERM or SIGINT (Ctrl-C): hand it to every server and
/// consumer of the process, so one signal drains them all.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = ctrl_c => tracing::info!("SIGINT received: shutting down"),
                        _ = term.recv() => tracing::info!("SIGTERM received: shutting down"),
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops this process");
                    let _ = ctrl_c.await;
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = ctrl_c.await;
        }
        cancel.cancel();
    });
    token
}

/// Builds a readiness [`Check`] from an async closure.
pub fn check<F, Fut>(f: F) -> Check
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    Arc::new(move || Box::pin(f()))
}
