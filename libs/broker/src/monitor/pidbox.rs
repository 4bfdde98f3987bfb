//! The worker's mailbox, as kombu's `pidbox` lays it out: broadcasts arrive on the fanout
//! exchange `celery.pidbox` in the worker's own queue `<hostname>.celery.pidbox` (transient,
//! auto-deleted, messages kept 300 s, the queue 10 s after its consumer left: Celery's
//! `control_queue_ttl` and `control_queue_expires`); a command with a `reply_to` is answered
//! `{hostname: reply}` on `reply.celery.pidbox` with the caller's routing key and `ticket`.
//! A command is run when its `destination` lists this worker, its glob `pattern` matches the
//! hostname, or it names neither; one whose `expires` header has passed is ignored.
//!
//! Besides its own queue, every worker consumes the durable queue [`REVOKE_QUEUE`] bound to the
//! same exchange: a revoke broadcast while no Rust worker was listening waits there, and the first
//! worker to connect stores it before it takes any task ([`drain_revokes`]).

use std::sync::Arc;

use futures::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ExchangeKind};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::Monitor;
use super::control::{self, Effect};

/// The broadcast exchange of Celery's mailbox (`<namespace>.pidbox`, namespace `celery`).
pub const EXCHANGE: &str = "celery.pidbox";
/// Where replies go (`reply.<namespace>.pidbox`).
pub const REPLY_EXCHANGE: &str = "reply.celery.pidbox";
/// The durable queue that keeps broadcasts while no Rust worker listens; only revokes are read
/// from it, the rest is dropped. Bounded: the oldest go first past 10,000.
pub const REVOKE_QUEUE: &str = "shopfds.revokes";

/// Celery's `control_queue_ttl` (300 s) and `control_queue_expires` (10 s), in ms.
const QUEUE_TTL_MS: i32 = 300_000;
const QUEUE_EXPIRES_MS: i32 = 10_000;

/// The worker's own mailbox queue.
pub fn queue_name(hostname: &str) -> String {
    format!("{hostname}.celery.pidbox")
}

/// One control message.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub method: String,
    pub arguments: Map<String, Value>,
    pub destination: Option<Vec<String>>,
    pub pattern: Option<String>,
    pub matcher: Option<String>,
    /// `(exchange, routing_key)` to answer to.
    pub reply_to: Option<(String, String)>,
    pub ticket: Option<String>,
}

impl Command {
    pub fn parse(body: &[u8]) -> Result<Command, String> {
        let Value::Object(body) =
            serde_json::from_slice::<Value>(body).map_err(|e| e.to_string())?
        else {
            return Err("a control message is a JSON object".into());
        };
        let text = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_owned);
        let method = text("method").ok_or("no method")?;
        let arguments = match body.get("arguments") {
            Some(Value::Object(a)) => a.clone(),
            _ => Map::new(),
        };
        let destination = match body.get("destination") {
            Some(Value::Array(d)) => Some(
                d.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect(),
            ),
            Some(Value::String(d)) => Some(vec![d.clone()]),
            _ => None,
        };
        let reply_to = body.get("reply_to").and_then(|r| {
            Some((
                r.get("exchange")?.as_str()?.to_owned(),
                r.get("routing_key")?.as_str()?.to_owned(),
            ))
        });
        Ok(Command {
            method,
            arguments,
            destination,
            pattern: text("pattern"),
            matcher: text("matcher"),
            reply_to,
            ticket: text("ticket"),
        })
    }

    /// Whether this worker is meant, as kombu's `Node.handle_message` decides.
    pub fn addressed_to(&self, hostname: &str) -> bool {
        match (&self.destination, &self.pattern, &self.matcher) {
            (Some(d), _, _) if !d.is_empty() => d.iter().any(|d| d == hostname),
            (_, Some(pattern), Some(matcher)) if matcher == "glob" => glob(pattern, hostname),
            (_, Some(pattern), Some(matcher)) => {
                tracing::warn!(
                    pattern,
                    matcher,
                    "only glob patterns are matched; command ignored"
                );
                false
            }
            _ => true,
        }
    }
}

