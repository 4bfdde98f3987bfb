//! One delivery, start to end: read it, [`triage`] it, run its handler under the time limits,
//! [`decide`] what becomes of it, and hand the [`Disposition`] to the [`Executor`].
//!
//! The handler's concurrency slot is given back as soon as the handler returns: waiting for the
//! result backend's commit and the ack holds only the message (bounded by the prefetch), not a
//! slot, so a batched backend fills its batches while the next tasks already run.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::FutureExt;
use lapin::message::Delivery;
use shopfds_protocol::result::TaskStateUpdate;
use shopfds_protocol::{TaskMessage, TaskState};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::acks::Acks;
use super::backend::StateChange;
use super::decide::{Action, Disposition, Facts, Outcome, decide, expiry, triage};
use super::effects::Effects;
use super::execute::Executor;
use super::options::{TaskError, TaskOptions};
use super::task::{Registry, TaskContext};
use crate::WorkerSettings;
use crate::monitor::lateness::{self, Timeline};
use crate::monitor::{Monitor, event};

/// The longest time limit a message can ask for: about 31 years.
pub const LONGEST_LIMIT: Duration = Duration::from_secs(1_000_000_000);

/// One token bucket per task name: the next free start time, and the time between two starts
/// (`None`: unlimited). Every registered task has one, so the `rate_limit` control command can
/// limit any task from then on.
pub struct RateLimiter {
    state: std::sync::Mutex<(Option<Duration>, Instant)>,
}

impl RateLimiter {
    pub fn for_registry(registry: &Registry) -> HashMap<String, RateLimiter> {
        let now = Instant::now();
        registry
            .options()
            .map(|(name, options)| {
                let interval = options.rate_limit.map(|limit| limit.interval());
                (
                    name.to_owned(),
                    RateLimiter {
                        state: std::sync::Mutex::new((interval, now)),
                    },
                )
            })
            .collect()
    }

    /// Sets the time between two starts from now on (`None`: unlimited).
    pub fn set(&self, interval: Option<Duration>) {
        if let Ok(mut state) = self.state.lock() {
            *state = (interval, Instant::now());
        }
    }

    /// Waits for this task's next start slot; how long it waited.
    async fn acquire(&self) -> Duration {
        let now = Instant::now();
        let slot = {
            let Ok(mut state) = self.state.lock() else {
                return Duration::ZERO;
            };
            let (Some(interval), next) = *state else {
                return Duration::ZERO;
            };
            let slot = next.max(now);
            state.1 = slot + interval;
            slot
        };
        if slot > now {
            tokio::time::sleep_until(slot.into()).await;
        }
        slot.saturating_duration_since(now)
    }
}

/// What every delivery of one connection shares.
pub struct Runtime {
    pub registry: Arc<Registry>,
    pub settings: WorkerSettings,
    pub limiters: Arc<HashMap<String, RateLimiter>>,
    pub executor: Executor,
    /// Events, the inventory, revokes and the limits set by remote control.
    pub monitor: Arc<Monitor>,
}

/// When a delivery reached this worker.
#[derive(Debug, Clone, Copy)]
pub struct Arrival {
    pub at: Instant,
    pub wall: DateTime<Utc>,
}

impl Arrival {
    pub fn now() -> Arrival {
        Arrival {
            at: Instant::now(),
            wall: Utc::now(),
        }
    }
}

