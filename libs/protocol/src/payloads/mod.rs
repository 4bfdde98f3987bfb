//! The typed arguments of every task, used by producer and consumer alike, so a handler never
//! reads a JSON map by hand and a caller cannot send what the handler cannot bind.
//!
//! Each type is the Python signature of its task (`interop/python/shopfds_celery.py`): field
//! names are the parameter names, `TaskArgs::PARAMS` their order (positional arguments bind in
//! that order), `TaskArgs::REQUIRED` those without a default; unknown keyword arguments are
//! refused. [`crate::signatures`] lists which type each task name takes.
//!
//! | area | tasks |
//! |---|---|
//! | [`orders`] | `send_order_confirmation_email`, `generate_invoice_pdf`, `register_shipment` ([`OrderTask`]), `send_invoice_email` ([`SendInvoiceEmail`]) |
//! | [`fds`] | `evaluate_transaction`, `batch_fds_evaluation`, `update_threat_intelligence` |
//! | [`reports`] | `generate_sales_report`, `generate_daily_sales_report` |
//! | [`maintenance`] | `archive_old_logs`, `reprocess_failed_tasks`, `health_check` |

pub mod fds;
pub mod maintenance;
pub mod orders;
pub mod reports;

pub use fds::{BatchFdsEvaluation, EvaluateTransaction, UpdateThreatIntelligence};
pub use maintenance::{ArchiveOldLogs, HealthCheck, ReprocessFailedTasks};
pub use orders::{OrderTask, SendInvoiceEmail};
pub use reports::{
    GenerateDailySalesReport, GenerateSalesReport, MAX_REPORT_DAYS, ReportRangeError,
};

#[cfg(test)]
pub(crate) mod test_support {
    use serde_json::{Map, Value};

    use crate::message::{ProtocolError, TaskArgs, TaskMessage};

    /// Binds `args` and `kwargs` (a JSON object) to `T` as a delivered message would be.
    pub fn bind<T: TaskArgs>(args: Value, kwargs: Value) -> Result<T, ProtocolError> {
        let mut msg = TaskMessage::new("test", kwargs.as_object().cloned().unwrap_or_default());
        msg.args = match args {
            Value::Array(args) => args,
            _ => Vec::new(),
        };
        msg.bind()
    }

    /// The argument a binding error names.
    pub fn culprit<T: TaskArgs + std::fmt::Debug>(args: Value, kwargs: Value) -> String {
        match bind::<T>(args, kwargs) {
            Err(ProtocolError::InvalidArgument { name, .. }) => name,
            other => panic!("expected an argument error, got {other:?}"),
        }
    }

    /// The keyword arguments of `value` round-trip through a message.
    pub fn round_trips<T: TaskArgs + PartialEq + std::fmt::Debug>(value: &T) {
        let kwargs: Map<String, Value> = value.to_kwargs();
        let back: T = bind(Value::Array(Vec::new()), Value::Object(kwargs)).unwrap();
        assert_eq!(&back, value);
    }
}
