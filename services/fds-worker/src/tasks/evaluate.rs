//! `evaluate_transaction(order_id)`: one stored order scored again by the rule engine, as of the
//! moment it was placed, exactly once per order.
//!
//! The evaluation runs inside the once-only guard `fds-evaluation:<order_id>` (an advisory lock
//! and a transaction): the order's facts and velocity are read, the `batch` decision inserted,
//! and, for an order that was never scored in real time (order-api stored its fallback), the new
//! `fds` JSON and status written — all committed together with the guard's completion record.
//! A second delivery, or another replica running the same order at the same moment, waits for
//! the first and then finds it done. [`evaluate_order`] is shared with `batch_fds_evaluation`.

use std::net::IpAddr;
use std::time::Duration;

use serde_json::{Value, json};
use shopfds_broker::{TaskContext, TaskError};
use shopfds_protocol::payloads::EvaluateTransaction;
use shopfds_store::fds_batch::{order_to_evaluate, set_unscored_order_fds};
use shopfds_store::{FdsSource, NewFdsResult, OrderToEvaluate, Store, StoreError, VelocityQuery};
use uuid::Uuid;

use crate::engine::{Assessment, Decision, Engine, OrderFacts};
use crate::metrics;

/// The velocity windows of the Score path (1 h and 24 h before the order).
const SHORT_WINDOW: Duration = Duration::from_secs(3600);
const LONG_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// The once-only key of an order's batch evaluation.
pub fn once_key(order_id: Uuid) -> String {
    format!("fds-evaluation:{order_id}")
}

/// Why an order could not be evaluated.
#[derive(Debug, thiserror::Error)]
pub enum EvaluateError {
    #[error("order {0} not found")]
    NotFound(Uuid),
    #[error("{0}")]
    Store(#[from] StoreError),
}

impl From<EvaluateError> for TaskError {
    /// An unknown order will stay unknown; an unreachable database is waited out without
    /// spending a retry; an error the database answered is worth retrying.
    fn from(e: EvaluateError) -> TaskError {
        match e {
            EvaluateError::NotFound(_) => TaskError::permanent(e),
            EvaluateError::Store(e) => shopfds_results::database_error(e),
        }
    }
}

/// One order's evaluation, as recorded (or as a previous run recorded it).
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// False when a previous run had evaluated the order already; `result` is that run's.
    pub fresh: bool,
    /// `{order_id, score, decision, reasons, rules_version, source, order_updated, order_status}`.
    pub result: Value,
}

impl Evaluation {
    /// Whether this run wrote the order's new fds and status.
    pub fn order_updated(&self) -> bool {
        self.fresh && self.result["order_updated"] == json!(true)
    }

    pub fn decision(&self) -> Option<&str> {
        self.result["decision"].as_str()
    }
}

