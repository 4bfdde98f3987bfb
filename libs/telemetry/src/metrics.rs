//! The Prometheus collectors every ShopFDS binary exposes on `/metrics`, in one process-wide
//! registry, so the names and labels a dashboard or alert relies on are defined in one place.
//! Two kinds live with the code that owns them, in the same registry: fds-worker's
//! `shopfds_fds_*`, and `shopfds_broker_connected` (shopfds-broker's `connected`, computed at
//! scrape time). `tools/config-checks` checks every name the alerts and the dashboard use.
//!
//! Label values must stay low-cardinality: queue and task names, HTTP method, the route
//! *template* (never the raw path with ids), status code.

use std::sync::LazyLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use prometheus::{
    Encoder as _, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// `phase` label values of [`task_wait_seconds`]: where the time between a task being planned
/// and starting went.
pub mod phase {
    /// Written to the transactional outbox, not yet published by the relay.
    pub const OUTBOX: &str = "outbox";
    /// Published (or its eta/backoff over), not yet delivered to a worker.
    pub const BROKER: &str = "broker";
    /// Delivered to this worker (prefetched), waiting for a free concurrency slot.
    pub const PREFETCH: &str = "prefetch";
    /// Held for its `eta`/`countdown` (in the broker's delay tree).
    pub const ETA: &str = "eta";
    /// Waiting for its task's rate-limit turn.
    pub const RATE_LIMIT: &str = "rate_limit";
    /// Held for the retry policy's backoff before this attempt.
    pub const RETRY_BACKOFF: &str = "retry_backoff";
}

/// `outcome` label values of [`tasks_total`].
///
/// A message a worker settles for good counts once in exactly one of `succeeded`, `retried`,
/// `failed`, `rejected` and `revoked`. `dead_lettered` counts a second time every message that
/// went to `failed.<queue>`, which is every `failed` and `rejected` one: sum the outcomes
/// without it. Messages put back on their queue (shutdown, a dependency down, a copy that could
/// not be published, a final state that could not be recorded), ETA deferrals, and a message the
/// runtime itself panicked on (rejected to the dead-letter exchange) count nothing.
pub mod outcome {
    /// The handler returned a result; the message was acknowledged.
    pub const SUCCEEDED: &str = "succeeded";
    /// Failed for good (a permanent error, retries spent, the hard time limit, a panic):
    /// FAILURE recorded, the message dead-lettered.
    pub const FAILED: &str = "failed";
    /// Failed with a retryable error and republished through the delay tree for another try.
    pub const RETRIED: &str = "retried";
    /// Refused before it ran (undecodable, unknown task, eta past the horizon, a chord the
    /// backend cannot complete): dead-lettered.
    pub const REJECTED: &str = "rejected";
    /// Copied to `failed.<queue>` (or, when that copy could not be published, rejected to the
    /// queue's dead-letter exchange, which routes it there too); also counted as `failed` or
    /// `rejected`.
    pub const DEAD_LETTERED: &str = "dead_lettered";
    /// Expired (`expires` passed) before it ran: REVOKED recorded, the message acknowledged.
    pub const REVOKED: &str = "revoked";
}

/// `route` label of HTTP requests that matched no route, so scanners cannot mint label values.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Tasks run from milliseconds (an email) to minutes (a sales report), past the default buckets'
/// 10 s ceiling.
const TASK_DURATION_BUCKETS: [f64; 16] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

struct Collectors {
    registry: Registry,
    tasks_total: IntCounterVec,
    task_duration_seconds: HistogramVec,
    messages_published_total: IntCounterVec,
    outbox_pending: IntGauge,
    broker_connects_total: IntCounterVec,
    worker_dependency_down: IntGaugeVec,
    http_requests_total: IntCounterVec,
    http_request_duration_seconds: HistogramVec,
    task_wait_seconds: HistogramVec,
    tasks_in_flight: IntGaugeVec,
    prefetched_messages: IntGaugeVec,
    dead_letter_messages: IntGaugeVec,
}

static COLLECTORS: LazyLock<Collectors> = LazyLock::new(build);

#[expect(
    clippy::expect_used,
    reason = "names, help texts and labels are constants registered once into a fresh registry: \
              an error is a programming mistake that the crate's tests hit on first access"
)]
fn build() -> Collectors {
    try_build().expect("the built-in Prometheus collectors are valid")
}

