//! What a worker holds now: each message it has taken, reserved (waiting for its rate-limit turn)
//! or active (running), as `inspect active` / `inspect reserved` report them, plus the counts
//! `inspect stats` and the heartbeats report (`total` per task, `processed`).
//!
//! A message is entered when its task is about to run and leaves when the [`Held`] guard is
//! dropped, whatever the outcome. The hot path is one short lock to enter and one to leave; the
//! JSON that `inspect` answers with is made only when asked.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use shopfds_protocol::TaskMessage;
use shopfds_protocol::pyjson;
use tokio_util::sync::CancellationToken;

struct Entry {
    message: Arc<TaskMessage>,
    queue: Arc<str>,
    redelivered: bool,
    /// Seconds since the epoch when the handler started; `None` while reserved.
    started: Option<f64>,
    /// Cancelled by `revoke(terminate=True)`.
    terminate: CancellationToken,
}

#[derive(Default)]
pub struct Inventory {
    entries: Mutex<HashMap<String, Entry>>,
    totals: Mutex<HashMap<String, u64>>,
    processed: AtomicU64,
}

/// A message's place in the inventory; leaves it when dropped.
pub struct Held<'a> {
    inventory: &'a Inventory,
    id: String,
    pub terminate: CancellationToken,
}

impl Held<'_> {
    /// The handler starts now: the message becomes active.
    pub fn start(&self) {
        let now = super::event::seconds(chrono::Utc::now());
        if let Ok(mut entries) = self.inventory.entries.lock()
            && let Some(entry) = entries.get_mut(&self.id)
        {
            entry.started = Some(now);
        }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if let Ok(mut entries) = self.inventory.entries.lock() {
            entries.remove(&self.id);
        }
    }
}

impl Inventory {
    /// Enters a message as reserved.
    pub fn hold(
        &self,
        message: &Arc<TaskMessage>,
        queue: &Arc<str>,
        redelivered: bool,
    ) -> Held<'_> {
        let terminate = CancellationToken::new();
        if let Ok(mut entries) = self.entries.lock() {
            entries.insert(
                message.id().to_owned(),
                Entry {
                    message: message.clone(),
                    queue: queue.clone(),
                    redelivered,
                    started: None,
                    terminate: terminate.clone(),
                },
            );
        }
        Held {
            inventory: self,
            id: message.id().to_owned(),
            terminate,
        }
    }

    /// Counts a task that ran (for `stats.total` and the heartbeats' `processed`).
    pub fn ran(&self, task: &str) {
        self.processed.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut totals) = self.totals.lock() {
            match totals.get_mut(task) {
                Some(n) => *n += 1,
                None => {
                    totals.insert(task.to_owned(), 1);
                }
            }
        }
    }

    pub fn processed(&self) -> u64 {
        self.processed.load(Ordering::Relaxed)
    }

    pub fn totals(&self) -> HashMap<String, u64> {
        self.totals.lock().map(|t| t.clone()).unwrap_or_default()
    }

    /// Tasks running now.
    pub fn active_count(&self) -> usize {
        self.entries
            .lock()
            .map(|e| e.values().filter(|e| e.started.is_some()).count())
            .unwrap_or(0)
    }

    /// `inspect active` (`active: true`) or `inspect reserved`: each as Celery's
    /// `Request.info()`; `safe` gives the argument reprs instead of the values.
    pub fn requests(&self, active: bool, hostname: &str, safe: bool) -> Vec<Value> {
        let Ok(entries) = self.entries.lock() else {
            return Vec::new();
        };
        let mut out: Vec<(f64, Value)> = entries
            .values()
            .filter(|e| e.started.is_some() == active)
            .map(|e| (e.started.unwrap_or(0.0), info(e, hostname, safe)))
            .collect();
        out.sort_by(|a, b| a.0.total_cmp(&b.0));
        out.into_iter().map(|(_, v)| v).collect()
    }

    /// Cancels the running or reserved tasks among `ids`; the ids it knew.
    pub fn terminate(&self, ids: &[String]) -> Vec<String> {
        let Ok(entries) = self.entries.lock() else {
            return Vec::new();
        };
        ids.iter()
            .filter(|id| {
                entries.get(id.as_str()).is_some_and(|e| {
                    e.terminate.cancel();
                    true
                })
            })
            .cloned()
            .collect()
    }

    /// `query_task`: `{id: [state, info]}` of the ids held here.
    pub fn query(&self, ids: &[String], hostname: &str) -> Value {
        let Ok(entries) = self.entries.lock() else {
            return json!({});
        };
        let map = ids
            .iter()
            .filter_map(|id| {
                let e = entries.get(id.as_str())?;
                let state = if e.started.is_some() {
                    "active"
                } else {
                    "reserved"
                };
                Some((id.clone(), json!([state, info(e, hostname, false)])))
            })
            .collect();
        Value::Object(map)
    }
}

fn info(e: &Entry, hostname: &str, safe: bool) -> Value {
    let m = &e.message;
    let (args, kwargs) = if safe {
        (
            json!(
                m.headers
                    .argsrepr
                    .clone()
                    .unwrap_or_else(|| pyjson::repr_args(&m.args))
            ),
            json!(
                m.headers
                    .kwargsrepr
                    .clone()
                    .unwrap_or_else(|| pyjson::repr(&Value::Object(m.kwargs.clone())))
            ),
        )
    } else {
        (json!(m.args), Value::Object(m.kwargs.clone()))
    };
    json!({
        "id": m.id(),
        "name": m.task(),
        "args": args,
        "kwargs": kwargs,
        "type": m.task(),
        "hostname": hostname,
        "time_start": e.started,
        "acknowledged": false,
        "delivery_info": {
            "exchange": &*e.queue,
            "routing_key": &*e.queue,
            "priority": m.properties.priority,
            "redelivered": e.redelivered,
        },
        "worker_pid": std::process::id(),
    })
}
