//! The `fds.v1.FraudDetection` gRPC server: request validation, the velocity lookup, the engine,
//! asynchronous recording, plus grpc.health.v1 and server reflection on the same port.
//!
//! A Score costs a lookup of the velocity counts — in the replica's in-memory index
//! ([`crate::velocity`]) when it is synced, otherwise one indexed query bounded by
//! `FDS_VELOCITY_TIMEOUT_MS` (past it the order is scored without the velocity rules) — and
//! microseconds of rule evaluation; the decision is queued for the background writer, never
//! awaited.
//!
//! Every call but the health probes runs in a server span named after its method
//! (`fds.v1.FraudDetection/Score`), the child of the caller's span when the call's metadata
//! carries a W3C `traceparent` (order-api's Score does).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use shopfds_protocol::grpc::{
    self as pb, FILE_DESCRIPTOR_SET, FraudDetection, FraudDetectionServer,
};
use shopfds_store::{FdsSource, NewFdsResult, Store, VelocityQuery};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::engine::{Assessment, Decision, Engine, OrderFacts, VelocityCounts};
use crate::metrics;
use crate::recorder::ResultRecorder;
use crate::velocity::VelocityIndex;

/// Most orders one ScoreBatch call may carry.
pub const MAX_BATCH: usize = 1000;

/// Velocity queries of one ScoreBatch in flight at once.
const BATCH_PARALLELISM: usize = 8;

/// A request field that cannot be scored; becomes `INVALID_ARGUMENT` naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidField {
    pub field: String,
    pub message: String,
}

impl From<InvalidField> for Status {
    fn from(e: InvalidField) -> Status {
        Status::invalid_argument(e.to_string())
    }
}

fn invalid(field: &str, message: impl Into<String>) -> InvalidField {
    InvalidField {
        field: field.to_owned(),
        message: message.into(),
    }
}

/// The service behind `fds.v1.FraudDetection`.
#[derive(Debug, Clone)]
pub struct FraudDetectionService {
    engine: Arc<Engine>,
    store: Store,
    recorder: ResultRecorder,
    velocity_timeout: Duration,
    velocity_index: Option<Arc<VelocityIndex>>,
}

impl FraudDetectionService {
    pub fn new(
        engine: Arc<Engine>,
        store: Store,
        recorder: ResultRecorder,
        velocity_timeout: Duration,
    ) -> FraudDetectionService {
        FraudDetectionService {
            engine,
            store,
            recorder,
            velocity_timeout,
            velocity_index: None,
        }
    }

