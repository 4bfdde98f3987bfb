//! What a worker runs: the [`Task`] trait (a name, typed arguments, options, `run`), the
//! [`Registry`] of a worker's tasks, and the [`TaskContext`] a running task gets.
//!
//! A task gets its dependencies (mailer, store, HTTP client) when it is registered, as fields of
//! the value that implements [`Task`]; the context carries only what belongs to one message: the
//! message, the soft time limit, progress reporting and the worker's publisher.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde_json::{Value, json};
use shopfds_protocol::result::TaskStateUpdate;
use shopfds_protocol::{TaskArgs, TaskMessage, TaskState};
use tokio_util::sync::CancellationToken;

use super::backend::{ResultBackend, StateChange};
use super::effects::Effects;
use super::options::{TaskError, TaskOptions};
use crate::publisher::Publisher;

/// A task, as Celery's `@app.task` declares one.
///
/// ```ignore
/// struct SendConfirmation { mailer: Arc<Mailer>, store: Store }
/// impl Task for SendConfirmation {
///     const NAME: &'static str = tasks::SEND_ORDER_CONFIRMATION_EMAIL;
///     type Args = OrderTask;
///     fn options(&self) -> TaskOptions { TaskOptions { max_retries: 3, ..Default::default() } }
///     async fn run(&self, args: OrderTask, ctx: TaskContext) -> Result<Value, TaskError> { … }
/// }
/// registry.task(SendConfirmation { mailer, store });
/// ```
pub trait Task: Send + Sync + 'static {
    /// The Celery task name a message's `task` header carries.
    const NAME: &'static str;
    /// The keyword arguments, one type shared with the producers (`shopfds_protocol::payloads`).
    type Args: TaskArgs + Send;

    fn options(&self) -> TaskOptions {
        TaskOptions::default()
    }

    /// Runs the task. Arguments that do not bind never get here: the message is rejected to the
    /// dead-letter queue with the binding error.
    fn run(
        &self,
        args: Self::Args,
        ctx: TaskContext,
    ) -> impl Future<Output = Result<Value, TaskError>> + Send;
}

pub type HandlerFuture = BoxFuture<'static, Result<Value, TaskError>>;
pub(crate) type Handler = Arc<dyn Fn(TaskContext) -> HandlerFuture + Send + Sync>;

/// Task name → handler and options.
#[derive(Clone, Default)]
pub struct Registry {
    handlers: HashMap<String, (Handler, TaskOptions)>,
}

impl Registry {
    pub fn new() -> Self {
        Registry::default()
    }

    /// Registers a [`Task`] under its name, with its options.
    pub fn task<T: Task>(&mut self, task: T) -> &mut Self {
        let options = task.options();
        let task = Arc::new(task);
        self.register(T::NAME, options, move |ctx| {
            let task = Arc::clone(&task);
            async move {
                let args = ctx.bind::<T::Args>()?;
                task.run(args, ctx).await
            }
        })
    }

    /// Registers a handler by name, for a task whose arguments are read by hand (tests, tools).
    pub fn register<F, Fut>(&mut self, name: &str, options: TaskOptions, handler: F) -> &mut Self
    where
        F: Fn(TaskContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, TaskError>> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |ctx| Box::pin(handler(ctx)));
        self.handlers.insert(name.to_owned(), (handler, options));
        self
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.handlers.keys().map(String::as_str)
    }

    pub(crate) fn get(&self, name: &str) -> Option<&(Handler, TaskOptions)> {
        self.handlers.get(name)
    }

    pub(crate) fn options(&self) -> impl Iterator<Item = (&str, &TaskOptions)> {
        self.handlers.iter().map(|(n, (_, o))| (n.as_str(), o))
    }
}

/// What a running task gets: its message, the soft time limit, progress reporting and the
/// worker's publisher.
#[derive(Clone)]
pub struct TaskContext {
    pub message: Arc<TaskMessage>,
    pub queue: String,
    /// Cancelled when the soft time limit passes: clean up and return.
    pub soft_limit: CancellationToken,
    /// The broker says this message was delivered before (to this or another worker).
    pub redelivered: bool,
    /// The worker's confirmed publisher, for tasks that fan out more work (a group of chunks).
    pub publisher: Publisher,
    pub(crate) backend: Arc<dyn ResultBackend>,
    pub(crate) ignore_result: bool,
    /// The worker's node name, for the states this task reports.
    pub(crate) worker: Arc<str>,
    pub(crate) effects: Effects,
}

impl TaskContext {
    pub fn id(&self) -> &str {
        self.message.id()
    }

    /// The typed arguments; an argument error is permanent (retrying cannot fix it).
    pub fn bind<T: TaskArgs>(&self) -> Result<T, TaskError> {
        self.message.bind().map_err(TaskError::permanent)
    }

    /// Runs `effect` — a side effect and the record that it happened, e.g. the SMTP send and
    /// the once-only record's commit — as one span that is never cut: the hard time limit and
    /// the end of the shutdown grace period wait until it has ended. Keep it bounded (the SMTP
    /// client's timeout) and keep everything that may wait long (locks, lookups) outside it.
    pub async fn effect<F: Future>(&self, effect: F) -> F::Output {
        self.effects.run(effect).await
    }

    /// Celery's `update_state(state="PROGRESS", meta={current, total, message})`. Best effort:
    /// a progress report that cannot be written is logged, and the task goes on.
    pub async fn progress(&self, current: u64, total: u64, message: &str) {
        if self.ignore_result {
            return;
        }
        let update = TaskStateUpdate {
            task_id: self.id().to_owned(),
            name: self.message.task().to_owned(),
            queue: self.queue.clone(),
            state: TaskState::Progress,
            retries: i32::try_from(self.message.headers.retries).unwrap_or(i32::MAX),
            progress: Some(json!({"current": current, "total": total, "message": message})),
            result: None,
            error: None,
            expires_at: None,
        };
        let change = StateChange::of(update, &self.message, &self.worker);
        if let Err(e) = self.backend.record(change).await {
            tracing::warn!(error = %e, task_id = %self.id(), "could not record progress");
        }
    }
}
