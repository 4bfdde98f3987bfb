//! Every task's Python signature, read off its Rust argument type: the one table the producers,
//! the workers and the stock Python stubs agree on.
//!
//! [`TASK_SIGNATURES`] has one entry per name of [`crate::tasks::ALL`], with the parameters of
//! the task's [`TaskArgs`] type in order and those without a default. The stubs of
//! `interop/python/shopfds_celery.py` must have exactly these signatures (same names, same
//! order, same required parameters); `tests/python_stubs.rs` introspects them with the stock
//! Python and fails on any difference, so a Python caller who follows a stub is not
//! dead-lettered by a Rust worker.

use crate::message::TaskArgs;
use crate::names::tasks;
use crate::payloads::{
    ArchiveOldLogs, BatchFdsEvaluation, EvaluateTransaction, GenerateDailySalesReport,
    GenerateSalesReport, HealthCheck, OrderTask, ReprocessFailedTasks, SendInvoiceEmail,
    UpdateThreatIntelligence,
};

/// A task's name and its Python signature (without `self`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskSignature {
    pub name: &'static str,
    /// `T::PARAMS`: every parameter, in order (positional arguments bind in this order).
    pub params: &'static [&'static str],
    /// `T::REQUIRED`: the parameters without a default, in the same order.
    pub required: &'static [&'static str],
}

impl TaskSignature {
    /// The signature of task `name`, whose arguments are `T`.
    pub const fn of<T: TaskArgs>(name: &'static str) -> TaskSignature {
        TaskSignature {
            name,
            params: T::PARAMS,
            required: T::REQUIRED,
        }
    }

    pub fn is_required(&self, param: &str) -> bool {
        self.required.contains(&param)
    }
}

/// Every task, in the order of [`tasks::ALL`].
pub const TASK_SIGNATURES: [TaskSignature; tasks::ALL.len()] = [
    TaskSignature::of::<OrderTask>(tasks::SEND_ORDER_CONFIRMATION_EMAIL),
    TaskSignature::of::<OrderTask>(tasks::GENERATE_INVOICE_PDF),
    TaskSignature::of::<SendInvoiceEmail>(tasks::SEND_INVOICE_EMAIL),
    TaskSignature::of::<OrderTask>(tasks::REGISTER_SHIPMENT),
    TaskSignature::of::<BatchFdsEvaluation>(tasks::BATCH_FDS_EVALUATION),
    TaskSignature::of::<EvaluateTransaction>(tasks::EVALUATE_TRANSACTION),
    TaskSignature::of::<UpdateThreatIntelligence>(tasks::UPDATE_THREAT_INTELLIGENCE),
    TaskSignature::of::<GenerateSalesReport>(tasks::GENERATE_SALES_REPORT),
    TaskSignature::of::<GenerateDailySalesReport>(tasks::GENERATE_DAILY_SALES_REPORT),
    TaskSignature::of::<ArchiveOldLogs>(tasks::ARCHIVE_OLD_LOGS),
    TaskSignature::of::<ReprocessFailedTasks>(tasks::REPROCESS_FAILED_TASKS),
    TaskSignature::of::<HealthCheck>(tasks::HEALTH_CHECK),
];

