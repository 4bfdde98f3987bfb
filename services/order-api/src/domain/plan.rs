//! The order's plan: the tasks an accepted order sets off, defined here once.
//!
//! As in the scenario (seed 004), every order that is not blocked starts one canvas,
//!
//! ```text
//! group(send_order_confirmation_email,
//!       chain(generate_invoice_pdf → send_invoice_email),
//!       register_shipment)
//! ```
//!
//! each called with `order_id`; the invoice email receives the PDF task's result as its first
//! argument. An order whose fraud check fell back to the configured decision is evaluated first
//! (`evaluate_transaction`, when an fds-worker is up) and the canvas is the next link of that
//! chain: its tasks wait for the evaluation, and each skips an order the evaluation blocked. A
//! blocked order starts nothing.
//!
//! The plan is a Celery canvas, frozen here so every task id is known before anything is
//! written: the ids go into the answer, the PENDING rows and the outbox in one transaction.

use shopfds_protocol::canvas::SignatureKind;
use shopfds_protocol::canvas::{Apply, CanvasError, Planned, apply};
use shopfds_protocol::payloads::{EvaluateTransaction, OrderTask};
use shopfds_protocol::{Signature, TaskArgs, tasks};
use uuid::Uuid;

/// How the order was decided, which is all the plan depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decided {
    /// Scored in real time, not blocked.
    Accepted,
    /// Scored in real time and blocked.
    Blocked,
    /// The score was not had in time: the configured fallback decision, evaluated later.
    Fallback,
}

/// One task of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedTask {
    pub name: String,
    pub id: String,
    pub queue: String,
}

/// What to write with the order: the messages to publish now (the rest ride inside them) and
/// every task of the plan, in the canvas' order.
#[derive(Debug, Clone, Default)]
pub struct OrderPlan {
    pub messages: Vec<Planned>,
    pub tasks: Vec<PlannedTask>,
}

/// The scenario's canvas for `order_id`. Members are immutable where a parent's result must not
/// become their first argument (after an evaluation); the invoice email is not: it takes the
/// PDF's result.
pub fn order_canvas(order_id: Uuid) -> Signature {
    let call = |task: &str| Signature::new(task, OrderTask { order_id }.to_kwargs());
    Signature::group(vec![
        call(tasks::SEND_ORDER_CONFIRMATION_EMAIL).immutable(),
        Signature::chain(vec![
            call(tasks::GENERATE_INVOICE_PDF).immutable(),
            call(tasks::SEND_INVOICE_EMAIL),
        ]),
        call(tasks::REGISTER_SHIPMENT).immutable(),
    ])
}

/// The plan of an order decided as `decided`.
pub fn plan(order_id: Uuid, decided: Decided) -> Result<OrderPlan, CanvasError> {
    let mut canvas = match decided {
        Decided::Blocked => return Ok(OrderPlan::default()),
        Decided::Accepted => order_canvas(order_id),
        Decided::Fallback => Signature::chain(vec![
            Signature::new(
                tasks::EVALUATE_TRANSACTION,
                EvaluateTransaction { order_id }.to_kwargs(),
            ),
            order_canvas(order_id),
        ]),
    };
    canvas.freeze()?;
    let mut planned = Vec::new();
    collect(&canvas, &mut planned)?;
    Ok(OrderPlan {
        messages: apply(&canvas, Apply::root())?,
        tasks: planned,
    })
}

/// Every task signature in `sig`, depth first.
fn collect(sig: &Signature, out: &mut Vec<PlannedTask>) -> Result<(), CanvasError> {
    match sig.kind() {
        SignatureKind::Task => {
            out.push(PlannedTask {
                name: sig.task.clone(),
                id: sig.task_id().unwrap_or_default().to_owned(),
                queue: tasks::queue_for(&sig.task).to_owned(),
            });
        }
        SignatureKind::Chain | SignatureKind::Group => {
            for member in sig.members()? {
                collect(&member, out)?;
            }
        }
        SignatureKind::Chord => {
            let (header, body) = sig.chord_parts()?;
            collect(&header, out)?;
            collect(&body, out)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(plan: &OrderPlan) -> Vec<&str> {
        plan.tasks.iter().map(|t| t.name.as_str()).collect()
    }

    #[test]
    fn an_accepted_order_starts_its_three_branches_and_the_invoice_mail_follows_the_pdf() {
        let order = Uuid::new_v4();
        let plan = plan(order, Decided::Accepted).unwrap();
        assert_eq!(
            names(&plan),
            [
                tasks::SEND_ORDER_CONFIRMATION_EMAIL,
                tasks::GENERATE_INVOICE_PDF,
                tasks::SEND_INVOICE_EMAIL,
                tasks::REGISTER_SHIPMENT
            ]
        );
        let started: Vec<(&str, &str)> = plan
            .messages
            .iter()
            .map(|p| (p.message.task(), p.queue.as_str()))
            .collect();
        assert_eq!(
            started,
            [
                (tasks::SEND_ORDER_CONFIRMATION_EMAIL, "email"),
                (tasks::GENERATE_INVOICE_PDF, "reports"),
                (tasks::REGISTER_SHIPMENT, "default"),
            ]
        );
        // One group of three members; as Celery does, the chain's member of the group is its
        // last task (the invoice mail), which carries the group id.
        let group = plan.messages[0].message.headers.group.clone();
        assert!(group.is_some());
        assert_eq!(plan.messages[2].message.headers.group, group);
        let pdf = &plan.messages[1].message;
        assert_eq!(pdf.headers.group, None);
        // The invoice mail rides in the PDF's message, with the id the answer gives.
        let next = pdf.embed.chain.as_ref().unwrap();
        assert_eq!(
            next[0].options.get("group_id").and_then(|v| v.as_str()),
            group.as_deref()
        );
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].task, tasks::SEND_INVOICE_EMAIL);
        assert!(
            !next[0].immutable,
            "the invoice mail takes the PDF's result"
        );
        assert_eq!(next[0].task_id(), Some(plan.tasks[2].id.as_str()));
        // Every id is distinct and is the id of what is published.
        for (planned, published) in [(0, 0), (1, 1), (3, 2)] {
            assert_eq!(
                plan.tasks[planned].id,
                plan.messages[published].message.id()
            );
        }
        let mut ids: Vec<&str> = plan.tasks.iter().map(|t| t.id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 4);
        for msg in &plan.messages {
            assert_eq!(msg.message.kwargs["order_id"], order.to_string());
        }
    }

    #[test]
    fn a_fallback_order_is_evaluated_first_and_the_canvas_waits_for_it() {
        let plan = plan(Uuid::new_v4(), Decided::Fallback).unwrap();
        assert_eq!(plan.tasks[0].name, tasks::EVALUATE_TRANSACTION);
        assert_eq!(plan.tasks.len(), 5);
        assert_eq!(plan.messages.len(), 1, "only the evaluation is published");
        let evaluation = &plan.messages[0];
        assert_eq!(evaluation.queue, "fds");
        let next = evaluation.message.embed.chain.as_ref().unwrap();
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].kind(), SignatureKind::Group);
        // The evaluation's result is not passed on as an order id.
        let members = next[0].members().unwrap();
        assert!(members[0].immutable && members[2].immutable);
        assert!(members[1].members().unwrap()[0].immutable);
    }

    #[test]
    fn a_blocked_order_starts_nothing() {
        let plan = plan(Uuid::new_v4(), Decided::Blocked).unwrap();
        assert!(plan.messages.is_empty() && plan.tasks.is_empty());
    }
}