/// fnmatch's `*` and `?` (no character classes).
fn glob(pattern: &str, text: &str) -> bool {
    fn go(p: &[char], t: &[char]) -> bool {
        match (p.first(), t.first()) {
            (None, None) => true,
            (Some('*'), _) => go(&p[1..], t) || (!t.is_empty() && go(p, &t[1..])),
            (Some('?'), Some(_)) => go(&p[1..], &t[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &t[1..]),
            _ => false,
        }
    }
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    go(&p, &t)
}

/// Declares the mailbox and the revoke queue, stores the revokes that waited for a worker and
/// broadcasts them again, reads the revoke store, then answers commands until the connection
/// ends. `effects` gets what a command asks of the session (consumers to add or cancel).
pub async fn start(
    monitor: Arc<Monitor>,
    conn: &Connection,
    effects: mpsc::UnboundedSender<Effect>,
) -> Result<JoinHandle<()>, lapin::Error> {
    let channel = conn.create_channel().await?;
    declare(&channel, &monitor.hostname, monitor.broker.queue_type).await?;
    let waited = drain_revokes(&monitor, &channel).await?;
    if !waited.is_empty() {
        tracing::info!(ids = ?waited, "revokes sent while no worker listened: stored and broadcast again");
        broadcast_revoke(&channel, &monitor, &waited).await?;
    }
    if let Err(e) = monitor.revoked.sync().await {
        tracing::warn!(error = %e, "cannot read stored revokes; using those in memory");
    }
    let mine = channel
        .basic_consume(
            queue_name(&monitor.hostname).as_str().into(),
            format!("{}-pidbox", monitor.hostname).as_str().into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    let kept = channel
        .basic_consume(
            REVOKE_QUEUE.into(),
            format!("{}-revokes", monitor.hostname).as_str().into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    let mine = mine.map(|d| (true, d));
    let kept = kept.map(|d| (false, d));
    let mut both = futures::stream::select(mine, kept);
    Ok(tokio::spawn(async move {
        while let Some((own, delivery)) = both.next().await {
            let Ok(delivery) = delivery else { break };
            if own {
                answer(&monitor, &channel, &delivery, &effects).await;
            } else if let Ok(cmd) = Command::parse(&delivery.data)
                && let Some(ids) = revoke_ids(&cmd)
            {
                monitor.revoked.add(&ids).await;
            }
        }
    }))
}

async fn declare(
    channel: &Channel,
    hostname: &str,
    queue_type: crate::QueueType,
) -> Result<(), lapin::Error> {
    let transient = ExchangeDeclareOptions::default();
    channel
        .exchange_declare(
            EXCHANGE.into(),
            ExchangeKind::Fanout,
            transient,
            FieldTable::default(),
        )
        .await?;
    channel
        .exchange_declare(
            REPLY_EXCHANGE.into(),
            ExchangeKind::Direct,
            transient,
            FieldTable::default(),
        )
        .await?;
    channel
        .exchange_declare(
            super::event::EXCHANGE.into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    let mut args = FieldTable::default();
    args.insert("x-message-ttl".into(), AMQPValue::LongInt(QUEUE_TTL_MS));
    args.insert("x-expires".into(), AMQPValue::LongInt(QUEUE_EXPIRES_MS));
    let own = queue_name(hostname);
    channel
        .queue_declare(
            own.as_str().into(),
            QueueDeclareOptions {
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            args,
        )
        .await?;
    channel
        .queue_bind(
            own.as_str().into(),
            EXCHANGE.into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    // Quorum with QUEUE_TYPE=quorum: a classic durable queue lives on one node, and while that
    // node is down no worker can consume it, so none could start (found by the cluster test).
    let mut kept = crate::topology::dead_letter_queue_arguments(queue_type);
    kept.insert("x-max-length".into(), AMQPValue::LongInt(10_000));
    channel
        .queue_declare(
            REVOKE_QUEUE.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            kept,
        )
        .await?;
    channel
        .queue_bind(
            REVOKE_QUEUE.into(),
            EXCHANGE.into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(())
}

/// Takes every message waiting in [`REVOKE_QUEUE`], stores the revokes among them; the ids the
/// store had not seen.
pub async fn drain_revokes(
    monitor: &Monitor,
    channel: &Channel,
) -> Result<Vec<String>, lapin::Error> {
    let mut new = Vec::new();
    while let Some(message) = channel
        .basic_get(REVOKE_QUEUE.into(), BasicGetOptions { no_ack: true })
        .await?
    {
        if let Ok(cmd) = Command::parse(&message.delivery.data)
            && let Some(ids) = revoke_ids(&cmd)
        {
            new.extend(monitor.revoked.add(&ids).await);
        }
    }
    Ok(new)
}

fn revoke_ids(cmd: &Command) -> Option<Vec<String>> {
    if cmd.method != "revoke" && cmd.method != "terminate" {
        return None;
    }
    let ids = control::ids(cmd.arguments.get("task_id"));
    (!ids.is_empty()).then_some(ids)
}

async fn answer(
    monitor: &Monitor,
    channel: &Channel,
    delivery: &lapin::message::Delivery,
    effects: &mpsc::UnboundedSender<Effect>,
) {
    let headers = delivery
        .properties
        .headers()
        .as_ref()
        .map(crate::amqp::table_to_json)
        .unwrap_or_default();
    if let Some(clock) = headers.get("clock").and_then(Value::as_u64) {
        monitor.clock.adjust(clock);
    }
    let expires = headers
        .get("expires")
        .and_then(Value::as_f64)
        .unwrap_or(0.0);
    if expires > 0.0 && super::event::seconds(chrono::Utc::now()) > expires {
        return;
    }
    let cmd = match Command::parse(&delivery.data) {
        Ok(cmd) => cmd,
        Err(e) => {
            tracing::warn!(error = %e, "unreadable control message ignored");
            return;
        }
    };
    if !cmd.addressed_to(&monitor.hostname) {
        return;
    }
    tracing::debug!(method = %cmd.method, "control command");
    let (reply, effect) = control::handle(monitor, &cmd.method, &cmd.arguments).await;
    if let (Some(reply), Some((exchange, routing_key))) = (reply, &cmd.reply_to) {
        let body = json!({ monitor.hostname.clone(): reply });
        if let Err(e) = publish_reply(
            channel,
            monitor,
            exchange,
            routing_key,
            cmd.ticket.as_deref(),
            &body,
        )
        .await
        {
            tracing::warn!(error = %e, method = %cmd.method, "control reply not sent");
        }
    }
    match effect {
        Effect::None => {}
        Effect::Shutdown => monitor.shutdown(),
        other => {
            let _ = effects.send(other);
        }
    }
}

fn json_properties(headers: FieldTable) -> BasicProperties {
    BasicProperties::default()
        .with_content_type(ShortString::from("application/json"))
        .with_content_encoding(ShortString::from("utf-8"))
        .with_delivery_mode(1)
        .with_headers(headers)
}

async fn publish_reply(
    channel: &Channel,
    monitor: &Monitor,
    exchange: &str,
    routing_key: &str,
    ticket: Option<&str>,
    body: &Value,
) -> Result<(), lapin::Error> {
    let mut headers = FieldTable::default();
    if let Some(ticket) = ticket {
        headers.insert(
            "ticket".into(),
            AMQPValue::LongString(ticket.as_bytes().to_vec().into()),
        );
    }
    let clock = i64::try_from(monitor.clock.forward()).unwrap_or(i64::MAX);
    headers.insert("clock".into(), AMQPValue::LongLongInt(clock));
    let payload = serde_json::to_vec(body).unwrap_or_default();
    channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions::default(),
            &payload,
            json_properties(headers),
        )
        .await?;
    Ok(())
}

/// Broadcasts `revoke` of `ids` as `app.control.revoke` does (no reply asked).
pub async fn broadcast_revoke(
    channel: &Channel,
    monitor: &Monitor,
    ids: &[String],
) -> Result<(), lapin::Error> {
    let body = json!({
        "method": "revoke",
        "arguments": {"task_id": ids, "terminate": false, "signal": null},
        "destination": null,
        "pattern": null,
        "matcher": null,
    });
    let mut headers = FieldTable::default();
    let clock = i64::try_from(monitor.clock.forward()).unwrap_or(i64::MAX);
    headers.insert("clock".into(), AMQPValue::LongLongInt(clock));
    headers.insert("expires".into(), AMQPValue::LongLongInt(0));
    let payload = serde_json::to_vec(&body).unwrap_or_default();
    channel
        .basic_publish(
            EXCHANGE.into(),
            "".into(),
            BasicPublishOptions::default(),
            &payload,
            json_properties(headers),
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_reads_as_kombu_sends_it() {
        let body = br#"{"method": "revoke", "arguments": {"task_id": ["a"], "terminate": true},
            "destination": ["email@h"], "pattern": null, "matcher": null, "ticket": "t1",
            "reply_to": {"exchange": "reply.celery.pidbox", "routing_key": "k"}}"#;
        let cmd = Command::parse(body).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cmd.method, "revoke");
        assert_eq!(
            cmd.reply_to,
            Some(("reply.celery.pidbox".into(), "k".into()))
        );
        assert_eq!(cmd.ticket.as_deref(), Some("t1"));
        assert!(cmd.addressed_to("email@h"));
        assert!(!cmd.addressed_to("fds@h"));
        assert_eq!(revoke_ids(&cmd), Some(vec!["a".to_owned()]));
    }

    #[test]
    fn no_destination_is_everyone_and_a_glob_matches_hostnames() {
        let all = Command::parse(br#"{"method": "ping"}"#).unwrap_or_else(|e| panic!("{e}"));
        assert!(all.addressed_to("anyone@h"));
        let glob =
            Command::parse(br#"{"method": "ping", "pattern": "email@*", "matcher": "glob"}"#)
                .unwrap_or_else(|e| panic!("{e}"));
        assert!(glob.addressed_to("email@pod-1"));
        assert!(!glob.addressed_to("fds@pod-1"));
        assert!(Command::parse(b"[1]").is_err());
        assert!(Command::parse(br#"{"arguments": {}}"#).is_err());
    }
}