/// The signature of the task called `name`, if it is one of ours.
pub fn task_signature(name: &str) -> Option<&'static TaskSignature> {
    TASK_SIGNATURES.iter().find(|sig| sig.name == name)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::message::ProtocolError;
    use crate::payloads::test_support::bind;

    #[test]
    fn one_entry_per_task_name_in_order() {
        let names: Vec<&str> = TASK_SIGNATURES.iter().map(|sig| sig.name).collect();
        assert_eq!(names, tasks::ALL);
        assert_eq!(
            task_signature(tasks::SEND_INVOICE_EMAIL).map(|sig| sig.params),
            Some(&["invoice", "order_id"][..])
        );
        assert_eq!(task_signature("interop.fail_permanently"), None);
    }

    #[test]
    fn required_parameters_are_params_in_order() {
        for sig in &TASK_SIGNATURES {
            let in_order: Vec<&str> = sig
                .params
                .iter()
                .copied()
                .filter(|p| sig.is_required(p))
                .collect();
            assert_eq!(in_order, sig.required, "{}", sig.name);
        }
    }

    /// `REQUIRED` says what serde does: a call without arguments binds exactly when nothing is
    /// required, and otherwise names the first required parameter.
    fn required_matches_serde<T: TaskArgs + std::fmt::Debug>() {
        let bound = bind::<T>(json!([]), json!({}));
        match T::REQUIRED.first() {
            None => assert!(bound.is_ok(), "{bound:?}"),
            Some(first) => assert!(
                matches!(&bound, Err(ProtocolError::InvalidArgument { name, .. }) if name == first),
                "{bound:?}"
            ),
        }
    }

    #[test]
    fn required_is_what_binding_requires() {
        required_matches_serde::<OrderTask>();
        required_matches_serde::<SendInvoiceEmail>();
        required_matches_serde::<EvaluateTransaction>();
        required_matches_serde::<BatchFdsEvaluation>();
        required_matches_serde::<UpdateThreatIntelligence>();
        required_matches_serde::<GenerateSalesReport>();
        required_matches_serde::<ArchiveOldLogs>();
        required_matches_serde::<ReprocessFailedTasks>();
    }
}

/// Whether `args` and `kwargs` bind to task `task`'s argument type, as a worker would bind them
/// (unknown, missing and mistyped arguments are named); an unknown task is an error too. For
/// producers that build a call from a person's input (an edited dead letter).
pub fn check_arguments(
    task: &str,
    args: &[serde_json::Value],
    kwargs: &serde_json::Map<String, serde_json::Value>,
) -> Result<(), crate::message::ProtocolError> {
    fn check<T: TaskArgs>(
        args: &[serde_json::Value],
        kwargs: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), crate::message::ProtocolError> {
        crate::message::bind_args::<T>(args, kwargs).map(|_| ())
    }
    match task {
        tasks::SEND_ORDER_CONFIRMATION_EMAIL
        | tasks::GENERATE_INVOICE_PDF
        | tasks::REGISTER_SHIPMENT => check::<OrderTask>(args, kwargs),
        tasks::SEND_INVOICE_EMAIL => check::<SendInvoiceEmail>(args, kwargs),
        tasks::BATCH_FDS_EVALUATION => check::<BatchFdsEvaluation>(args, kwargs),
        tasks::EVALUATE_TRANSACTION => check::<EvaluateTransaction>(args, kwargs),
        tasks::UPDATE_THREAT_INTELLIGENCE => check::<UpdateThreatIntelligence>(args, kwargs),
        tasks::GENERATE_SALES_REPORT => check::<GenerateSalesReport>(args, kwargs),
        tasks::GENERATE_DAILY_SALES_REPORT => check::<GenerateDailySalesReport>(args, kwargs),
        tasks::ARCHIVE_OLD_LOGS => check::<ArchiveOldLogs>(args, kwargs),
        tasks::REPROCESS_FAILED_TASKS => check::<ReprocessFailedTasks>(args, kwargs),
        tasks::HEALTH_CHECK => check::<HealthCheck>(args, kwargs),
        other => Err(crate::message::ProtocolError::InvalidArgument {
            name: "task".to_owned(),
            message: format!("unknown task {other:?}"),
        }),
    }
}

#[cfg(test)]
mod check_tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn every_task_is_checked_and_a_bad_argument_is_named() {
        for name in tasks::ALL {
            // Every name has a binding (an unknown-task error would name `task`).
            let outcome = check_arguments(name, &[], &serde_json::Map::new());
            if let Err(crate::message::ProtocolError::InvalidArgument { name: culprit, .. }) =
                &outcome
            {
                assert_ne!(culprit, "task", "{name} has no binding");
            }
        }
        let kwargs = json!({"order_id": "not-a-uuid"});
        let err = check_arguments(tasks::REGISTER_SHIPMENT, &[], kwargs.as_object().unwrap());
        assert!(
            matches!(err, Err(crate::message::ProtocolError::InvalidArgument { ref name, .. }) if name == "order_id"),
            "{err:?}"
        );
        let ok = json!({"order_id": "5f0c6a52-7c0e-4d8a-9d0b-3a1c2b4e5f60"});
        assert!(check_arguments(tasks::REGISTER_SHIPMENT, &[], ok.as_object().unwrap()).is_ok());
    }
}
