//! The executor: carries a [`Disposition`] out, in its order: the state recorded (and durable),
//! the follow-ups published, the chord backend told, the hook called, then the message acked,
//! retried, dead-lettered, deferred or requeued.
//!
//! Where carrying out fails, nothing is lost and nothing runs twice for it: a final state that
//! could not be recorded, or a chord part that could not be counted, closes the dependency
//! [`Gate`] (the worker takes no new messages) and is written again once the backend answers its
//! probe, for as long as it takes; only a backend that answers its probe yet keeps refusing the
//! write ([`ATTEMPTS_WHILE_REACHABLE`] times), or the end of the shutdown grace period, requeues
//! the message instead (the task then runs again). A handler's own
//! [`TaskError::Unavailable`](super::options::TaskError) holds its message the same way and
//! requeues it once the gate opens. A retry or deferral copy that could not be published
//! requeues the message; a dead-letter copy that could not be published rejects it, and the
//! queue's own dead-letter arguments still bring it to `failed.<queue>` (without our reason
//! header).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use lapin::message::Delivery;
use shopfds_protocol::TaskMessage;
use shopfds_protocol::TaskState;
use shopfds_protocol::canvas::Planned;
use shopfds_protocol::result::TaskStateUpdate;

use shopfds_telemetry::metrics::outcome::DEAD_LETTERED;
use tokio_util::sync::CancellationToken;

use super::acks::{Acks, Settle};
use super::backend::{ChordProgress, ResultBackend, StateChange};
use super::copies;
use super::decide::{Action, ChordStep, Disposition, error_json};
use super::followups;
use super::gate::Gate;
use crate::publisher::{Outgoing, Publisher};

/// How long a message whose bookkeeping failed is held before it is requeued.
const BACKEND_PAUSE: Duration = Duration::from_secs(1);

/// A write the backend refuses this many times while it answers its probe is not an outage: the
/// message is requeued.
pub const ATTEMPTS_WHILE_REACHABLE: u32 = 5;

pub struct Executor {
    pub backend: Arc<dyn ResultBackend>,
    pub publisher: Publisher,
    pub hostname: Arc<str>,
    /// How long a result stays readable (for the chord body's FAILURE).
    pub result_expires: Duration,
    /// Cancelled when the publisher's channel is found closed: the session ends and the worker
    /// reconnects with a fresh channel.
    pub publisher_lost: CancellationToken,
    /// Closed while a dependency of the worker is unreachable.
    pub gate: Gate,
    /// Fires when the shutdown grace period is over: nothing waits for the gate any longer.
    pub abandon: CancellationToken,
}

