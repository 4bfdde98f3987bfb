//! The dead-letter workbench: what the HTTP API and the CLI both call.
//!
//! - [`Workbench::queues`]: each work queue's `failed.<queue>` and `parked.<queue>` depths;
//! - [`Workbench::list`]: a page of a dead-letter queue's messages (task, id, arguments, reason,
//!   first failure, retries, replays), filtered by task name and reason. Reading takes the
//!   messages with `basic.get` without acking them and closes the channel, which puts them back:
//!   nothing is consumed, and a page costs `offset + limit` reads (at most [`MOST_READ`]);
//! - [`Workbench::replay`]: one message (by task id), a filtered set or all, back to its work
//!   queue's exchange and routing key with its id, headers and `traceparent`, at most
//!   `DLQ_REPLAY_RATE` a second, optionally with edited keyword arguments (checked against the
//!   task's argument type). Each copy is published with a publisher confirm, its lineage written
//!   to `dlq_replays`, and only then is the dead letter acked: a crash half-way leaves every
//!   message in one of the two queues (at worst in both, which the workers' idempotency absorbs).
//!   A replay count travels in `x-shopfds-replays`; a message past `DLQ_MAX_REPLAYS` goes to
//!   `parked.<queue>` instead, for a person, so a poison message cannot loop;
//! - [`Workbench::purge`]: empties a dead-letter queue, only when told its name again.

use std::time::Duration;

use lapin::Channel;
use lapin::message::BasicGetMessage;
use lapin::options::{BasicAckOptions, BasicGetOptions, QueueDeclareOptions, QueuePurgeOptions};
use lapin::types::FieldTable;
use serde::Serialize;
use serde_json::{Map, Value, json};
use shopfds_broker::amqp::message_properties;
use shopfds_broker::runtime::copies;
use shopfds_broker::{BrokerSettings, Outgoing, Publisher};
use shopfds_protocol::names::{self, FAILED_AT_HEADER, ORIGINAL_QUEUE_HEADER, REASON_HEADER};
use shopfds_store::{ReplayRecord, Store};

/// The header counting how often a message was replayed out of a dead-letter queue.
pub const REPLAYS_HEADER: &str = "x-shopfds-replays";

/// The most messages one listing reads.
pub const MOST_READ: usize = 1000;

/// `parked.<queue>`: where a message replayed too often waits for a person.
pub fn parked_queue(queue: &str) -> String {
    format!("parked.{queue}")
}

/// A work queue named by itself or by its dead-letter queue (`email`, `failed.email`).
pub fn work_queue(name: &str) -> Result<&'static str, WorkbenchError> {
    let bare = name.strip_prefix("failed.").unwrap_or(name);
    names::WORK_QUEUES
        .iter()
        .find(|q| **q == bare)
        .copied()
        .ok_or_else(|| {
            WorkbenchError::Invalid(format!(
                "{name:?} is not a work queue or its dead-letter queue ({})",
                names::WORK_QUEUES.join(", ")
            ))
        })
}

#[derive(Debug, thiserror::Error)]
pub enum WorkbenchError {
    /// The request is wrong (a queue that does not exist, an edit that does not fit the task).
    #[error("{0}")]
    Invalid(String),
    #[error("broker: {0}")]
    Broker(String),
    #[error("database: {0}")]
    Database(#[from] shopfds_store::StoreError),
}

impl From<lapin::Error> for WorkbenchError {
    fn from(e: lapin::Error) -> Self {
        WorkbenchError::Broker(e.to_string())
    }
}

/// One dead-letter queue and its parked queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueueDepth {
    pub queue: String,
    pub dead_letters: u32,
    pub parked: u32,
}

/// Which dead letters a listing or a replay takes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only this task id.
    pub id: Option<String>,
    /// Only this task name.
    pub task: Option<String>,
    /// Only messages whose reason contains this text.
    pub reason: Option<String>,
}

impl Filter {
    fn matches(&self, letter: &DeadLetter) -> bool {
        self.id
            .as_ref()
            .is_none_or(|id| letter.id.as_ref() == Some(id))
            && self
                .task
                .as_ref()
                .is_none_or(|t| letter.task.as_ref() == Some(t))
            && self.reason.as_ref().is_none_or(|r| {
                letter
                    .reason
                    .as_deref()
                    .is_some_and(|reason| reason.contains(r.as_str()))
            })
    }

    fn is_empty(&self) -> bool {
        self.id.is_none() && self.task.is_none() && self.reason.is_none()
    }
}

