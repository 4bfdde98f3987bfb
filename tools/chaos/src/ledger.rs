//! The ledger: what the run left behind, read from PostgreSQL (orders, items, outbox, task
//! states, once-only records), the SMTP sink's mail directory and the broker's queues, matched
//! against the answers the load received.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::SystemTime;

use anyhow::Context;
use lapin::options::{BasicGetOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use shopfds_protocol::names;
use sqlx::PgPool;

use crate::load::{Outcome, Posted};

/// States a task never leaves.
pub const FINAL_STATES: [&str; 4] = ["SUCCESS", "FAILURE", "REJECTED", "REVOKED"];

/// The accepted orders of a run and their tasks, from the load's answers.
#[derive(Debug, Default)]
pub struct Accepted {
    /// Order id → status answered.
    pub orders: HashMap<String, String>,
    pub task_ids: Vec<String>,
}

impl Accepted {
    pub fn of(posted: &[Posted]) -> Accepted {
        let mut accepted = Accepted::default();
        for p in posted {
            if let Outcome::Accepted {
                order_id,
                status,
                tasks,
                ..
            } = &p.outcome
            {
                accepted.orders.insert(order_id.clone(), status.clone());
                accepted
                    .task_ids
                    .extend(tasks.iter().map(|(_, id)| id.clone()));
            }
        }
        accepted
    }
}

/// The run's orders as stored.
#[derive(Debug, Default)]
pub struct Orders {
    /// Order id → (status now, number of item rows).
    pub rows: HashMap<String, (String, i64)>,
    /// Outbox rows of the run's tasks not yet confirmed by the broker.
    pub unsent_outbox: i64,
    /// Task id → state.
    pub states: HashMap<String, String>,
    /// Orders with a once-only confirmation record (`order-confirmation:<id>`).
    pub confirmations_recorded: HashSet<String>,
    /// Orders with a tracking number from the shipping partner.
    pub shipped: HashSet<String>,
    /// Orders with an invoice.
    pub invoiced: HashSet<String>,
}

pub async fn orders(db: &PgPool, prefix: &str, accepted: &Accepted) -> anyhow::Result<Orders> {
    let rows: Vec<(String, String, i64, bool, bool)> = sqlx::query_as(
        "SELECT o.id::text, o.status, \
                (SELECT count(*) FROM order_items i WHERE i.order_id = o.id), \
                o.tracking_number IS NOT NULL, o.invoice_url IS NOT NULL \
         FROM orders o WHERE starts_with(o.customer_id, $1)",
    )
    .bind(prefix)
    .fetch_all(db)
    .await
    .context("reading the run's orders")?;
    let unsent_outbox: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM outbox WHERE sent_at IS NULL AND task_id = ANY($1)",
    )
    .bind(&accepted.task_ids)
    .fetch_one(db)
    .await
    .context("reading the outbox")?;
    let states: Vec<(String, String)> =
        sqlx::query_as("SELECT task_id, state FROM task_results WHERE task_id = ANY($1)")
            .bind(&accepted.task_ids)
            .fetch_all(db)
            .await
            .context("reading task states")?;
    let keys: Vec<String> = accepted
        .orders
        .keys()
        .map(|id| format!("order-confirmation:{id}"))
        .collect();
    let recorded: Vec<String> = sqlx::query_scalar(
        "SELECT substr(key, length('order-confirmation:') + 1) FROM processed_tasks \
         WHERE key = ANY($1)",
    )
    .bind(&keys)
    .fetch_all(db)
    .await
    .context("reading once-only records")?;
    let with = |pick: fn(&(String, String, i64, bool, bool)) -> bool| -> HashSet<String> {
        rows.iter()
            .filter(|r| pick(r))
            .map(|r| r.0.clone())
            .collect()
    };
    let shipped = with(|r| r.3);
    let invoiced = with(|r| r.4);
    Ok(Orders {
        rows: rows
            .into_iter()
            .map(|(id, status, items, _, _)| (id, (status, items)))
            .collect(),
        shipped,
        invoiced,
        unsent_outbox,
        states: states.into_iter().collect(),
        confirmations_recorded: recorded.into_iter().collect(),
    })
}

impl Orders {
    /// Accepted tasks not (yet) in a final state, those without a state row included.
    pub fn non_final(&self, accepted: &Accepted) -> usize {
        accepted
            .task_ids
            .iter()
            .filter(|id| {
                self.states
                    .get(*id)
                    .is_none_or(|s| !FINAL_STATES.contains(&s.as_str()))
            })
            .count()
    }

    pub fn in_state(&self, state: &str) -> usize {
        self.states.values().filter(|s| *s == state).count()
    }
}

/// The mails an order gets, by the prefix of their Message-ID (`<prefix><order id>@…`, see the
/// README): its confirmation and its invoice.
pub const MAIL_KINDS: [(&str, &str); 2] = [
    ("confirmation", "order-confirmation."),
    ("invoice", "invoice."),
];

/// Mails received, by kind (as [`MAIL_KINDS`] names them) and order id, with their arrival
/// times (the files' mtimes).
#[derive(Debug, Default)]
pub struct Mails {
    pub by_kind: HashMap<&'static str, HashMap<String, Vec<SystemTime>>>,
    /// Messages whose Message-ID names no order of this run.
    pub unmatched: usize,
}