impl Runtime {
    /// Handles one delivery; `slot` is released when the handler is done. `abandon` fires when
    /// the shutdown grace period is over: a task still running is dropped (once outside its
    /// side-effect spans) and its message requeued.
    pub async fn process(
        &self,
        delivery: Delivery,
        acks: Acks,
        queue: String,
        slot: Vec<OwnedSemaphorePermit>,
        (abandon, arrival): (CancellationToken, Arrival),
    ) {
        let msg = match decode(&delivery, self.settings.max_message_bytes) {
            Ok(msg) => msg,
            Err(Unreadable {
                reason,
                task_id,
                task,
            }) => {
                drop(slot);
                if let Some(id) = &task_id {
                    self.monitor
                        .events
                        .task(&self.monitor.clock, "task-rejected", || {
                            event::rejected(id, false)
                        });
                }
                let facts = self.facts(&queue, None, None);
                let d = decide(
                    &facts,
                    Outcome::Undecodable {
                        reason,
                        task_id,
                        task,
                    },
                );
                self.executor.apply(&delivery, &acks, &queue, None, d).await;
                return;
            }
        };
        self.monitor
            .events
            .task(&self.monitor.clock, "task-received", || {
                event::received(&msg)
            });
        let span = tracing::info_span!(
            "task",
            otel.name = %format!("run {}", msg.task()),
            task.name = %msg.task(),
            task.id = %msg.id(),
            queue = %queue,
            retries = msg.headers.retries,
            wait.outbox_s = tracing::field::Empty,
            wait.eta_s = tracing::field::Empty,
            wait.retry_backoff_s = tracing::field::Empty,
            wait.broker_s = tracing::field::Empty,
            wait.prefetch_s = tracing::field::Empty,
            wait.rate_limit_s = tracing::field::Empty,
        );
        if let Some(table) = delivery.properties.headers() {
            shopfds_telemetry::propagation::set_parent_from_amqp(&span, table);
        }
        let timeline = Timeline {
            planned: lateness::stamp(&msg.headers.extra, lateness::PLANNED_HEADER),
            sent: lateness::stamp(&msg.headers.extra, lateness::SENT_HEADER),
            eta: msg.headers.eta,
            retries: msg.headers.retries,
            delivered: Some(arrival.wall),
            prefetch: arrival.at.elapsed(),
            rate_limit: Duration::ZERO,
        };
        self.run(
            delivery,
            acks,
            queue,
            Arc::new(msg),
            slot,
            abandon,
            timeline,
        )
        .instrument(span)
        .await;
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "one delivery's parts, passed once"
    )]
    async fn run(
        &self,
        delivery: Delivery,
        acks: Acks,
        queue: String,
        message: Arc<TaskMessage>,
        slot: Vec<OwnedSemaphorePermit>,
        abandon: CancellationToken,
        mut timeline: Timeline,
    ) {
        let entry = self.registry.get(message.task());
        let backend = &self.executor.backend;
        let monitor = &self.monitor;
        let early = if monitor.revoked.contains(message.id()) {
            Some(Outcome::Revoked { terminated: false })
        } else {
            triage(
                &message,
                entry.is_some(),
                |m| backend.check_chord(m),
                Utc::now(),
                self.settings.eta_horizon,
            )
        };
        if let Some(outcome) = early {
            drop(slot);
            let facts = self.facts(&queue, Some(&message), entry.map(|(_, o)| o));
            let note = Note::of(monitor, &outcome);
            let d = decide(&facts, outcome);
            note.send(monitor, message.id(), &d);
            self.executor
                .apply(&delivery, &acks, &queue, Some(&message), d)
                .await;
            return;
        }
        let Some((handler, options)) = entry else {
            // `triage` answered UnknownTask for a missing entry; settled anyway, never leaked.
            acks.settle(delivery.delivery_tag, super::acks::Settle::Requeue);
            return;
        };
        let ignore_result = options.ignore_result || message.headers.ignore_result;
        let (hard, soft) = self.limits(&message, options);
        let soft_limit = CancellationToken::new();
        let effects = Effects::default();
        let ctx = TaskContext {
            message: message.clone(),
            queue: queue.clone(),
            soft_limit: soft_limit.clone(),
            redelivered: delivery.redelivered,
            publisher: self.executor.publisher.clone(),
            backend: backend.clone(),
            ignore_result,
            worker: self.executor.hostname.clone(),
            effects: effects.clone(),
        };
        let queue_label: Arc<str> = Arc::from(queue.as_str());
        let held = monitor
            .inventory
            .hold(&message, &queue_label, delivery.redelivered);
        let started = Instant::now();
        // Waiting for a rate-limit turn (which holds the slot, as in Celery) and STARTED may be
        // abandoned at shutdown like the run itself.
        let prepare = async {
            if let Some(limiter) = self.limiters.get(message.task()) {
                timeline.rate_limit = limiter.acquire().await;
            }
            if options.track_started && !ignore_result {
                self.started(&message, &queue).await;
            }
        };
        let prepared = tokio::select! {
            () = prepare => true,
            () = abandon.cancelled() => false,
        };
        let outcome = if !prepared {
            Outcome::Abandoned
        } else if monitor.revoked.contains(message.id()) {
            Outcome::Revoked { terminated: false }
        } else {
            observe_wait(&timeline, &queue, message.task());
            held.start();
            monitor.inventory.ran(message.task());
            monitor.events.task(&monitor.clock, "task-started", || {
                event::started(message.id(), std::process::id())
            });
            let in_flight =
                shopfds_telemetry::metrics::tasks_in_flight().with_label_values(&[queue.as_str()]);
            in_flight.inc();
            let limits = Limits {
                soft,
                hard,
                soft_limit,
                abandon: &abandon,
                terminate: &held.terminate,
                effects: &effects,
            };
            let outcome = run_limited(handler(ctx), limits).await;
            in_flight.dec();
            outcome
        };
        drop(held);
        drop(slot);
        let runtime = started.elapsed();
        shopfds_telemetry::metrics::task_duration_seconds()
            .with_label_values(&[queue.as_str(), message.task()])
            .observe(runtime.as_secs_f64());
        let facts = self.facts(&queue, Some(&message), Some(options));
        let note = Note::of(monitor, &outcome);
        let d = decide(&facts, outcome);
        note.send(monitor, message.id(), &d);
        if let Note::Succeeded(result) = &note {
            monitor.events.task(&monitor.clock, "task-succeeded", || {
                event::succeeded(message.id(), result, runtime.as_secs_f64())
            });
        }
        self.executor
            .apply(&delivery, &acks, &queue, Some(&message), d)
            .await;
    }

    fn facts<'a>(
        &self,
        queue: &'a str,
        message: Option<&'a TaskMessage>,
        options: Option<&'a TaskOptions>,
    ) -> Facts<'a> {
        Facts {
            queue,
            message,
            options,
            now: Utc::now(),
            result_expires: self.settings.result_expires,
            jitter: rand::random::<f64>(),
        }
    }

    /// STARTED, for a task with `track_started`: best effort, the task runs either way.
    async fn started(&self, msg: &Arc<TaskMessage>, queue: &str) {
        let facts = self.facts(queue, Some(msg), None);
        let update = TaskStateUpdate {
            task_id: msg.id().to_owned(),
            name: msg.task().to_owned(),
            queue: queue.to_owned(),
            state: TaskState::Started,
            retries: i32::try_from(msg.headers.retries).unwrap_or(i32::MAX),
            progress: None,
            result: None,
            error: None,
            expires_at: Some(expiry(&facts)),
        };
        let change = StateChange::of(update, msg, &self.executor.hostname);
        if let Err(e) = self.executor.backend.record(change).await {
            tracing::warn!(error = %e, "could not record STARTED");
        }
    }

    /// The hard and soft limits: the message's `timelimit` header, else those set by the
    /// `time_limit` control command, else the task's options, else the worker's defaults; the soft limit is never past the hard one.
    /// A header limit that is zero, negative or not a number is absent; a huge one (Python
    /// sends `1e300` as happily as `300`) is capped at [`LONGEST_LIMIT`], which `Duration` and the
    /// timer can hold (`Duration::from_secs_f64(1e300)` panics).
    fn limits(&self, msg: &TaskMessage, options: &TaskOptions) -> (Duration, Duration) {
        let from_header = |v: Option<f64>| {
            v.filter(|s| *s > 0.0)
                .map(|s| Duration::from_secs_f64(s.min(LONGEST_LIMIT.as_secs_f64())))
        };
        let (remote_soft, remote_hard) = self
            .monitor
            .time_limits_of(msg.task())
            .unwrap_or((None, None));
        let hard = from_header(msg.headers.timelimit.hard())
            .or(remote_hard)
            .or(options.time_limit)
            .unwrap_or(self.settings.time_limit);
        let soft = from_header(msg.headers.timelimit.soft())
            .or(remote_soft)
            .or(options.soft_time_limit)
            .unwrap_or(self.settings.soft_time_limit)
            .min(hard);
        (hard, soft)
    }
}