/// A dead letter as a person reads it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadLetter {
    /// Its place in the queue when read (0 is the head).
    pub position: usize,
    pub task: Option<String>,
    pub id: Option<String>,
    pub args: Value,
    pub kwargs: Value,
    pub reason: Option<String>,
    pub failed_at: Option<String>,
    pub retries: i64,
    pub replays: u32,
}

impl DeadLetter {
    fn read(position: usize, message: &BasicGetMessage) -> DeadLetter {
        let headers = copies::headers(&message.delivery);
        let text = |name: &str| headers.get(name).and_then(Value::as_str).map(str::to_owned);
        let body: Option<Value> = serde_json::from_slice(&message.delivery.data).ok();
        let part = |i: usize| {
            body.as_ref()
                .and_then(|b| b.get(i))
                .cloned()
                .unwrap_or(Value::Null)
        };
        DeadLetter {
            position,
            task: text("task"),
            id: text("id").or_else(|| {
                message
                    .delivery
                    .properties
                    .correlation_id()
                    .as_ref()
                    .map(|c| c.to_string())
            }),
            args: part(0),
            kwargs: part(1),
            reason: text(REASON_HEADER).or_else(|| rabbitmq_reason(&headers)),
            failed_at: text(FAILED_AT_HEADER),
            retries: headers.get("retries").and_then(Value::as_i64).unwrap_or(0),
            replays: replays(&headers),
        }
    }
}

/// The reason RabbitMQ gives when it dead-lettered the message itself (`x-death`'s first entry:
/// `rejected`, `expired`, `maxlen`, `delivery_limit`).
fn rabbitmq_reason(headers: &Map<String, Value>) -> Option<String> {
    let death = headers.get("x-death")?.as_array()?.first()?;
    let reason = death.get("reason")?.as_str()?;
    let queue = death.get("queue").and_then(Value::as_str).unwrap_or("?");
    Some(format!("dead-lettered by RabbitMQ: {reason} in {queue}"))
}

fn replays(headers: &Map<String, Value>) -> u32 {
    headers
        .get(REPLAYS_HEADER)
        .and_then(Value::as_u64)
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(0)
}

/// New keyword arguments for one message of a replay.
#[derive(Debug, Clone, PartialEq)]
pub struct Edit {
    pub id: String,
    pub kwargs: Map<String, Value>,
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReplayReport {
    /// Task ids sent back to their work queue.
    pub replayed: Vec<String>,
    /// Task ids moved to `parked.<queue>` (replayed too often).
    pub parked: Vec<String>,
    /// Messages read and left in the dead-letter queue (not selected).
    pub left: usize,
}

/// The replay settings: `DLQ_REPLAY_RATE`, `DLQ_MAX_REPLAYS`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Messages replayed per second at most.
    pub rate: f64,
    /// A message replayed this many times is parked instead of replayed again.
    pub max_replays: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            rate: 50.0,
            max_replays: 3,
        }
    }
}

/// The workbench. Each call opens a broker connection of its own and closes it (dead-letter work
/// is rare and asked for by a person: a broker restart between two calls costs nothing).
pub struct Workbench {
    broker: BrokerSettings,
    store: Store,
    limits: Limits,
}

impl Workbench {
    pub fn new(broker: BrokerSettings, store: Store, limits: Limits) -> Workbench {
        Workbench {
            broker,
            store,
            limits,
        }
    }

    /// A connection with the topology and every `parked.<queue>` declared.
    pub(crate) async fn connect(&self) -> Result<lapin::Connection, WorkbenchError> {
        let conn = shopfds_broker::amqp::connect(&self.broker)
            .await
            .map_err(|e| WorkbenchError::Broker(e.to_string()))?;
        let channel = conn.create_channel().await?;
        shopfds_broker::topology::declare_for(&channel, &self.broker)
            .await
            .map_err(|e| WorkbenchError::Broker(e.to_string()))?;
        for queue in names::WORK_QUEUES {
            channel
                .queue_declare(
                    parked_queue(queue).as_str().into(),
                    QueueDeclareOptions {
                        durable: true,
                        ..QueueDeclareOptions::default()
                    },
                    // Quorum with QUEUE_TYPE=quorum, as the dead-letter queues.
                    shopfds_broker::topology::dead_letter_queue_arguments(self.broker.queue_type),
                )
                .await?;
        }
        let _ = channel.close(200, "declared".into()).await;
        Ok(conn)
    }

