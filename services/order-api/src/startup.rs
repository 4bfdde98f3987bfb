//! Builds the HTTP application and runs it with the outbox relay and housekeeping until shutdown.

use std::sync::Arc;

use axum::Router;
use axum::http::{Request, StatusCode};
use axum::routing::{get, post};
use ipnet::IpNet;
use shopfds_auth::Authenticator;
use shopfds_broker::ResultBackend;
use shopfds_store::Store;
use shopfds_telemetry::ops;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::config::Settings;
use crate::domain::AmountLimits;
use crate::fds::FdsClient;
use crate::{auth, housekeeping, relay, routes};

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
}

pub struct Application {
    listener: TcpListener,
    router: Router,
    settings: Settings,
    store: Store,
}

impl Application {
    /// Connects the database (creating and migrating it if needed) and binds `HTTP_ADDR`
    /// (port 0 picks a free port, for tests). The broker is not needed to start: orders are
    /// accepted while it is down and their tasks wait in the outbox.
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        let store = Store::connect(&settings.database).await?;
        let listener = TcpListener::bind(settings.http_addr).await?;
        let fds = FdsClient::new(settings.fds.clone())?
            .with_api_key(settings.security.fds_api_key.as_ref())?;
        let auth = Authenticator::new(&settings.security.auth, Some(store.api_keys()));
        let results = settings.results.reader(&store, &settings.broker).await?;
        let router = router(
            AppState {
                store: store.clone(),
                fds,
                results,
                limits: settings.security.limits,
                trusted_proxies: settings.security.trusted_proxies.clone().into(),
                auth,
            },
            &settings,
        );
        Ok(Application {
            listener,
            router,
            settings,
            store,
        })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Serves until `shutdown` fires, then finishes in-flight requests and stops the relay and
    /// housekeeping.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let relay = self.settings.relay.enabled.then(|| {
            tokio::spawn(relay::run(
                self.store.clone(),
                self.settings.broker.clone(),
                self.settings.relay.clone(),
                shutdown.clone(),
            ))
        });
        let housekeeping = tokio::spawn(housekeeping::run(
            self.store.clone(),
            self.settings.housekeeping.clone(),
            shutdown.clone(),
        ));
        // Every replica, relaying or not, reports the same table (the alert takes the max).
        let gauge = tokio::spawn(relay::report_pending(
            self.store.clone(),
            self.settings.relay.poll_interval,
            shutdown.clone(),
        ));
        let server = shopfds_telemetry::server::serve(
            self.listener,
            self.router,
            &self.settings.http,
            shutdown.clone(),
        );
        let grace = self.settings.shutdown_grace;
        let deadline = async {
            shutdown.cancelled().await;
            tokio::time::sleep(grace).await;
        };
        tokio::select! {
            served = server => served?,
            _ = deadline => tracing::warn!(grace_secs = grace.as_secs(), "requests still running after the grace period; stopping anyway"),
        }
        shutdown.cancel();
        if let Some(relay) = relay {
            let _ = relay.await;
        }
        let _ = gauge.await;
        let _ = housekeeping.await;
        self.store.close().await;
        tracing::info!("order-api stopped");
        Ok(())
    }
}

fn router(state: AppState, settings: &Settings) -> Router {
    // The database only: orders are taken while the broker is away (their tasks wait in the
    // outbox), so a broker outage must not take order-api out of its Service.
    let readiness =
        ops::Readiness::new().with("database", shopfds_results::database_check(&state.store));
    let api = Router::new()
        .route("/v1/orders", post(routes::orders::create))
        .route("/v1/orders/{id}", get(routes::orders::get))
        .route("/v1/tasks/{id}", get(routes::tasks::get))
        .route_layer(axum::middleware::from_fn_with_state(
            state.auth.clone(),
            auth::authorize,
        ))
        .with_state(state);
    api.merge(ops::router(readiness))
        .layer(axum::middleware::from_fn(shopfds_telemetry::metrics::track_http))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, settings.request_timeout))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
            let span = tracing::info_span!("http", otel.name = %format!("{} {}", req.method(), req.uri().path()), method = %req.method(), path = %req.uri().path());
            // Continue the caller's trace when it sent a W3C traceparent.
            let headers = req
                .headers()
                .iter()
                .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
                .collect();
            shopfds_telemetry::propagation::set_parent_from_headers(&span, &headers);
            span
        }))
}
