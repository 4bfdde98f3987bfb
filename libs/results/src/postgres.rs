//! The PostgreSQL result backend: `task_results` rows written in batches, chords counted in
//! `chords` / `chord_parts` (see `shopfds_store::chords`).
//!
//! Every [`ResultBackend::record`] call queues its update to one writer task and waits for its
//! batch. The writer takes everything queued (up to `max_rows`), keeps one update per task id
//! (a ready state over a non-ready one, otherwise the later one: the same rule the SQL applies
//! against the stored row, so a late STARTED never hides SUCCESS), writes them in one statement
//! and answers every waiter with the outcome. While a statement is in flight the next batch
//! fills: under load, hundreds of tasks share one commit; alone, a task waits for one round
//! trip. A batch that fails is answered with the error to each of its waiters (the runtime then
//! requeues the messages whose final state was not written).

use std::collections::HashMap;
use std::time::Duration;

use futures::FutureExt;
use serde_json::Value;
use shopfds_broker::runtime::backend::{
    BackendError, BackendFuture, ChordProgress, PublishBody, ResultBackend, StateChange,
};
use shopfds_protocol::TaskMessage;
use shopfds_protocol::result::{TaskRecord, TaskStateUpdate};
use shopfds_store::{ChordError, ChordPart, Store};
use tokio::sync::{mpsc, oneshot};

const NAME: &str = "postgres";

/// How the writer batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSettings {
    /// At most this many rows in one statement (`RESULT_BATCH_MAX_ROWS`, default 500).
    pub max_rows: usize,
    /// After the first update of a batch arrives, wait this long for more before writing
    /// (`RESULT_BATCH_LINGER_MS`, default 0: write at once, and let the next batch fill while
    /// this one is written).
    pub linger: Duration,
}

impl Default for BatchSettings {
    fn default() -> Self {
        BatchSettings {
            max_rows: 500,
            linger: Duration::ZERO,
        }
    }
}

struct Job {
    update: TaskStateUpdate,
    done: oneshot::Sender<Result<(), String>>,
}

/// The PostgreSQL backend. Cheap to share behind an `Arc`; its writer stops when the last handle
/// is dropped, after writing what was queued.
pub struct PostgresBackend {
    store: Store,
    jobs: mpsc::UnboundedSender<Job>,
}

impl PostgresBackend {
    /// Starts the writer on the current Tokio runtime.
    pub fn new(store: Store, batch: BatchSettings) -> Self {
        let (jobs, queue) = mpsc::unbounded_channel();
        tokio::spawn(writer(store.clone(), queue, batch));
        PostgresBackend { store, jobs }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }
}

impl ResultBackend for PostgresBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn record(&self, change: StateChange) -> BackendFuture<'_, ()> {
        let (done, answer) = oneshot::channel();
        let queued = self.jobs.send(Job {
            update: change.update,
            done,
        });
        async move {
            if queued.is_err() {
                return Err(BackendError::new(NAME, "the result writer has stopped"));
            }
            match answer.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(BackendError::new(NAME, e)),
                Err(_) => Err(BackendError::new(NAME, "the result writer has stopped")),
            }
        }
        .boxed()
    }

    fn get<'a>(&'a self, task_id: &'a str) -> BackendFuture<'a, Option<TaskRecord>> {
        async move {
            self.store
                .results()
                .get(task_id)
                .await
                .map_err(|e| BackendError::new(NAME, e))
        }
        .boxed()
    }

    fn ping(&self) -> BackendFuture<'_, ()> {
        async move {
            self.store
                .ping()
                .await
                .map_err(|e| BackendError::new(NAME, e))
        }
        .boxed()
    }

    fn check_chord(&self, msg: &TaskMessage) -> Result<(), String> {
        match &msg.embed.chord {
            Some(body) if body.chord_size().is_none() => Err(format!(
                "the postgres result backend cannot complete this chord: its body {:?} carries \
                 no chord_size (a stock Celery client counts its chords in its own result \
                 backend); run this worker with the client's backend (RESULT_BACKEND=redis://…) \
                 to complete it",
                body.task
            )),
            _ => Ok(()),
        }
    }

    fn chord_part_succeeded<'a>(
        &'a self,
        msg: &'a TaskMessage,
        result: &'a Value,
        publish_body: PublishBody<'a>,
    ) -> BackendFuture<'a, ChordProgress> {
        async move {
            let (Some(body), Some(group_id)) = (&msg.embed.chord, &msg.headers.group) else {
                return Ok(ChordProgress::Counted {
                    done: 0,
                    size: None,
                });
            };
            let size = body
                .chord_size()
                .ok_or_else(|| BackendError::new(NAME, "chord part without chord_size"))?;
            let part = ChordPart {
                group_id,
                size,
                task_id: msg.id(),
                group_index: msg.headers.group_index,
                result,
            };
            let progress = self
                .store
                .chords()
                .part_succeeded(&part, |results| async move {
                    publish_body(results).await.map_err(PublishFailed)
                })
                .await;
            match progress {
                Ok(shopfds_store::ChordProgress::Counted { done, size }) => {
                    Ok(ChordProgress::Counted {
                        done,
                        size: Some(size),
                    })
                }
                Ok(shopfds_store::ChordProgress::Completed { results }) => {
                    Ok(ChordProgress::Completed {
                        parts: results.len(),
                    })
                }
                Ok(shopfds_store::ChordProgress::AlreadyCounted) => {
                    Ok(ChordProgress::AlreadyCounted)
                }
                Ok(shopfds_store::ChordProgress::ChordFailed) => Ok(ChordProgress::ChordFailed),
                Err(ChordError::Publish(e)) => Err(BackendError::new(NAME, e)),
                Err(ChordError::Store(e)) => Err(BackendError::new(NAME, e)),
            }
        }
        .boxed()
    }

    fn chord_part_failed<'a>(
        &'a self,
        msg: &'a TaskMessage,
        reason: &'a str,
    ) -> BackendFuture<'a, bool> {
        async move {
            let (Some(body), Some(group_id)) = (&msg.embed.chord, &msg.headers.group) else {
                return Ok(false);
            };
            let size = body.chord_size().unwrap_or(1);
            self.store
                .chords()
                .part_failed(group_id, size, msg.id(), reason)
                .await
                .map_err(|e| BackendError::new(NAME, e))
        }
        .boxed()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct PublishFailed(String);