/// What may interrupt a running handler.
struct Limits<'a> {
    soft: Duration,
    hard: Duration,
    /// Cancelled at the soft limit: the handler's own token.
    soft_limit: CancellationToken,
    /// Fires when the shutdown grace period is over.
    abandon: &'a CancellationToken,
    /// Fires on `revoke` with `terminate`.
    terminate: &'a CancellationToken,
    /// The handler's side-effect spans, which no interruption cuts.
    effects: &'a Effects,
}

/// Runs the handler with one timer polled alongside (no extra task per message): at the soft
/// limit it cancels the handler's token and is moved on to the hard limit, where the handler's
/// future is dropped, as it is when the shutdown grace period ends. Either interruption waits
/// while a side-effect span runs ([`TaskContext::effect`]); if the handler returns meanwhile,
/// what it returned is the outcome.
async fn run_limited(run: super::task::HandlerFuture, limits: Limits<'_>) -> Outcome {
    let Limits {
        soft,
        hard,
        soft_limit,
        abandon,
        terminate,
        effects,
    } = limits;
    let started = tokio::time::Instant::now();
    let timer = tokio::time::sleep(soft);
    // A handler that panics fails its task for good, like any permanent error; the worker and
    // the message's settlement go on.
    let run = std::panic::AssertUnwindSafe(run).catch_unwind();
    tokio::pin!(run, timer);
    let mut soft_fired = false;
    let interruption = loop {
        tokio::select! {
            biased;
            outcome = &mut run => return finished(outcome),
            () = abandon.cancelled() => break Outcome::Abandoned,
            () = terminate.cancelled() => break Outcome::Revoked { terminated: true },
            () = &mut timer => {
                if !soft_fired {
                    soft_fired = true;
                    soft_limit.cancel();
                    if soft < hard {
                        tracing::warn!(soft_limit_secs = soft.as_secs_f64(), "soft time limit exceeded");
                        timer.as_mut().reset(started + hard);
                        continue;
                    }
                }
                break Outcome::HardTimeLimit { limit: hard };
            }
        }
    };
    if effects.active() {
        tracing::warn!(
            interruption = ?interruption,
            "the task is inside a side effect and its record; it is interrupted when that ends"
        );
        tokio::select! {
            biased;
            outcome = &mut run => return finished(outcome),
            () = effects.idle() => {}
        }
    }
    interruption
}