impl Mails {
    /// The copies of `kind`'s mail to `order`, by arrival time.
    pub fn of(&self, kind: &str, order: &str) -> &[SystemTime] {
        self.by_kind
            .get(kind)
            .and_then(|orders| orders.get(order))
            .map_or(&[], Vec::as_slice)
    }
}

/// Reads the SMTP sink's directory (`NNNNNN.eml`) and sorts each message by its Message-ID.
pub fn mails(dir: &Path, accepted: &Accepted) -> anyhow::Result<Mails> {
    let mut mails = Mails::default();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "eml") {
            continue;
        }
        let raw = std::fs::read(&path)?;
        let arrived = std::fs::metadata(&path)?.modified()?;
        let mail = shopfds_testkit::smtp::ReceivedMail::parse(String::new(), Vec::new(), raw)?;
        let id = mail
            .header("Message-ID")
            .map(|id| id.trim().trim_start_matches('<').to_owned())
            .unwrap_or_default();
        let matched = MAIL_KINDS.iter().find_map(|(kind, prefix)| {
            id.strip_prefix(prefix)
                .and_then(|rest| rest.split('@').next())
                .filter(|order| accepted.orders.contains_key(*order))
                .map(|order| (*kind, order.to_owned()))
        });
        match matched {
            Some((kind, order)) => mails
                .by_kind
                .entry(kind)
                .or_default()
                .entry(order)
                .or_default()
                .push(arrived),
            None => mails.unmatched += 1,
        }
    }
    Ok(mails)
}

/// The broker's side: dead letters (and whether each carries its reason) and messages left in
/// the work queues.
#[derive(Debug, Default)]
pub struct Queues {
    pub dead_letters: usize,
    pub without_reason: usize,
    /// `queue: reason` of the first few dead letters, for the report.
    pub reasons: Vec<String>,
    pub left_in_work_queues: u64,
}

/// Reads every message of `failed.<queue>` of each work queue without acking it (closing the
/// channel puts them back) and counts the work queues' messages.
pub async fn queues(broker_url: &str) -> anyhow::Result<Queues> {
    let conn = lapin::Connection::connect(broker_url, lapin::ConnectionProperties::default())
        .await
        .context("connecting to the broker to read its queues")?;
    let mut out = Queues::default();
    for queue in names::WORK_QUEUES {
        // A passive declare of a queue that does not exist closes the channel: one per queue.
        let channel = conn.create_channel().await?;
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        if let Ok(q) = channel
            .queue_declare(queue.into(), passive, FieldTable::default())
            .await
        {
            out.left_in_work_queues += u64::from(q.message_count());
        }
        let channel = conn.create_channel().await?;
        let failed = names::dead_letter_queue(queue);
        while let Ok(Some(message)) = channel
            .basic_get(failed.as_str().into(), BasicGetOptions { no_ack: false })
            .await
        {
            let delivery = message.delivery;
            let reason = delivery
                .properties
                .headers()
                .as_ref()
                .and_then(|h| match h.inner().get(names::REASON_HEADER)? {
                    AMQPValue::LongString(s) => {
                        Some(String::from_utf8_lossy(s.as_bytes()).into_owned())
                    }
                    AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
                    _ => None,
                })
                .filter(|r| !r.trim().is_empty());
            out.dead_letters += 1;
            match reason {
                Some(reason) if out.reasons.len() < 5 => {
                    let reason: String = reason.chars().take(200).collect();
                    out.reasons.push(format!("{failed}: {reason}"));
                }
                Some(_) => {}
                None => out.without_reason += 1,
            }
        }
        // Unacked, so the broker keeps them.
        let _ = channel.close(200, "read".into()).await;
    }
    let _ = conn.close(200, "ledger read".into()).await;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail(message_id: &str) -> String {
        format!(
            "From: ShopFDS <noreply@shopfds.com>\r\nTo: a@example.com\r\nSubject: Order\r\n\
             Message-ID: {message_id}\r\n\r\nThanks.\r\n"
        )
    }

    #[test]
    fn mails_are_counted_per_order_by_message_id_and_strangers_apart() {
        let dir = tempfile::tempdir().unwrap();
        let order = "8ba5524c-97e3-4d6e-8560-98254b2c8d41";
        let files = [
            format!("<order-confirmation.{order}@shopfds.com>"),
            format!("<order-confirmation.{order}@shopfds.com>"),
            format!("<invoice.{order}@shopfds.com>"),
            "<order-confirmation.00000000-0000-0000-0000-000000000000@shopfds.com>".to_owned(),
            "<something-else@shopfds.com>".to_owned(),
        ];
        for (i, id) in files.iter().enumerate() {
            std::fs::write(dir.path().join(format!("{i:06}.eml")), mail(id)).unwrap();
            std::fs::write(dir.path().join(format!("{i:06}.json")), "{}").unwrap();
        }
        let mut accepted = Accepted::default();
        accepted
            .orders
            .insert(order.to_owned(), "accepted".to_owned());
        let mails = mails(dir.path(), &accepted).unwrap();
        assert_eq!(mails.of("confirmation", order).len(), 2);
        assert_eq!(mails.of("invoice", order).len(), 1);
        assert_eq!(mails.by_kind["confirmation"].len(), 1);
        assert_eq!(mails.unmatched, 2);
    }
}