/// The writer: batches until every sender is gone.
async fn writer(store: Store, mut queue: mpsc::UnboundedReceiver<Job>, batch: BatchSettings) {
    let max_rows = batch.max_rows.max(1);
    let mut jobs = Vec::with_capacity(max_rows);
    while queue.recv_many(&mut jobs, max_rows).await > 0 {
        if !batch.linger.is_zero() && jobs.len() < max_rows {
            let deadline = tokio::time::Instant::now() + batch.linger;
            while jobs.len() < max_rows {
                let room = max_rows - jobs.len();
                match tokio::time::timeout_at(deadline, queue.recv_many(&mut jobs, room)).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        }
        let rows = coalesce(jobs.iter().map(|j| &j.update));
        let outcome = store
            .results()
            .record_many(&rows)
            .await
            .map_err(|e| e.to_string());
        if let Err(e) = &outcome {
            tracing::warn!(error = %e, rows = rows.len(), "result batch not written");
        }
        for job in jobs.drain(..) {
            let _ = job.done.send(outcome.clone());
        }
    }
}

/// One update per task id, in first-seen order: a ready state wins over a non-ready one,
/// otherwise the later update wins; retries keep the maximum.
pub fn coalesce<'a>(updates: impl Iterator<Item = &'a TaskStateUpdate>) -> Vec<TaskStateUpdate> {
    let mut rows: Vec<TaskStateUpdate> = Vec::new();
    let mut index: HashMap<&'a str, usize> = HashMap::new();
    for update in updates {
        match index.get(update.task_id.as_str()) {
            None => {
                index.insert(update.task_id.as_str(), rows.len());
                rows.push(update.clone());
            }
            Some(&i) => {
                let kept = &mut rows[i];
                let retries = kept.retries.max(update.retries);
                if update.state.is_ready() || !kept.state.is_ready() {
                    let name = if update.name.is_empty() {
                        std::mem::take(&mut kept.name)
                    } else {
                        update.name.clone()
                    };
                    let queue = if update.queue.is_empty() {
                        std::mem::take(&mut kept.queue)
                    } else {
                        update.queue.clone()
                    };
                    let expires_at = update.expires_at.or(kept.expires_at);
                    *kept = TaskStateUpdate {
                        name,
                        queue,
                        expires_at,
                        ..update.clone()
                    };
                }
                kept.retries = retries;
            }
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use shopfds_protocol::TaskState;

    use super::*;

    fn update(id: &str, state: TaskState, retries: i32) -> TaskStateUpdate {
        TaskStateUpdate {
            task_id: id.to_owned(),
            name: "t".to_owned(),
            queue: "default".to_owned(),
            state,
            retries,
            progress: None,
            result: None,
            error: None,
            expires_at: None,
        }
    }

    #[test]
    fn a_late_started_does_not_replace_success_in_a_batch() {
        let rows = coalesce(
            [
                update("a", TaskState::Success, 0),
                update("b", TaskState::Started, 0),
                update("a", TaskState::Started, 0),
                update("b", TaskState::Failure, 2),
            ]
            .iter(),
        );
        let states: Vec<(&str, TaskState, i32)> = rows
            .iter()
            .map(|r| (r.task_id.as_str(), r.state, r.retries))
            .collect();
        assert_eq!(
            states,
            vec![("a", TaskState::Success, 0), ("b", TaskState::Failure, 2)]
        );
    }

    #[test]
    fn the_later_of_two_states_of_one_kind_wins_and_retries_keep_the_maximum() {
        let rows = coalesce(
            [
                update("a", TaskState::Retry, 3),
                update("a", TaskState::Progress, 1),
            ]
            .iter(),
        );
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].state, TaskState::Progress);
        assert_eq!(rows[0].retries, 3);
    }
}