    /// Counts velocity in `index` whenever it is synced (the database otherwise).
    pub fn with_velocity_index(mut self, index: Arc<VelocityIndex>) -> FraudDetectionService {
        self.velocity_index = Some(index);
        self
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Validates, looks up velocity, assesses and queues the decision for recording.
    pub async fn score(
        &self,
        request: &pb::ScoreRequest,
        source: FdsSource,
    ) -> Result<pb::ScoreResponse, InvalidField> {
        let started = Instant::now();
        let mut facts = order_facts(request)?;
        facts.velocity = self.velocity(&facts).await;
        let assessment = self.engine.assess(&facts);
        self.record(&facts, &assessment, source);
        metrics::score_duration_seconds().observe(started.elapsed().as_secs_f64());
        Ok(score_response(assessment))
    }

    /// Orders already stored per customer, IP and card in the last 1 h and 24 h, from the index
    /// when it is synced, else from the store; `None` when the store did not answer within the
    /// budget.
    async fn velocity(&self, facts: &OrderFacts) -> Option<VelocityCounts> {
        let query = VelocityQuery {
            customer_id: facts.customer_id.clone(),
            client_ip: facts.client_ip.map(|ip| ip.to_string()),
            card_fingerprint: facts.card_fingerprint.clone(),
            exclude_order: uuid::Uuid::parse_str(&facts.order_id).ok(),
            at: Utc::now(),
            short_window: Duration::from_secs(3600),
            long_window: Duration::from_secs(24 * 3600),
        };
        if let Some(counts) = self.velocity_index.as_ref().and_then(|i| i.counts(&query)) {
            return Some(counts);
        }
        match tokio::time::timeout(self.velocity_timeout, self.store.velocity().counts(&query))
            .await
        {
            Ok(Ok(counts)) => Some(counts),
            Ok(Err(e)) => {
                metrics::velocity_unavailable_total().inc();
                tracing::warn!(error = %e, "velocity counts unavailable; scoring without them");
                None
            }
            Err(_) => {
                metrics::velocity_unavailable_total().inc();
                tracing::warn!(
                    timeout = ?self.velocity_timeout,
                    "velocity query too slow; scoring without it"
                );
                None
            }
        }
    }

    fn record(&self, facts: &OrderFacts, assessment: &Assessment, source: FdsSource) {
        metrics::decisions_total()
            .with_label_values(&[assessment.decision.as_str(), source.as_str()])
            .inc();
        self.recorder.record(NewFdsResult {
            order_id: facts.order_id.clone(),
            score: i32::try_from(assessment.score).unwrap_or(100),
            decision: assessment.decision.into(),
            reasons: serde_json::to_value(&assessment.reasons)
                .unwrap_or_else(|_| serde_json::Value::Array(Vec::new())),
            rules_version: assessment.rules_version.clone(),
            source,
        });
    }

    /// The tonic server for this service.
    pub fn into_server(self) -> FraudDetectionServer<FraudDetectionService> {
        FraudDetectionServer::new(self)
    }
}

#[tonic::async_trait]
impl FraudDetection for FraudDetectionService {
    async fn score(
        &self,
        request: Request<pb::ScoreRequest>,
    ) -> Result<Response<pb::ScoreResponse>, Status> {
        let response =
            FraudDetectionService::score(self, request.get_ref(), FdsSource::Realtime).await?;
        Ok(Response::new(response))
    }

    async fn score_batch(
        &self,
        request: Request<pb::ScoreBatchRequest>,
    ) -> Result<Response<pb::ScoreBatchResponse>, Status> {
        let requests = request.into_inner().requests;
        if requests.len() > MAX_BATCH {
            return Err(invalid(
                "requests",
                format!("{} orders; at most {MAX_BATCH} per call", requests.len()),
            )
            .into());
        }
        // Validate everything first, so a bad entry records nothing.
        for (i, r) in requests.iter().enumerate() {
            order_facts(r).map_err(|e| InvalidField {
                field: format!("requests[{i}].{}", e.field),
                message: e.message,
            })?;
        }
        let responses: Vec<Result<pb::ScoreResponse, InvalidField>> =
            futures::stream::iter(0..requests.len())
                .map(|i| FraudDetectionService::score(self, &requests[i], FdsSource::Batch))
                .buffered(BATCH_PARALLELISM)
                .collect()
                .await;
        let responses = responses.into_iter().collect::<Result<Vec<_>, _>>()?;
        Ok(Response::new(pb::ScoreBatchResponse { responses }))
    }
}

/// The facts of a request, validated (velocity not yet filled in).
pub fn order_facts(r: &pb::ScoreRequest) -> Result<OrderFacts, InvalidField> {
    if r.order_id.trim().is_empty() {
        return Err(invalid("order_id", "must not be empty"));
    }
    if r.customer_id.trim().is_empty() {
        return Err(invalid("customer_id", "must not be empty"));
    }
    if r.amount < 0 {
        return Err(invalid("amount", "must not be negative"));
    }
    let currency = r.currency.trim().to_ascii_uppercase();
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(invalid(
            "currency",
            format!("{:?} is not an ISO 4217 code", r.currency),
        ));
    }
    let client_ip = match r.client_ip.trim() {
        "" => None,
        ip => Some(
            ip.parse::<IpAddr>()
                .map_err(|_| invalid("client_ip", format!("{ip:?} is not an IP address")))?,
        ),
    };
    let account_created_at = match &r.account_created_at {
        None => None,
        Some(ts) => Some(
            u32::try_from(ts.nanos)
                .ok()
                .and_then(|nanos| DateTime::<Utc>::from_timestamp(ts.seconds, nanos))
                .ok_or_else(|| invalid("account_created_at", "not a valid timestamp"))?,
        ),
    };
    let card_fingerprint = Some(r.card_fingerprint.trim().to_owned()).filter(|f| !f.is_empty());
    Ok(OrderFacts {
        order_id: r.order_id.trim().to_owned(),
        customer_id: r.customer_id.trim().to_owned(),
        email: r.email.trim().to_owned(),
        client_ip,
        amount: r.amount,
        currency,
        shipping_country: r.shipping_country.trim().to_ascii_uppercase(),
        billing_country: r.billing_country.trim().to_ascii_uppercase(),
        card_fingerprint,
        account_created_at,
        velocity: None,
    })
}

