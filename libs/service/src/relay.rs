//! The outbox relay: publishes committed outbox rows to RabbitMQ with publisher confirms and
//! marks a row sent only after its confirm. The store side (rows claimed with `FOR UPDATE SKIP
//! LOCKED`, so several replicas (of order-api, of beat-scheduler) relay side by side without sending a row twice; rows
//! mapped back to their messages; sent or failed marked) is `shopfds_store::outbox`; this loop
//! keeps a confirmed publisher, is woken by PostgreSQL `NOTIFY` at commit and polls as a safety
//! net. It does nothing else (order-api's housekeeping purges sent rows).
//!
//! While RabbitMQ is unreachable rows simply wait; when it is back the relay reconnects and
//! drains them. A crash between the confirm and the commit publishes a row again (at-least-once),
//! which the workers' idempotency absorbs.
//!
//! Each message is published in a producer span `publish <task>`, the child of the trace context
//! its row was written with (the order's HTTP request), and goes out carrying the publish span's
//! own context instead: a worker's task span is the publish span's child, and the trace shows
//! how long the message waited in the outbox (the gap between the request and its publish).
//!
//! `shopfds_outbox_pending` is refreshed by [`report_pending`], a loop of its own that reads
//! only PostgreSQL: the gauge is what alerts on a relay that cannot publish, so it must keep
//! moving while the broker is away (it did not when the relay set it between its publishes).

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use shopfds_broker::amqp::{Backoff, connect_with_backoff};
use shopfds_broker::{
    BrokerSettings, BrokerState, Outgoing, PublishError, Publisher, connected, topology,
};
use shopfds_store::Store;
use tokio_util::sync::CancellationToken;

use shopfds_config::{ConfigError, Env};

/// `RELAY_ENABLED`, `RELAY_BATCH_SIZE`, `RELAY_POLL_INTERVAL_MS`.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// `RELAY_ENABLED` (default true): run the outbox relay in this process.
    pub enabled: bool,
    /// `RELAY_BATCH_SIZE` (default 100): rows published per confirm round trip.
    pub batch_size: i64,
    /// `RELAY_POLL_INTERVAL_MS` (default 1000): a safety net; relays are woken by NOTIFY.
    pub poll_interval: Duration,
}

impl Default for RelaySettings {
    fn default() -> Self {
        RelaySettings {
            enabled: true,
            batch_size: 100,
            poll_interval: Duration::from_secs(1),
        }
    }
}

impl RelaySettings {
    pub fn read(env: &Env) -> Result<Self, ConfigError> {
        let defaults = RelaySettings::default();
        Ok(RelaySettings {
            enabled: env.flag("RELAY_ENABLED", defaults.enabled)?,
            batch_size: env.positive("RELAY_BATCH_SIZE", defaults.batch_size)?,
            poll_interval: env.millis("RELAY_POLL_INTERVAL_MS", defaults.poll_interval)?,
        })
    }
}