/// The outcome of a handler that returned (or panicked).
fn finished(
    outcome: Result<Result<serde_json::Value, TaskError>, Box<dyn std::any::Any + Send>>,
) -> Outcome {
    match outcome {
        Ok(Ok(value)) => Outcome::Succeeded(value),
        Ok(Err(e)) => Outcome::Failed(e),
        Err(panic) => Outcome::Failed(TaskError::permanent(format!(
            "the task panicked: {}",
            panic_message(panic.as_ref())
        ))),
    }
}

/// The text a panic carried, if it was a string.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// Why a delivery could not be read, and what of it could.
struct Unreadable {
    reason: String,
    task_id: Option<String>,
    task: Option<String>,
}

/// The delivery as a task message, with its AMQP `reply_to`, `correlation_id` and `priority`;
/// else why not, with the task id and name if their headers could be read. A message over the
/// size cap or with a header nested too deep is refused before anything reads it, and a
/// compressed body is decompressed first ([`super::limits`]).
fn decode(delivery: &Delivery, max_bytes: usize) -> Result<TaskMessage, Unreadable> {
    if let Some(reason) = super::limits::refusal(delivery, max_bytes) {
        return Err(Unreadable {
            reason,
            task_id: super::limits::string_header(delivery, "id"),
            task: super::limits::string_header(delivery, "task"),
        });
    }
    let props = &delivery.properties;
    let content_type = props.content_type().as_ref().map(|s| s.as_str());
    let encoding = props.content_encoding().as_ref().map(|s| s.as_str());
    let headers = super::copies::headers(delivery);
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
    };
    let (task_id, task) = (header("id"), header("task"));
    let body = match super::limits::body(&headers, delivery, max_bytes) {
        Ok(body) => body,
        Err(reason) => {
            return Err(Unreadable {
                reason,
                task_id,
                task,
            });
        }
    };
    match TaskMessage::decode(content_type, encoding, headers, &body) {
        Ok(mut msg) => {
            // A v1 client may send an empty `reply_to`: no one is waiting.
            msg.properties.reply_to = props
                .reply_to()
                .as_ref()
                .map(|s| s.as_str().to_owned())
                .filter(|s| !s.is_empty());
            if let Some(correlation_id) = props.correlation_id() {
                msg.properties.correlation_id = correlation_id.as_str().to_owned();
            }
            msg.properties.priority = *props.priority();
            Ok(msg)
        }
        Err(e) => Err(Unreadable {
            reason: e.to_string(),
            task_id,
            task,
        }),
    }
}

