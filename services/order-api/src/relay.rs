//! The outbox relay: publishes committed outbox rows to RabbitMQ with publisher confirms and
//! marks a row sent only after its confirm. Rows are claimed with `FOR UPDATE SKIP LOCKED`, so
//! several order-api replicas relay side by side without sending a row twice; a relay is woken
//! by PostgreSQL `NOTIFY` at commit and polls as a safety net.
//!
//! While RabbitMQ is unreachable rows simply wait; when it is back the relay reconnects and
//! drains them. A crash between the confirm and the commit publishes a row again (at-least-once),
//! which the workers' idempotency absorbs.
//!
//! `shopfds_outbox_pending` is refreshed by [`report_pending`], a loop of its own that reads
//! only PostgreSQL: the gauge is what alerts on a relay that cannot publish, so it must keep
//! moving while the broker is away (it did not when the relay set it between its publishes).

use std::time::{Duration, Instant};

use serde_json::Value;
use shopfds_broker::amqp::connect_with_retry;
use shopfds_broker::{BrokerSettings, Outgoing, Publisher, topology};
use shopfds_protocol::MessageProperties;
use shopfds_store::{OutboxRow, Store};
use tokio_util::sync::CancellationToken;

use crate::config::RelaySettings;

/// How often expired results, old idempotency keys and sent outbox rows are cleaned up.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(600);

pub async fn run(
    store: Store,
    broker: BrokerSettings,
    settings: RelaySettings,
    shutdown: CancellationToken,
) {
    let mut last_housekeeping: Option<Instant> = None;
    while let Some(conn) = connect_with_retry(&broker, &shutdown).await {
        let publisher = match setup(&conn, &broker).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "relay could not set up its channel; reconnecting");
                wait(&shutdown, broker.reconnect_max).await;
                continue;
            }
        };
        tracing::info!("outbox relay connected");
        let mut listener = match store.outbox_listener().await {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::warn!(error = %e, "no LISTEN connection; the relay will poll");
                None
            }
        };
        loop {
            if shutdown.is_cancelled() {
                let _ = conn.close(200, "relay shutdown".into()).await;
                return;
            }
            if last_housekeeping.is_none_or(|t| t.elapsed() >= HOUSEKEEPING_EVERY) {
                housekeeping(&store, &settings).await;
                last_housekeeping = Some(Instant::now());
            }
            match drain(&store, &publisher, settings.batch_size).await {
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "outbox relay step failed"),
            }
            if !publisher.is_usable() {
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
                listener = store.outbox_listener().await.ok();
            }
        }
    }
}

/// Sets `shopfds_outbox_pending` from the outbox table every `every` until shutdown, whatever
/// the broker's state. A failed read (database away) keeps the last value.
pub async fn report_pending(store: Store, every: Duration, shutdown: CancellationToken) {
    loop {
        match store.outbox_pending().await {
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

/// Publishes batches until the outbox is empty or a batch fails.
async fn drain(
    store: &Store,
    publisher: &Publisher,
    batch: i64,
) -> Result<usize, shopfds_store::StoreError> {
    let mut total = 0;
    loop {
        let publisher = publisher.clone();
        let sent = store
            .relay_outbox(batch, |rows| async move {
                let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
                let outgoing: Vec<Result<Outgoing, String>> =
                    rows.into_iter().map(to_outgoing).collect();
                let valid: Vec<Outgoing> = outgoing
                    .iter()
                    .filter_map(|o| o.as_ref().ok().cloned())
                    .collect();
                let mut published = publisher.publish_batch(&valid).await.into_iter();
                ids.into_iter()
                    .zip(outgoing)
                    .map(|(id, o)| match o {
                        Err(e) => (id, Err(e)),
                        Ok(_) => (
                            id,
                            published
                                .next()
                                .unwrap_or(Err(shopfds_broker::PublishError::Closed))
                                .map_err(|e| e.to_string()),
                        ),
                    })
                    .collect()
            })
            .await?;
        total += sent;
        if sent < usize::try_from(batch).unwrap_or(usize::MAX) {
            return Ok(total);
        }
    }
}

fn to_outgoing(row: OutboxRow) -> Result<Outgoing, String> {
    let m = row.message;
    let headers = match m.headers {
        Value::Object(map) => map,
        other => {
            return Err(format!(
                "outbox row {}: headers are not an object: {other}",
                row.id
            ));
        }
    };
    let properties: MessageProperties = serde_json::from_value(m.properties)
        .map_err(|e| format!("outbox row {}: properties: {e}", row.id))?;
    Ok(Outgoing {
        exchange: m.exchange,
        routing_key: m.routing_key,
        headers,
        properties,
        body: m.body,
    })
}

async fn housekeeping(store: &Store, settings: &RelaySettings) {
    let retention =
        chrono::Duration::from_std(settings.retention).unwrap_or(chrono::Duration::hours(24));
    match store.purge_expired_results().await {
        Ok(n) if n > 0 => tracing::info!(removed = n, "expired task results removed"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not purge expired results"),
    }
    if let Err(e) = store.purge_sent_outbox(retention).await {
        tracing::warn!(error = %e, "could not purge sent outbox rows");
    }
    if let Err(e) = store
        .purge_idempotency_keys(chrono::Duration::hours(24))
        .await
    {
        tracing::warn!(error = %e, "could not purge idempotency keys");
    }
    // A chord still open after a week will not complete: its parts have long used up their
    // retries (the longest policy waits 600 s between tries).
    match store
        .purge_chords_before(chrono::Utc::now() - chrono::Duration::days(7))
        .await
    {
        Ok(n) if n > 0 => tracing::info!(removed = n, "chords older than 7 days removed"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not purge old chords"),
    }
}

async fn wait(shutdown: &CancellationToken, d: Duration) {
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = tokio::time::sleep(d) => {}
    }
}