/// Evaluates `order_id` once; `task_id` is recorded with the guard.
pub async fn evaluate_order(
    store: &Store,
    engine: &Engine,
    order_id: Uuid,
    task_id: &str,
) -> Result<Evaluation, EvaluateError> {
    let mut once = store.once().begin(&once_key(order_id)).await?;
    if let Some(first) = once.already_done() {
        tracing::debug!(%order_id, "order already evaluated; nothing to do");
        return Ok(Evaluation {
            fresh: false,
            result: first.clone(),
        });
    }
    let conn = &mut **once.transaction();
    // Dropping the guard on an early return rolls everything back.
    let order = order_to_evaluate(conn, order_id)
        .await?
        .ok_or(EvaluateError::NotFound(order_id))?;
    let mut facts = order_facts(&order);
    let velocity = VelocityQuery {
        customer_id: facts.customer_id.clone(),
        client_ip: facts.client_ip.map(|ip| ip.to_string()),
        card_fingerprint: facts.card_fingerprint.clone(),
        exclude_order: Some(order.id),
        at: order.created_at,
        short_window: SHORT_WINDOW,
        long_window: LONG_WINDOW,
    };
    facts.velocity = Some(shopfds_store::velocity::counts_as_of(conn, &velocity).await?);
    // Account age and velocity as they were when the order was placed.
    let assessment = engine.assess_at(&facts, order.created_at);
    let reasons = serde_json::to_value(&assessment.reasons).unwrap_or_else(|_| json!([]));
    shopfds_store::fds::insert(
        conn,
        &NewFdsResult {
            order_id: order.id.to_string(),
            score: i32::try_from(assessment.score).unwrap_or(100),
            decision: assessment.decision.into(),
            reasons: reasons.clone(),
            rules_version: assessment.rules_version.clone(),
            source: FdsSource::Batch,
        },
    )
    .await?;
    let status = order_status(assessment.decision);
    let updated = set_unscored_order_fds(conn, order.id, &fds_json(&assessment), status).await?;
    let result = json!({
        "order_id": order.id.to_string(),
        "score": assessment.score,
        "decision": assessment.decision.as_str(),
        "reasons": reasons,
        "rules_version": assessment.rules_version,
        "source": FdsSource::Batch.as_str(),
        "order_updated": updated,
        "order_status": if updated { Value::from(status) } else { Value::Null },
    });
    once.complete(task_id, result.clone()).await?;
    metrics::decisions_total()
        .with_label_values(&[assessment.decision.as_str(), FdsSource::Batch.as_str()])
        .inc();
    tracing::info!(
        %order_id,
        score = assessment.score,
        decision = assessment.decision.as_str(),
        order_updated = updated,
        "order evaluated"
    );
    Ok(Evaluation {
        fresh: true,
        result,
    })
}

/// The task handler.
pub async fn run(
    EvaluateTransaction { order_id }: EvaluateTransaction,
    ctx: TaskContext,
    store: &Store,
    engine: &Engine,
) -> Result<Value, TaskError> {
    let evaluation = evaluate_order(store, engine, order_id, ctx.id()).await?;
    let mut result = evaluation.result;
    if let Some(obj) = result.as_object_mut() {
        let outcome = if evaluation.fresh {
            "evaluated"
        } else {
            "already_evaluated"
        };
        obj.insert("outcome".to_owned(), json!(outcome));
    }
    Ok(result)
}

/// The `fds` JSON of an order, in the shape order-api stores.
pub fn fds_json(a: &Assessment) -> Value {
    json!({
        "score": a.score,
        "decision": a.decision.as_str(),
        "reasons": a.reasons.iter().map(|r| json!({
            "rule_id": r.rule_id, "weight": r.weight, "message": r.message,
        })).collect::<Vec<_>>(),
        "rules_version": a.rules_version,
        "source": FdsSource::Batch.as_str(),
    })
}

/// The order status a decision gives (as order-api maps it).
pub fn order_status(decision: Decision) -> &'static str {
    match decision {
        Decision::Approve => "accepted",
        Decision::Review => "review",
        Decision::Block => "blocked",
    }
}

/// The rule engine's view of a stored order. An unparsable stored IP counts as none (the IP
/// rules are skipped) rather than failing the evaluation.
pub fn order_facts(order: &OrderToEvaluate) -> OrderFacts {
    let client_ip = order
        .client_ip
        .as_deref()
        .map(str::trim)
        .filter(|ip| !ip.is_empty())
        .and_then(|ip| match ip.parse::<IpAddr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                tracing::warn!(order_id = %order.id, client_ip = ip, "stored client IP unparsable; IP rules skipped");
                None
            }
        });
    OrderFacts {
        order_id: order.id.to_string(),
        customer_id: order.customer_id.clone(),
        email: order.customer_email.clone(),
        client_ip,
        amount: order.total,
        currency: order.currency.to_ascii_uppercase(),
        shipping_country: order
            .shipping_country
            .as_deref()
            .unwrap_or_default()
            .trim()
            .to_ascii_uppercase(),
        billing_country: order.billing_country.trim().to_ascii_uppercase(),
        card_fingerprint: order
            .card_fingerprint
            .clone()
            .filter(|f| !f.trim().is_empty()),
        account_created_at: order.account_created_at,
        velocity: None,
    }
}