    /// Every dead-letter queue's depth and its parked queue's.
    pub async fn queues(&self) -> Result<Vec<QueueDepth>, WorkbenchError> {
        let conn = self.connect().await?;
        let out = depths_on(&conn).await;
        let _ = conn.close(200, "done".into()).await;
        out
    }

    /// The messages of `queue`'s dead-letter queue that match `filter`, skipping `offset` of
    /// them, at most `limit`; nothing is consumed.
    pub async fn list(
        &self,
        queue: &str,
        filter: &Filter,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, WorkbenchError> {
        let dlq = names::dead_letter_queue(work_queue(queue)?);
        let conn = self.connect().await?;
        let channel = conn.create_channel().await?;
        let depth = depth(&conn, &dlq).await? as usize;
        let mut matched = Vec::new();
        for position in 0..depth.min(MOST_READ) {
            let Some(message) = get(&channel, &dlq).await? else {
                break;
            };
            let letter = DeadLetter::read(position, &message);
            if filter.matches(&letter) {
                matched.push(letter);
                if matched.len() >= offset.saturating_add(limit) {
                    break;
                }
            }
        }
        // Unacked: closing the channel puts every message back.
        let _ = channel.close(200, "read".into()).await;
        let _ = conn.close(200, "done".into()).await;
        Ok(matched.into_iter().skip(offset).collect())
    }

    /// Replays the dead letters of `queue` that match `filter` (all of them when the filter is
    /// empty and `all` is set; an empty filter without `all` is refused), with `edit` applied
    /// to the message it names, recording `who` in the lineage.
    pub async fn replay(
        &self,
        queue: &str,
        filter: &Filter,
        all: bool,
        edit: Option<&Edit>,
        who: &str,
    ) -> Result<ReplayReport, WorkbenchError> {
        let queue = work_queue(queue)?;
        if filter.is_empty() && !all {
            return Err(WorkbenchError::Invalid(
                "say which messages: a task id, a task name, a reason, or all".to_owned(),
            ));
        }
        let dlq = names::dead_letter_queue(queue);
        let conn = self.connect().await?;
        let publisher = Publisher::new(&conn)
            .await
            .map_err(|e| WorkbenchError::Broker(e.to_string()))?;
        let channel = conn.create_channel().await?;
        let depth = depth(&conn, &dlq).await? as usize;
        let pause = Duration::from_secs_f64(1.0 / self.limits.rate.max(0.001));
        let mut report = ReplayReport::default();
        for position in 0..depth {
            let Some(message) = get(&channel, &dlq).await? else {
                break;
            };
            let letter = DeadLetter::read(position, &message);
            if !filter.matches(&letter) {
                report.left += 1;
                continue;
            }
            let id = letter.id.clone().unwrap_or_default();
            let edit = edit.filter(|e| letter.id.as_deref() == Some(e.id.as_str()));
            let (copy, edited) = match self.copy(queue, &message, &letter, edit) {
                Ok(copy) => copy,
                Err(e) => {
                    let _ = conn.close(200, "refused".into()).await;
                    return Err(e);
                }
            };
            let parked = letter.replays >= self.limits.max_replays;
            publisher
                .publish(&copy)
                .await
                .map_err(|e| WorkbenchError::Broker(e.to_string()))?;
            self.store
                .dlq_replays()
                .record(&ReplayRecord {
                    task_id: letter.id.clone(),
                    task: letter.task.clone(),
                    dead_letter_queue: dlq.clone(),
                    outcome: if parked { "parked" } else { "replayed" }.to_owned(),
                    replays: i32::try_from(letter.replays.saturating_add(1)).unwrap_or(i32::MAX),
                    reason: letter.reason.clone(),
                    original_args: Some(json!([letter.args, letter.kwargs])),
                    edited_args: edited,
                    replayed_by: who.to_owned(),
                })
                .await?;
            channel
                .basic_ack(message.delivery.delivery_tag, BasicAckOptions::default())
                .await?;
            tracing::info!(task_id = %id, queue, parked, who, "dead letter taken out");
            if parked {
                report.parked.push(id);
            } else {
                report.replayed.push(id);
            }
            tokio::time::sleep(pause).await;
        }
        // What was not selected goes back.
        let _ = channel.close(200, "replayed".into()).await;
        let _ = conn.close(200, "done".into()).await;
        Ok(report)
    }

    /// Empties `queue`'s dead-letter queue when `confirm` names it (`failed.<queue>`); the
    /// messages purged.
    pub async fn purge(&self, queue: &str, confirm: &str) -> Result<u32, WorkbenchError> {
        let dlq = names::dead_letter_queue(work_queue(queue)?);
        if confirm != dlq {
            return Err(WorkbenchError::Invalid(format!(
                "purging deletes every message of {dlq} for good: confirm with its name ({dlq})"
            )));
        }
        let conn = self.connect().await?;
        let channel = conn.create_channel().await?;
        let purged = channel
            .queue_purge(dlq.as_str().into(), QueuePurgeOptions::default())
            .await?;
        let _ = conn.close(200, "purged".into()).await;
        tracing::warn!(queue = %dlq, purged, "dead-letter queue purged");
        Ok(purged)
    }

    /// The copy to publish: to the work queue, or to `parked.<queue>` past the cap; the replay
    /// count one higher; edited arguments checked against the task. Also the edited `[args,
    /// kwargs]`, for the lineage.
    fn copy(
        &self,
        queue: &str,
        message: &BasicGetMessage,
        letter: &DeadLetter,
        edit: Option<&Edit>,
    ) -> Result<(Outgoing, Option<Value>), WorkbenchError> {
        let mut headers = copies::headers(&message.delivery);
        headers.retain(|name, _| {
            !(name == "x-death"
                || name.starts_with("x-first-death-")
                || name.starts_with("x-last-death-"))
        });
        headers.insert(
            REPLAYS_HEADER.to_owned(),
            json!(letter.replays.saturating_add(1)),
        );
        headers.insert(ORIGINAL_QUEUE_HEADER.to_owned(), json!(queue));
        let mut body = message.delivery.data.clone();
        let mut edited = None;
        if let Some(edit) = edit {
            let task = letter.task.as_deref().unwrap_or_default();
            let args: Vec<Value> = letter.args.as_array().cloned().unwrap_or_default();
            shopfds_protocol::check_arguments(task, &args, &edit.kwargs).map_err(|e| {
                WorkbenchError::Invalid(format!("the edited arguments do not fit {task}: {e}"))
            })?;
            let mut parts: Vec<Value> = serde_json::from_slice(&body).map_err(|e| {
                WorkbenchError::Invalid(format!("the message's body is not a JSON call: {e}"))
            })?;
            if parts.len() < 2 {
                return Err(WorkbenchError::Invalid(
                    "the message's body is not [args, kwargs, embed]".to_owned(),
                ));
            }
            parts[1] = Value::Object(edit.kwargs.clone());
            body = serde_json::to_vec(&parts)
                .map_err(|e| WorkbenchError::Invalid(format!("re-encoding the body: {e}")))?;
            headers.insert(
                "kwargsrepr".to_owned(),
                json!(shopfds_protocol::pyjson::repr(&Value::Object(
                    edit.kwargs.clone()
                ))),
            );
            edited = Some(json!([letter.args, edit.kwargs]));
        }
        let parked = letter.replays >= self.limits.max_replays;
        let (exchange, routing_key) = if parked {
            (String::new(), parked_queue(queue))
        } else {
            (queue.to_owned(), queue.to_owned())
        };
        Ok((
            Outgoing {
                exchange,
                routing_key,
                headers,
                properties: message_properties(&message.delivery.properties),
                body,
            },
            edited,
        ))
    }
}

/// Every dead-letter queue's depth and its parked queue's, on a connection made by
/// [`Workbench::connect`].
pub(crate) async fn depths_on(conn: &lapin::Connection) -> Result<Vec<QueueDepth>, WorkbenchError> {
    let mut out = Vec::new();
    for queue in names::WORK_QUEUES {
        out.push(QueueDepth {
            queue: queue.to_owned(),
            dead_letters: depth(conn, &names::dead_letter_queue(queue)).await?,
            parked: depth(conn, &parked_queue(queue)).await?,
        });
    }
    Ok(out)
}

/// A queue's message count (0 when it does not exist).
async fn depth(conn: &lapin::Connection, queue: &str) -> Result<u32, WorkbenchError> {
    // A passive declare of a missing queue closes its channel: a channel of its own.
    let channel = conn.create_channel().await?;
    let declared = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await;
    let _ = channel.close(200, "depth".into()).await;
    Ok(declared.map(|q| q.message_count()).unwrap_or(0))
}

async fn get(channel: &Channel, queue: &str) -> Result<Option<BasicGetMessage>, WorkbenchError> {
    Ok(channel
        .basic_get(queue.into(), BasicGetOptions { no_ack: false })
        .await?)
}