impl Executor {
    pub async fn apply(
        &self,
        delivery: &Delivery,
        acks: &Acks,
        queue: &str,
        msg: Option<&Arc<TaskMessage>>,
        d: Disposition,
    ) {
        if let Some(update) = d.record {
            let state = update.state;
            let change = match msg {
                Some(msg) => StateChange::of(update, msg, &self.hostname),
                None => StateChange::new(update),
            };
            if state.is_ready() {
                if !self.record_final(change).await {
                    acks.settle(delivery.delivery_tag, Settle::Requeue);
                    return;
                }
            } else if let Err(e) = self.backend.record(change).await {
                tracing::warn!(error = %e, %state, "task state not recorded");
            }
        }
        self.publish(&d.follow_ups).await;
        if let (Some(step), Some(msg)) = (d.chord, msg)
            && !self.chord_until_counted(step, msg).await
        {
            acks.settle(delivery.delivery_tag, Settle::Requeue);
            return;
        }
        if let Some(call) = &d.hook {
            call.hook.call(&call.event, call.which);
        }
        let task = msg.map_or("unknown", |m| m.task());
        if let Some(outcome) = d.counted_as {
            count(queue, task, outcome);
        }
        match d.action {
            Action::Ack => acks.settle(delivery.delivery_tag, Settle::Ack),
            Action::Revoke { reason } => {
                tracing::info!(reason = %reason, "task revoked");
                acks.settle(delivery.delivery_tag, Settle::Ack);
            }
            Action::Requeue => acks.settle(delivery.delivery_tag, Settle::Requeue),
            Action::AwaitDependency { dependency, reason } => {
                // Held rather than requeued at once: every worker of the queue would meet the
                // same outage. Requeued (retries untouched) once the dependency answers, or at
                // the end of the shutdown grace period.
                self.gate.close(&dependency, &reason);
                self.gate.opened(&self.abandon).await;
                acks.settle(delivery.delivery_tag, Settle::Requeue);
            }
            Action::Retry {
                delay_secs,
                retries,
                eta,
            } => {
                let copy =
                    copies::retry(delivery, msg.map(|m| &**m), queue, retries, eta, delay_secs);
                match self.publisher.publish(&copy).await {
                    Ok(()) => {
                        tracing::warn!(retry_in_secs = delay_secs, retries, "task will be retried");
                        acks.settle(delivery.delivery_tag, Settle::Ack);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "could not schedule the retry; message requeued");
                        self.after_publish_failure().await;
                        acks.settle(delivery.delivery_tag, Settle::Requeue);
                    }
                }
            }
            Action::DeferToEta { delay_secs } => {
                let copy = copies::deferred(delivery, queue, delay_secs);
                match self.publisher.publish(&copy).await {
                    Ok(()) => acks.settle(delivery.delivery_tag, Settle::Ack),
                    Err(e) => {
                        tracing::warn!(error = %e, "could not delay an ETA task; requeued");
                        self.after_publish_failure().await;
                        acks.settle(delivery.delivery_tag, Settle::Requeue);
                    }
                }
            }
            Action::DeadLetter { reason } => {
                tracing::warn!(reason = %reason, "message dead-lettered");
                let copy = copies::dead_letter(delivery, queue, &reason, Utc::now());
                match self.publisher.publish(&copy).await {
                    Ok(()) => acks.settle(delivery.delivery_tag, Settle::Ack),
                    Err(e) => {
                        tracing::warn!(error = %e, "dead-letter publish failed; rejecting to the queue's DLX");
                        self.check_publisher();
                        acks.settle(delivery.delivery_tag, Settle::Reject);
                    }
                }
                // Either way the message is in `failed.<queue>` now (the reject through the
                // queue's own dead-letter arguments): counted besides its failed/rejected.
                count(queue, task, DEAD_LETTERED);
            }
        }
    }

    /// Writes a final state until it lands (see the module docs); `false` when the message must
    /// be requeued instead.
    async fn record_final(&self, change: StateChange) -> bool {
        let what = format!("the final state ({})", change.update.state);
        self.until_written(&what, || async {
            self.backend
                .record(change.clone())
                .await
                .map_err(|e| e.to_string())
        })
        .await
    }

    /// Counts a chord step until the backend takes it, like [`Self::record_final`].
    async fn chord_until_counted(&self, step: ChordStep, msg: &TaskMessage) -> bool {
        self.until_written("the chord part", || self.chord(step.clone(), msg))
            .await
    }

    /// Tries `write` until it succeeds while the backend is unreachable (the gate closed and
    /// waited on); `false` when the backend answers its probe yet refused the write
    /// [`ATTEMPTS_WHILE_REACHABLE`] times, or at the end of the shutdown grace period.
    async fn until_written<F, Fut>(&self, what: &str, mut write: F) -> bool
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<(), String>>,
    {
        let mut refused_while_reachable = 0;
        loop {
            let Err(e) = write().await else {
                return true;
            };
            if !self.backend_reachable().await {
                tracing::warn!(error = %e, "{what} not written: the result backend is unreachable; written once it answers");
                self.gate.close(self.backend.name(), &e);
                if !self.gate.opened(&self.abandon).await {
                    tracing::warn!("shutdown: {what} still not written; message requeued");
                    return false;
                }
                continue;
            }
            refused_while_reachable += 1;
            let give_up =
                refused_while_reachable >= ATTEMPTS_WHILE_REACHABLE || self.abandon.is_cancelled();
            if give_up {
                tracing::error!(error = %e, "the result backend refuses {what}; message requeued");
            }
            tokio::time::sleep(BACKEND_PAUSE).await;
            if give_up {
                return false;
            }
        }
    }

    /// Whether the result backend answers its probe now.
    async fn backend_reachable(&self) -> bool {
        matches!(
            tokio::time::timeout(Duration::from_secs(2), self.backend.ping()).await,
            Ok(Ok(()))
        )
    }

    /// Tells the chord backend; `Err` when the part was not counted.
    async fn chord(&self, step: ChordStep, msg: &TaskMessage) -> Result<(), String> {
        match step {
            ChordStep::PartSucceeded { result } => {
                let publisher = &self.publisher;
                let publish_body: super::backend::PublishBody<'_> = Box::new(move |results| {
                    Box::pin(async move {
                        let planned =
                            followups::chord_body(msg, results).map_err(|e| e.to_string())?;
                        let outgoing = outgoing(&planned);
                        for r in publisher.publish_batch(&outgoing).await {
                            r.map_err(|e| e.to_string())?;
                        }
                        Ok(())
                    })
                });
                match self
                    .backend
                    .chord_part_succeeded(msg, &result, publish_body)
                    .await
                {
                    Ok(ChordProgress::Completed { parts }) => {
                        tracing::info!(group_id = ?msg.headers.group, parts, "chord complete: body published");
                        Ok(())
                    }
                    Ok(progress) => {
                        tracing::debug!(group_id = ?msg.headers.group, ?progress, "chord part counted");
                        Ok(())
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "chord part not counted");
                        Err(e.to_string())
                    }
                }
            }
            ChordStep::PartFailed { reason, body } => {
                match self.backend.chord_part_failed(msg, &reason).await {
                    Ok(true) => {
                        tracing::warn!(group_id = ?msg.headers.group, body = %body.body_task, reason = %body.reason, "chord failed: its body will not run");
                        if let Some(body_id) = &body.body_id {
                            let update = TaskStateUpdate {
                                task_id: body_id.clone(),
                                name: body.body_task.clone(),
                                queue: body.body_queue.clone(),
                                state: TaskState::Failure,
                                retries: 0,
                                progress: None,
                                result: None,
                                error: Some(error_json("ChordError", &body.reason)),
                                expires_at: chrono::Duration::from_std(self.result_expires)
                                    .ok()
                                    .and_then(|keep| Utc::now().checked_add_signed(keep)),
                            };
                            if let Err(e) = self.backend.record(StateChange::new(update)).await {
                                tracing::warn!(error = %e, "could not record the chord body's failure");
                            }
                        }
                        self.publish(&body.errbacks).await;
                        Ok(())
                    }
                    Ok(false) => Ok(()),
                    Err(e) => {
                        // The part itself failed for good and goes to the dead-letter queue; a
                        // chord that cannot be marked failed only loses its body's FAILURE.
                        tracing::error!(error = %e, "could not record the chord's failure");
                        Ok(())
                    }
                }
            }
        }
    }

    /// Publishes follow-up messages; one that cannot be published is logged (at-least-once:
    /// the task's own success stands).
    pub async fn publish(&self, planned: &[Planned]) {
        if planned.is_empty() {
            return;
        }
        let outgoing = outgoing(planned);
        for (out, result) in outgoing
            .iter()
            .zip(self.publisher.publish_batch(&outgoing).await)
        {
            if let Err(e) = result {
                tracing::error!(error = %e, exchange = %out.exchange, "could not publish a follow-up task");
            }
        }
        self.check_publisher();
    }

    /// A requeue after a failed publish waits first, so a message whose copy cannot go out is
    /// not redelivered in a tight loop; a closed channel also ends the session.
    async fn after_publish_failure(&self) {
        self.check_publisher();
        tokio::time::sleep(BACKEND_PAUSE).await;
    }

    fn check_publisher(&self) {
        if !self.publisher.is_usable() && !self.publisher_lost.is_cancelled() {
            tracing::warn!("the publishing channel is closed; reconnecting");
            self.publisher_lost.cancel();
        }
    }
}

fn outgoing(planned: &[Planned]) -> Vec<Outgoing> {
    planned
        .iter()
        .map(|p| Outgoing::task(&p.message, &p.queue))
        .collect()
}

/// One more `shopfds_tasks_total{queue,task,outcome}`; the outcomes are documented on
/// [`shopfds_telemetry::metrics::outcome`].
fn count(queue: &str, task: &str, outcome: &str) {
    shopfds_telemetry::metrics::tasks_total()
        .with_label_values(&[queue, task, outcome])
        .inc();
}