/// Publishes the outbox until `shutdown`, reconnecting to the broker as needed.
pub async fn run(
    store: Store,
    broker: BrokerSettings,
    settings: RelaySettings,
    shutdown: CancellationToken,
) {
    // `shopfds_broker_connected{connection="relay"}`.
    let state = connected::channel(connected::connection::RELAY);
    while let Some(conn) =
        connect_with_backoff(&broker, &shutdown, &mut Backoff::new(&broker), &state).await
    {
        let publisher = match setup(&conn, &broker).await {
            Ok(p) => p,
            Err(e) => {
                state.send_replace(BrokerState::Disconnected(e.to_string()));
                tracing::warn!(error = %e, "relay could not set up its channel; reconnecting");
                wait(&shutdown, broker.reconnect_max).await;
                continue;
            }
        };
        state.send_replace(BrokerState::Declared);
        tracing::info!("outbox relay connected");
        let mut listener = match store.outbox().listener().await {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::warn!(error = %e, "no LISTEN connection; the relay will poll");
                None
            }
        };
        loop {
            if shutdown.is_cancelled() {
                state.send_replace(BrokerState::Stopped);
                let _ = conn.close(200, "relay shutdown".into()).await;
                return;
            }
            let drained = store
                .outbox()
                .drain(settings.batch_size, |messages| {
                    let publisher = publisher.clone();
                    async move { publish_traced(&publisher, messages).await }
                })
                .await;
            if let Err(e) = drained {
                tracing::warn!(error = %e, "outbox relay step failed");
            }
            if !publisher.is_usable() {
                state.send_replace(BrokerState::Disconnected(
                    "the publishing channel closed".to_owned(),
                ));
                tracing::warn!("broker channel lost; the relay reconnects");
                break;
            }
            // Sleep until a commit notifies us, the poll interval passes, or shutdown.
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tokio::time::sleep(settings.poll_interval) => {}
                notified = async {
                    match listener.as_mut() {
                        Some(l) => l.recv().await.map(|_| ()),
                        None => std::future::pending().await,
                    }
                } => {
                    if let Err(e) = notified {
                        tracing::warn!(error = %e, "LISTEN connection lost; polling until it is back");
                        listener = None;
                    }
                }
            }
            if listener.is_none() {
                listener = store.outbox().listener().await.ok();
            }
        }
    }
}

/// Publishes `messages` (confirmed), each in its [`publish_span`], which ends with the confirm.
async fn publish_traced(
    publisher: &Publisher,
    mut messages: Vec<Outgoing>,
) -> Vec<Result<(), PublishError>> {
    let spans: Vec<tracing::Span> = messages.iter_mut().map(publish_span).collect();
    let outcomes = publisher.publish_batch(&messages).await;
    for (span, outcome) in spans.iter().zip(&outcomes) {
        if let Err(e) = outcome {
            span.record("otel.status_code", "ERROR");
            span.record("error", e.to_string());
        }
    }
    outcomes
}

/// The producer span of `message`, the child of the context its headers were written with;
/// the headers then carry the span's own context.
fn publish_span(message: &mut Outgoing) -> tracing::Span {
    let task = message
        .headers
        .get("task")
        .and_then(Value::as_str)
        .unwrap_or("message");
    let id = message
        .headers
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let span = tracing::info_span!(
        "publish",
        otel.name = %format!("publish {task}"),
        otel.kind = "producer",
        messaging.system = "rabbitmq",
        messaging.destination.name = %message.exchange,
        messaging.rabbitmq.destination.routing_key = %message.routing_key,
        messaging.message.id = id,
        otel.status_code = tracing::field::Empty,
        error = tracing::field::Empty,
    );
    let written: HashMap<String, String> = ["traceparent", "tracestate"]
        .into_iter()
        .filter_map(|name| {
            let value = message.headers.get(name)?.as_str()?;
            Some((name.to_owned(), value.to_owned()))
        })
        .collect();
    shopfds_telemetry::propagation::set_parent_from_headers(&span, &written);
    for (name, value) in shopfds_telemetry::propagation::span_context_headers(&span) {
        message.headers.insert(name, Value::String(value));
    }
    span
}

/// Sets `shopfds_outbox_pending` from the outbox table every `every` until shutdown, whatever
/// the broker's state. A failed read (database away) keeps the last value.
pub async fn report_pending(store: Store, every: Duration, shutdown: CancellationToken) {
    loop {
        match store.outbox().pending().await {
            Ok(pending) => shopfds_telemetry::metrics::outbox_pending().set(pending),
            Err(e) => tracing::debug!(error = %e, "cannot count pending outbox rows"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

async fn setup(
    conn: &shopfds_broker::lapin::Connection,
    broker: &BrokerSettings,
) -> Result<Publisher, shopfds_broker::BrokerError> {
    // Declared here too so that a relay started before any worker still routes its messages.
    let channel = conn.create_channel().await?;
    topology::declare_for(&channel, broker).await?;
    let _ = channel.close(200, "declared".into()).await;
    Publisher::new(conn).await
}

async fn wait(shutdown: &CancellationToken, d: Duration) {
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = tokio::time::sleep(d) => {}
    }
}
