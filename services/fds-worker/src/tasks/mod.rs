//! The tasks of queue `fds`, with the Celery names and keyword arguments of the seed:
//!
//! - [`evaluate`]: `evaluate_transaction(order_id)`: one stored order scored by the rule engine
//!   as of the time it was placed, once per order; an order order-api could not score in real
//!   time gets its decision and status;
//! - [`batch`]: `batch_fds_evaluation(transaction_ids=None, date=None)`: the nightly batch (the
//!   planner fans a day's unscored orders out as a group of chunks that every replica shares);
//! - [`intel`]: `update_threat_intelligence(url=None)`: the threat-intel feed fetched, validated,
//!   stored as a version in PostgreSQL and put in force; [`spawn_background`] keeps every
//!   replica on the newest stored version.
//!
//! All three retry transient errors (database, feed 5xx/timeouts) 3 times with exponential
//! backoff and full jitter (1 s, 2 s, 4 s …, at most 600 s), as the seed's `autoretry_for`,
//! `max_retries=3`, `retry_backoff=True`, `retry_jitter=True` do.

pub mod batch;
pub mod evaluate;
pub mod intel;
pub mod settings;

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use shopfds_broker::{Registry, RetryPolicy, Task, TaskContext, TaskError, TaskOptions};
use shopfds_protocol::tasks::{
    BATCH_FDS_EVALUATION, EVALUATE_TRANSACTION, UPDATE_THREAT_INTELLIGENCE,
};
use shopfds_store::Store;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use settings::TasksSettings;

use shopfds_protocol::payloads::{
    BatchFdsEvaluation, EvaluateTransaction, UpdateThreatIntelligence,
};

use crate::engine::Engine;

/// The seed's options for the fds tasks: 3 retries, exponential backoff from 1 s, capped at
/// 10 min, full jitter.
pub fn options() -> TaskOptions {
    TaskOptions {
        max_retries: 3,
        retry: RetryPolicy::Exponential {
            base: Duration::from_secs(1),
            max: Duration::from_secs(600),
            jitter: true,
        },
        ..TaskOptions::default()
    }
}

/// What every fds task is registered with: the database, the engine the gRPC server uses (so a
/// feed update reaches both) and the tasks' settings.
#[derive(Clone)]
pub struct Deps {
    pub store: Store,
    pub engine: Arc<Engine>,
    pub settings: Arc<TasksSettings>,
}

pub struct EvaluateTransactionTask(pub Deps);
pub struct BatchFdsEvaluationTask(pub Deps);
pub struct UpdateThreatIntelligenceTask(pub Deps);

impl Task for EvaluateTransactionTask {
    const NAME: &'static str = EVALUATE_TRANSACTION;
    type Args = EvaluateTransaction;

    fn options(&self) -> TaskOptions {
        options()
    }

    async fn run(&self, args: Self::Args, ctx: TaskContext) -> Result<Value, TaskError> {
        evaluate::run(args, ctx, &self.0.store, &self.0.engine).await
    }
}

impl Task for BatchFdsEvaluationTask {
    const NAME: &'static str = BATCH_FDS_EVALUATION;
    type Args = BatchFdsEvaluation;

    fn options(&self) -> TaskOptions {
        options()
    }

    async fn run(&self, args: Self::Args, ctx: TaskContext) -> Result<Value, TaskError> {
        let d = &self.0;
        batch::run(args, ctx, &d.store, &d.engine, &d.settings).await
    }
}

impl Task for UpdateThreatIntelligenceTask {
    const NAME: &'static str = UPDATE_THREAT_INTELLIGENCE;
    type Args = UpdateThreatIntelligence;

    fn options(&self) -> TaskOptions {
        options()
    }

    async fn run(&self, args: Self::Args, _ctx: TaskContext) -> Result<Value, TaskError> {
        let d = &self.0;
        intel::run(args, &d.store, &d.engine, &d.settings).await
    }
}

/// Registers `evaluate_transaction`, `batch_fds_evaluation` and `update_threat_intelligence`.
pub fn register(registry: &mut Registry, deps: Deps) {
    registry
        .task(EvaluateTransactionTask(deps.clone()))
        .task(BatchFdsEvaluationTask(deps.clone()))
        .task(UpdateThreatIntelligenceTask(deps));
}

/// What the tasks need running next to the worker: the threat-intel reloader (loads the newest
/// stored feed version at once, then polls every `THREAT_INTEL_RELOAD_SECS`). Stops with
/// `shutdown`.
pub fn spawn_background(
    store: Store,
    engine: Arc<Engine>,
    settings: &TasksSettings,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    intel::spawn_reloader(store, engine, settings, shutdown)
}