/// The wire form of an assessment.
pub fn score_response(a: Assessment) -> pb::ScoreResponse {
    let decision = match a.decision {
        Decision::Approve => pb::Decision::Approve,
        Decision::Review => pb::Decision::Review,
        Decision::Block => pb::Decision::Block,
    };
    pb::ScoreResponse {
        score: a.score,
        decision: decision as i32,
        reasons: a
            .reasons
            .into_iter()
            .map(|r| pb::Reason {
                rule_id: r.rule_id,
                weight: r.weight,
                message: r.message,
            })
            .collect(),
        rules_version: a.rules_version,
    }
}

/// The span of one call: `/fds.v1.FraudDetection/Score` → `fds.v1.FraudDetection/Score`, kind
/// server, continuing the caller's trace. Health probes get none (probes are not traced).
fn server_span(request: &tonic::codegen::http::Request<()>) -> tracing::Span {
    let path = request.uri().path();
    if crate::auth::required_access(path) == crate::auth::Access::Open {
        return tracing::Span::none();
    }
    let method = path.trim_start_matches('/');
    let (service, name) = method.split_once('/').unwrap_or((method, ""));
    let span = tracing::info_span!(
        "grpc",
        otel.name = %method,
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = %service,
        rpc.method = %name,
    );
    shopfds_telemetry::propagation::set_parent_from_http(&span, request.headers());
    span
}

/// Serves `service`, grpc.health.v1 and reflection (v1 and v1alpha) on `listener` until
/// `shutdown`, with at most `concurrency` RPCs in progress across all connections, each call
/// admitted by `auth` first ([`crate::auth`]). Health turns NOT_SERVING as soon as shutdown
/// starts; in-flight RPCs finish.
pub async fn serve(
    listener: TcpListener,
    service: FraudDetectionService,
    concurrency: usize,
    auth: shopfds_auth::Authenticator,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    serve_with_tls(listener, service, concurrency, None, auth, shutdown).await
}

/// [`serve`] over TLS (and mutual TLS) when `tls` is given ([`crate::tls::GrpcServerTls`]).
pub async fn serve_with_tls(
    listener: TcpListener,
    service: FraudDetectionService,
    concurrency: usize,
    tls: Option<tonic::transport::ServerTlsConfig>,
    auth: shopfds_auth::Authenticator,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<FraudDetectionServer<FraudDetectionService>>()
        .await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    let signal = {
        let shutdown = shutdown.clone();
        let health = health.clone();
        async move {
            shutdown.cancelled().await;
            health
                .set_not_serving::<FraudDetectionServer<FraudDetectionService>>()
                .await;
            health
                .set_service_status("", tonic_health::ServingStatus::NotServing)
                .await;
        }
    };
    let mut server = tonic::transport::Server::builder().trace_fn(server_span);
    if let Some(tls) = tls {
        server = server.tls_config(tls)?;
    }
    server
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            concurrency.max(1),
        ))
        .layer(crate::auth::AuthLayer::new(auth))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(service.into_server())
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            signal,
        )
        .await?;
    Ok(())
}