fn try_build() -> prometheus::Result<Collectors> {
    let registry = Registry::new();
    let tasks_total = IntCounterVec::new(
        Opts::new(
            "shopfds_tasks_total",
            "Messages a worker settled, by queue, task name and outcome: each once as \
             succeeded, retried, failed, rejected or revoked; failed and rejected ones again as \
             dead_lettered (copied to failed.<queue>).",
        ),
        &["queue", "task", "outcome"],
    )?;
    let task_duration_seconds = HistogramVec::new(
        HistogramOpts::new(
            "shopfds_task_duration_seconds",
            "Wall time of one task execution, by queue and task name.",
        )
        .buckets(TASK_DURATION_BUCKETS.to_vec()),
        &["queue", "task"],
    )?;
    let messages_published_total = IntCounterVec::new(
        Opts::new(
            "shopfds_messages_published_total",
            "Messages confirmed by the broker, by exchange.",
        ),
        &["exchange"],
    )?;
    let outbox_pending = IntGauge::new(
        "shopfds_outbox_pending",
        "Outbox rows written but not yet confirmed by the broker.",
    )?;
    let broker_connects_total = IntCounterVec::new(
        Opts::new(
            "shopfds_broker_connects_total",
            "AMQP connection attempts by this process, by outcome (opened, failed). `opened` \
             climbing steadily means sessions fail after connecting (the log says why).",
        ),
        &["outcome"],
    )?;
    let worker_dependency_down = IntGaugeVec::new(
        Opts::new(
            "shopfds_worker_dependency_down",
            "1 while this worker has stopped taking messages because a dependency of its own \
             (e.g. its database) is unreachable, by dependency; 0 once it answers again.",
        ),
        &["dependency"],
    )?;
    let http_requests_total = IntCounterVec::new(
        Opts::new(
            "shopfds_http_requests_total",
            "HTTP requests answered, by method, route template and status code.",
        ),
        &["method", "route", "status"],
    )?;
    let http_request_duration_seconds = HistogramVec::new(
        HistogramOpts::new(
            "shopfds_http_request_duration_seconds",
            "HTTP request latency until the response head, by method and route template.",
        ),
        &["method", "route"],
    )?;

    let task_wait_seconds = HistogramVec::new(
        HistogramOpts::new(
            "shopfds_task_wait_seconds",
            "Why a task started late: the time between being planned and starting, split by \
             phase (outbox, broker, prefetch, eta, rate_limit, retry_backoff), by queue and task.",
        )
        .buckets(TASK_DURATION_BUCKETS.to_vec()),
        &["queue", "task", "phase"],
    )?;
    let tasks_in_flight = IntGaugeVec::new(
        Opts::new(
            "shopfds_tasks_in_flight",
            "Tasks this worker is running now, by queue.",
        ),
        &["queue"],
    )?;
    let prefetched_messages = IntGaugeVec::new(
        Opts::new(
            "shopfds_prefetched_messages",
            "Messages delivered to this worker and not yet settled (running, waiting for a \
             slot, or being acknowledged), by queue: the prefetch in use.",
        ),
        &["queue"],
    )?;
    let dead_letter_messages = IntGaugeVec::new(
        Opts::new(
            "shopfds_dead_letter_messages",
            "Messages waiting in a dead-letter queue (failed.<queue>) or its parked queue \
             (parked.<queue>), by that queue's name, as the dlq-reprocessor last read them.",
        ),
        &["queue"],
    )?;

    registry.register(Box::new(tasks_total.clone()))?;
    registry.register(Box::new(task_duration_seconds.clone()))?;
    registry.register(Box::new(messages_published_total.clone()))?;
    registry.register(Box::new(outbox_pending.clone()))?;
    registry.register(Box::new(broker_connects_total.clone()))?;
    registry.register(Box::new(worker_dependency_down.clone()))?;
    registry.register(Box::new(http_requests_total.clone()))?;
    registry.register(Box::new(http_request_duration_seconds.clone()))?;
    registry.register(Box::new(task_wait_seconds.clone()))?;
    registry.register(Box::new(tasks_in_flight.clone()))?;
    registry.register(Box::new(prefetched_messages.clone()))?;
    registry.register(Box::new(dead_letter_messages.clone()))?;

    Ok(Collectors {
        registry,
        tasks_total,
        task_duration_seconds,
        messages_published_total,
        outbox_pending,
        broker_connects_total,
        worker_dependency_down,
        http_requests_total,
        http_request_duration_seconds,
        task_wait_seconds,
        tasks_in_flight,
        prefetched_messages,
        dead_letter_messages,
    })
}

