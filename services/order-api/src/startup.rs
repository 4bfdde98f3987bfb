//! Builds the HTTP application and runs it with the outbox relay and housekeeping until shutdown.

use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post};
use ipnet::IpNet;
use shopfds_auth::Authenticator;
use shopfds_broker::ResultBackend;
use shopfds_service::Supervisor;
use shopfds_store::Store;
use shopfds_telemetry::ops;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::timeout::TimeoutLayer;

use crate::config::Settings;
use crate::domain::AmountLimits;
use crate::fds::FdsClient;
use crate::{auth, housekeeping, routes};

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub fds: FdsClient,
    /// Where `GET /v1/tasks/{id}` reads: the backend the workers write (`RESULT_BACKEND`).
    pub results: Arc<dyn ResultBackend>,
    /// `ORDER_MAX_LINE_AMOUNT`, `ORDER_MAX_TOTAL`.
    pub limits: AmountLimits,
    /// `TRUSTED_PROXIES`: peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Arc<[IpNet]>,
    /// Checks the API key of every `/v1` request ([`auth::authorize`]).
    pub auth: Authenticator,
    /// Invoices and sales reports (`STORAGE_DIR` / `STORAGE_URL`); `None`: their downloads
    /// answer 503.
    pub storage: Option<shopfds_documents::Storage>,
}

pub struct Application {
    listener: TcpListener,
    ops_listener: TcpListener,
    router: Router,
    settings: Settings,
    store: Store,
}

impl Application {
    /// Connects the database (creating and migrating it if needed) and binds `HTTP_ADDR` and
    /// `OPS_ADDR` (port 0 picks a free port, for tests). The broker is not needed to start: orders are
    /// accepted while it is down and their tasks wait in the outbox.
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        let store = Store::connect(&settings.database).await?;
        let listener = TcpListener::bind(settings.http_addr)
            .await
            .with_context(|| format!("HTTP_ADDR: cannot listen on {}", settings.http_addr))?;
        let ops_listener = shopfds_service::bind_ops(&settings.shell).await?;
        let fds = FdsClient::new(settings.fds.clone())?
            .with_api_key(settings.security.fds_api_key.as_ref())?;
        let auth = Authenticator::new(&settings.security.auth, Some(store.api_keys()));
        let results = settings.results.reader(&store, &settings.broker).await?;
        let storage = settings.storage.open().map_err(anyhow::Error::msg)?;
        let router = router(
            AppState {
                store: store.clone(),
                fds,
                results,
                limits: settings.security.limits,
                trusted_proxies: settings.security.trusted_proxies.clone().into(),
                auth,
                storage,
            },
            &settings,
        );
        Ok(Application {
            listener,
            ops_listener,
            router,
            settings,
            store,
        })
    }

    /// The API's port.
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// The port of `/healthz`, `/readyz` and `/metrics`.
    pub fn ops_port(&self) -> u16 {
        self.ops_listener
            .local_addr()
            .map(|a| a.port())
            .unwrap_or(0)
    }

    /// Serves until `shutdown` fires, then finishes in-flight requests (within
    /// `SHUTDOWN_GRACE_SECS`) and stops the relay and housekeeping. Each part runs on the supervisor: one that
    /// fails stops the others.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let s = self.settings;
        let mut parts = Supervisor::new(shutdown);
        let token = parts.token();
        // The database only: orders are taken while the broker is away (their tasks wait in the
        // outbox), so a broker outage must not take order-api out of its Service.
        let readiness =
            ops::Readiness::new().with("database", shopfds_results::database_check(&self.store));
        shopfds_service::serve_ops(&mut parts, self.ops_listener, readiness, &s.shell);
        if s.relay.enabled {
            parts.spawn(
                "outbox relay",
                shopfds_service::relay::run(
                    self.store.clone(),
                    s.broker.clone(),
                    s.relay.clone(),
                    token.clone(),
                ),
            );
        }
        parts.spawn(
            "housekeeping",
            housekeeping::run(self.store.clone(), s.housekeeping.clone(), token.clone()),
        );
        // Every replica, relaying or not, reports the same table (the alert takes the max).
        parts.spawn(
            "outbox gauge",
            shopfds_service::relay::report_pending(
                self.store.clone(),
                s.relay.poll_interval,
                token.clone(),
            ),
        );
        let http = s.shell.http.clone();
        parts.spawn("api", async move {
            shopfds_telemetry::server::serve(self.listener, self.router, &http, token).await
        });
        let outcome = parts.join(s.shutdown_grace).await;
        self.store.close().await;
        outcome
    }
}

fn router(state: AppState, settings: &Settings) -> Router {
    let api = Router::new()
        .route("/v1/orders", post(routes::orders::create))
        .route("/v1/orders/{id}", get(routes::orders::get))
        .route("/v1/orders/{id}/invoice", get(routes::orders::invoice))
        .route("/v1/tasks/{id}", get(routes::tasks::get))
        .route("/v1/reports/sales", post(routes::reports::create))
        .route("/v1/reports/sales/{task_id}", get(routes::reports::status))
        .route("/v1/reports/{task_id}/pdf", get(routes::reports::pdf))
        .route_layer(axum::middleware::from_fn_with_state(
            state.auth.clone(),
            auth::authorize,
        ))
        .with_state(state);
    // Outermost last: the trace span covers the timeout's 408 too, and names the matched route.
    api.layer(axum::middleware::from_fn(
        shopfds_telemetry::metrics::track_http,
    ))
    .layer(TimeoutLayer::with_status_code(
        StatusCode::REQUEST_TIMEOUT,
        settings.request_timeout,
    ))
    .layer(axum::middleware::from_fn(
        shopfds_telemetry::http::trace_http,
    ))
}
