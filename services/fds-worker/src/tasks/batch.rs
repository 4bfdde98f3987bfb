//! `batch_fds_evaluation(transaction_ids=None, date=None)`: the nightly batch of the seed.
//!
//! - With `transaction_ids`: a chunk. Each order is evaluated as `evaluate_transaction` does
//!   (once per order, whoever runs it); the result counts what happened.
//! - Without: the planner (beat calls it at midnight Asia/Seoul with no arguments). It finds the
//!   orders created during `date` (`YYYY-MM-DD`, default yesterday in Asia/Seoul) that still lack
//!   a decision, splits them into chunks of `FDS_BATCH_CHUNK_SIZE`, and publishes the chunks as
//!   one Celery group (same `group` id, `group_index` 0..n) on queue `fds` with publisher
//!   confirms, so every fds-worker replica takes a share. Each chunk has a PENDING row in the
//!   result store before it is published; their ids are in the planner's result.
//!
//! A planner delivered twice publishes its chunks twice; the orders are still evaluated once.

use chrono::{DateTime, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Asia::Seoul;
use serde_json::{Map, Value, json};
use shopfds_broker::{Outgoing, TaskContext, TaskError};
use shopfds_protocol::payloads::BatchFdsEvaluation;
use shopfds_protocol::tasks::{BATCH_FDS_EVALUATION, queue_for};
use shopfds_protocol::{TaskArgs, TaskMessage};
use shopfds_store::{PendingTask, Store};
use uuid::Uuid;

use super::evaluate::{EvaluateError, evaluate_order};
use crate::engine::Engine;
use crate::tasks::TasksSettings;

/// The task handler.
pub async fn run(
    args: BatchFdsEvaluation,
    ctx: TaskContext,
    store: &Store,
    engine: &Engine,
    settings: &TasksSettings,
) -> Result<Value, TaskError> {
    match (args.transaction_ids, args.date) {
        (Some(_), Some(_)) => Err(TaskError::permanent(
            "transaction_ids and date are exclusive: a chunk names its orders, the planner a day",
        )),
        (Some(ids), None) => run_chunk(&ctx, store, engine, settings, &ids).await,
        (None, date) => {
            let date = date.unwrap_or_else(|| yesterday_in_seoul(Utc::now()));
            plan(&ctx, store, settings, date).await
        }
    }
}

/// Evaluates each order of a chunk. An unknown order is reported, not fatal; a database error
/// fails the chunk (a retry skips the orders already done).
async fn run_chunk(
    ctx: &TaskContext,
    store: &Store,
    engine: &Engine,
    settings: &TasksSettings,
    ids: &[Uuid],
) -> Result<Value, TaskError> {
    let total = ids.len();
    let every = (total / 10).max(1);
    let (mut evaluated, mut already, mut updated) = (0u64, 0u64, 0u64);
    let mut not_found = Vec::new();
    let mut decisions: Map<String, Value> = Map::new();
    for (i, &order_id) in ids.iter().enumerate() {
        if ctx.soft_limit.is_cancelled() {
            // What is done stays done; the retry continues with the rest.
            return Err(TaskError::transient(format!(
                "soft time limit reached after {i} of {total} orders"
            )));
        }
        match evaluate_order(store, engine, order_id, ctx.id()).await {
            Ok(e) if e.fresh => {
                evaluated += 1;
                if e.order_updated() {
                    updated += 1;
                }
                if let Some(d) = e.decision() {
                    let n = decisions.get(d).and_then(Value::as_u64).unwrap_or(0);
                    decisions.insert(d.to_owned(), json!(n + 1));
                }
            }
            Ok(_) => already += 1,
            Err(EvaluateError::NotFound(id)) => {
                tracing::warn!(order_id = %id, "batch names an unknown order; skipped");
                not_found.push(id.to_string());
            }
            Err(e @ EvaluateError::Store(_)) => {
                return Err(TaskError::transient(format!(
                    "order {order_id} ({i} of {total} done): {e}"
                )));
            }
        }
        if (i + 1) % every == 0 && i + 1 < total {
            ctx.progress(
                u64::try_from(i + 1).unwrap_or(u64::MAX),
                u64::try_from(total).unwrap_or(u64::MAX),
                "orders evaluated",
            )
            .await;
        }
    }
    tracing::info!(
        orders = total,
        evaluated,
        already_evaluated = already,
        orders_updated = updated,
        not_found = not_found.len(),
        group = ctx.message.headers.group.as_deref().unwrap_or(""),
        "fds batch chunk evaluated"
    );
    Ok(json!({
        "orders": total,
        "evaluated": evaluated,
        "already_evaluated": already,
        "orders_updated": updated,
        "not_found": not_found,
        "decisions": decisions,
        "worker": settings.worker_name,
    }))
}

/// Finds the day's unscored orders and fans them out as a group of chunks.
async fn plan(
    ctx: &TaskContext,
    store: &Store,
    settings: &TasksSettings,
    date: NaiveDate,
) -> Result<Value, TaskError> {
    let (from, until) = seoul_day(date)
        .ok_or_else(|| TaskError::permanent(format!("date {date}: not a day in Asia/Seoul")))?;
    let ids = store
        .fds_batch()
        .unscored_orders(from, until)
        .await
        .map_err(shopfds_results::database_error)?;
    let date_text = date.format("%Y-%m-%d").to_string();
    if ids.is_empty() {
        tracing::info!(date = %date_text, "fds batch: no unscored orders");
        return Ok(json!({
            "date": date_text, "orders": 0, "chunks": 0, "group_id": null, "task_ids": [],
        }));
    }
    let group_id = Uuid::new_v4().to_string();
    let root_id = ctx
        .message
        .headers
        .root_id
        .clone()
        .unwrap_or_else(|| ctx.id().to_owned());
    let queue = queue_for(BATCH_FDS_EVALUATION);
    let chunks: Vec<TaskMessage> = ids
        .chunks(settings.batch_chunk_size.max(1))
        .zip(0_i64..)
        .map(|(chunk, index)| {
            let args = BatchFdsEvaluation {
                transaction_ids: Some(chunk.to_vec()),
                date: None,
            };
            let mut msg = TaskMessage::new(BATCH_FDS_EVALUATION, args.to_kwargs());
            msg.headers.group = Some(group_id.clone());
            msg.headers.group_index = Some(index);
            msg.headers.root_id = Some(root_id.clone());
            msg.headers.parent_id = Some(ctx.id().to_owned());
            msg
        })
        .collect();
    let pending: Vec<PendingTask> = chunks.iter().map(|m| PendingTask::task(m, queue)).collect();
    store
        .results()
        .record_pending(&pending)
        .await
        .map_err(shopfds_results::database_error)?;
    let outgoing: Vec<Outgoing> = chunks.iter().map(|m| Outgoing::task(m, queue)).collect();
    let published = ctx.publisher.publish_batch(&outgoing).await;
    let failed = published.iter().filter(|r| r.is_err()).count();
    if let Some(Err(e)) = published.iter().find(|r| r.is_err()) {
        // Chunks that did go out run; the retry publishes every chunk again and the once-only
        // evaluation absorbs the overlap.
        return Err(TaskError::transient(format!(
            "{failed} of {} chunks not confirmed by the broker: {e}",
            chunks.len()
        )));
    }
    tracing::info!(
        date = %date_text,
        orders = ids.len(),
        chunks = chunks.len(),
        group_id = %group_id,
        "fds batch fanned out"
    );
    Ok(json!({
        "date": date_text,
        "orders": ids.len(),
        "chunks": chunks.len(),
        "group_id": group_id,
        "task_ids": chunks.iter().map(|m| m.id()).collect::<Vec<_>>(),
    }))
}

/// The day before `now`'s date in Asia/Seoul.
pub fn yesterday_in_seoul(now: DateTime<Utc>) -> NaiveDate {
    let today = now.with_timezone(&Seoul).date_naive();
    today.pred_opt().unwrap_or(today)
}

/// `[00:00, next day 00:00)` of `date` in Asia/Seoul, in UTC.
pub fn seoul_day(date: NaiveDate) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let start = Seoul
        .from_local_datetime(&date.and_time(NaiveTime::MIN))
        .earliest()?;
    let end = Seoul
        .from_local_datetime(&date.succ_opt()?.and_time(NaiveTime::MIN))
        .earliest()?;
    Some((start.with_timezone(&Utc), end.with_timezone(&Utc)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn yesterday_is_counted_in_seoul() {
        // 2025-06-01 15:30 UTC is 2025-06-02 00:30 in Seoul: yesterday there is June 1st.
        let now = Utc.with_ymd_and_hms(2025, 6, 1, 15, 30, 0).unwrap();
        assert_eq!(
            yesterday_in_seoul(now),
            NaiveDate::from_ymd_opt(2025, 6, 1).unwrap()
        );
        let now = Utc.with_ymd_and_hms(2025, 6, 1, 14, 59, 0).unwrap();
        assert_eq!(
            yesterday_in_seoul(now),
            NaiveDate::from_ymd_opt(2025, 5, 31).unwrap()
        );
    }

    #[test]
    fn a_seoul_day_starts_at_15_utc_the_day_before() {
        let (from, until) = seoul_day(NaiveDate::from_ymd_opt(2025, 6, 2).unwrap()).unwrap();
        assert_eq!(from, Utc.with_ymd_and_hms(2025, 6, 1, 15, 0, 0).unwrap());
        assert_eq!(until, Utc.with_ymd_and_hms(2025, 6, 2, 15, 0, 0).unwrap());
    }

    #[test]
    fn arguments_bind_like_the_python_signature() {
        let msg = TaskMessage::new(BATCH_FDS_EVALUATION, Map::new());
        let args: BatchFdsEvaluation = msg.bind().unwrap();
        assert_eq!(args, BatchFdsEvaluation::default());

        let id = Uuid::new_v4();
        let mut msg = TaskMessage::new(BATCH_FDS_EVALUATION, Map::new());
        msg.args = vec![json!([id.to_string()])];
        let args: BatchFdsEvaluation = msg.bind().unwrap();
        assert_eq!(args.transaction_ids, Some(vec![id]));

        let kwargs = json!({"date": "2025-06-01"}).as_object().cloned().unwrap();
        let args: BatchFdsEvaluation = TaskMessage::new(BATCH_FDS_EVALUATION, kwargs)
            .bind()
            .unwrap();
        assert_eq!(args.date, NaiveDate::from_ymd_opt(2025, 6, 1));

        let kwargs = json!({"date": "June 1st"}).as_object().cloned().unwrap();
        let err = TaskMessage::new(BATCH_FDS_EVALUATION, kwargs)
            .bind::<BatchFdsEvaluation>()
            .unwrap_err();
        assert!(err.to_string().contains("date"), "{err}");
    }
}