/// The process-wide registry holding every collector below.
pub fn registry() -> &'static Registry {
    &COLLECTORS.registry
}

/// `shopfds_tasks_total{queue,task,outcome}`; `outcome` is one of [`outcome`].
pub fn tasks_total() -> &'static IntCounterVec {
    &COLLECTORS.tasks_total
}

/// `shopfds_task_duration_seconds{queue,task}`.
pub fn task_duration_seconds() -> &'static HistogramVec {
    &COLLECTORS.task_duration_seconds
}

/// `shopfds_messages_published_total{exchange}`.
pub fn messages_published_total() -> &'static IntCounterVec {
    &COLLECTORS.messages_published_total
}

/// `shopfds_outbox_pending`.
pub fn outbox_pending() -> &'static IntGauge {
    &COLLECTORS.outbox_pending
}

/// `shopfds_broker_connects_total{outcome}`; `outcome` is `opened` or `failed`.
pub fn broker_connects_total() -> &'static IntCounterVec {
    &COLLECTORS.broker_connects_total
}

/// `shopfds_worker_dependency_down{dependency}`.
pub fn worker_dependency_down() -> &'static IntGaugeVec {
    &COLLECTORS.worker_dependency_down
}

/// `shopfds_http_requests_total{method,route,status}`.
pub fn http_requests_total() -> &'static IntCounterVec {
    &COLLECTORS.http_requests_total
}

/// `shopfds_http_request_duration_seconds{method,route}`.
pub fn http_request_duration_seconds() -> &'static HistogramVec {
    &COLLECTORS.http_request_duration_seconds
}

/// `shopfds_task_wait_seconds{queue,task,phase}`; `phase` is one of [`phase`].
pub fn task_wait_seconds() -> &'static HistogramVec {
    &COLLECTORS.task_wait_seconds
}

/// `shopfds_tasks_in_flight{queue}`.
pub fn tasks_in_flight() -> &'static IntGaugeVec {
    &COLLECTORS.tasks_in_flight
}

/// `shopfds_prefetched_messages{queue}`.
pub fn prefetched_messages() -> &'static IntGaugeVec {
    &COLLECTORS.prefetched_messages
}

/// `shopfds_dead_letter_messages{queue}`; `queue` is `failed.<queue>` or `parked.<queue>`.
pub fn dead_letter_messages() -> &'static IntGaugeVec {
    &COLLECTORS.dead_letter_messages
}

/// The registry in Prometheus text exposition format (version 0.0.4).
pub fn render() -> String {
    let mut buffer = Vec::new();
    if let Err(error) = TextEncoder::new().encode(&registry().gather(), &mut buffer) {
        // Only a write to the Vec or a malformed family can fail; a partial page beats none.
        tracing::warn!(%error, "encoding Prometheus metrics failed");
    }
    String::from_utf8_lossy(&buffer).into_owned()
}

/// axum middleware (`axum::middleware::from_fn(track_http)`) recording
/// `shopfds_http_requests_total` and `shopfds_http_request_duration_seconds`, with `route` the
/// matched route template or [`UNMATCHED_ROUTE`]. Add it with `Router::layer` so the route is
/// known when it runs.
pub async fn track_http(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(req.method());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED_ROUTE, MatchedPath::as_str)
        .to_owned();
    let response = next.run(req).await;
    http_request_duration_seconds()
        .with_label_values(&[method, route.as_str()])
        .observe(started.elapsed().as_secs_f64());
    http_requests_total()
        .with_label_values(&[method, route.as_str(), response.status().as_str()])
        .inc();
    response
}

/// Extension methods are arbitrary tokens chosen by the client: folded into one label value.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "OTHER",
    }
}