/// Records the phases of a task's wait before it starts, on the metrics and its span.
fn observe_wait(timeline: &Timeline, queue: &str, task: &str) {
    let span = tracing::Span::current();
    for (phase, waited) in timeline.phases() {
        let secs = waited.as_secs_f64();
        shopfds_telemetry::metrics::task_wait_seconds()
            .with_label_values(&[queue, task, phase])
            .observe(secs);
        span.record(span_field(phase), secs);
    }
}

/// The task span's field of a wait phase (declared in [`Runtime::process`]).
fn span_field(phase: &str) -> &'static str {
    use shopfds_telemetry::metrics::phase;
    match phase {
        phase::OUTBOX => "wait.outbox_s",
        phase::ETA => "wait.eta_s",
        phase::RETRY_BACKOFF => "wait.retry_backoff_s",
        phase::BROKER => "wait.broker_s",
        phase::PREFETCH => "wait.prefetch_s",
        _ => "wait.rate_limit_s",
    }
}

/// What an outcome's event will say, taken before the decision consumes the outcome (and only
/// while task events are on).
enum Note {
    Silent,
    Succeeded(serde_json::Value),
    Failed { kind: String, message: String },
    Revoked { terminated: bool, expired: bool },
    Rejected,
}

impl Note {
    fn of(monitor: &Monitor, outcome: &Outcome) -> Note {
        if !monitor.events.tasks_enabled() {
            return Note::Silent;
        }
        match outcome {
            Outcome::Succeeded(value) => Note::Succeeded(value.clone()),
            Outcome::Failed(e) => Note::Failed {
                kind: e.kind().to_owned(),
                message: e.message().to_owned(),
            },
            Outcome::HardTimeLimit { limit } => Note::Failed {
                kind: "TimeLimitExceeded".to_owned(),
                message: format!("{}", limit.as_secs_f64()),
            },
            Outcome::Expired { .. } => Note::Revoked {
                terminated: false,
                expired: true,
            },
            Outcome::Revoked { terminated } => Note::Revoked {
                terminated: *terminated,
                expired: false,
            },
            Outcome::UnknownTask
            | Outcome::EtaBeyondHorizon { .. }
            | Outcome::Undecodable { .. } => Note::Rejected,
            Outcome::ChordUnsupported { reason } => Note::Failed {
                kind: "ChordError".to_owned(),
                message: reason.clone(),
            },
            Outcome::EtaInFuture { .. } | Outcome::Abandoned => Note::Silent,
        }
    }

    /// Sends the event the decision calls for (a success is sent by the caller, which has the
    /// runtime).
    fn send(&self, monitor: &Monitor, id: &str, d: &Disposition) {
        let (kind, fields) = match (self, &d.action) {
            (Note::Failed { kind, message }, Action::Retry { .. }) => {
                ("task-retried", event::failure(id, kind, message))
            }
            (Note::Failed { kind, message }, _) => {
                ("task-failed", event::failure(id, kind, message))
            }
            (
                Note::Revoked {
                    terminated,
                    expired,
                },
                _,
            ) => ("task-revoked", event::revoked(id, *terminated, *expired)),
            (Note::Rejected, _) => ("task-rejected", event::rejected(id, false)),
            (Note::Silent | Note::Succeeded(_), _) => return,
        };
        monitor.events.send(&monitor.clock, kind, fields);
    }
}
