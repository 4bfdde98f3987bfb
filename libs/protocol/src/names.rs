//! Queue, exchange and task names: the topology of the seed, spelled once.
//!
//! A Celery app configured with the seed's `task_queues` declares exactly these objects, so Python
//! and Rust processes can share one broker without `PRECONDITION_FAILED` surprises.

/// The work queues. Each has a durable direct exchange of the same name, bound with the same
/// routing key, and dead-letters to [`DEAD_LETTER_EXCHANGE`] with key `failed.<queue>`.
pub const WORK_QUEUES: [&str; 5] = ["default", "email", "fds", "reports", "maintenance"];

/// The durable topic exchange every work queue dead-letters to.
pub const DEAD_LETTER_EXCHANGE: &str = "dlx";

/// kombu's native delayed delivery: `celery_delayed_27` … `celery_delayed_0` TTL levels ending in
/// this topic exchange (kombu/transport/native_delayed_delivery.py).
pub const DELAYED_DELIVERY_EXCHANGE: &str = "celery_delayed_delivery";
/// Number of binary levels of the delay tree; the longest delay is 2^28 - 1 seconds.
pub const DELAY_LEVELS: u32 = 28;

/// Headers we add to a message we dead-letter ourselves, so an operator sees why.
pub const REASON_HEADER: &str = "x-shopfds-reason";
pub const ORIGINAL_QUEUE_HEADER: &str = "x-shopfds-original-queue";
pub const FAILED_AT_HEADER: &str = "x-shopfds-failed-at";

/// `failed.<queue>`: both the dead-letter routing key and the dead-letter queue's name.
pub fn dead_letter_queue(queue: &str) -> String {
    format!("failed.{queue}")
}

/// `celery_delayed_<level>`: exchange and queue of one level of the delay tree.
pub fn delay_level_name(level: u32) -> String {
    format!("celery_delayed_{level}")
}

/// The routing key kombu's `calculate_routing_key` gives a message delayed by `seconds` on its
/// way to `routing_key`: the delay's 28 bits, most significant first, then the key.
/// `None` when the delay is out of the tree's range (0, or 2^28 s and more).
pub fn delayed_routing_key(seconds: u64, routing_key: &str) -> Option<String> {
    if seconds == 0 || seconds >= 1 << DELAY_LEVELS {
        return None;
    }
    let mut key = String::with_capacity(2 * DELAY_LEVELS as usize + routing_key.len());
    for bit in (0..DELAY_LEVELS).rev() {
        key.push(if (seconds >> bit) & 1 == 1 { '1' } else { '0' });
        key.push('.');
    }
    key.push_str(routing_key);
    Some(key)
}

/// Task names, as the seeds spell them, so `send_task("<name>", kwargs=…)` works from Python.
pub mod tasks {
    pub const SEND_ORDER_CONFIRMATION_EMAIL: &str = "send_order_confirmation_email";
    pub const GENERATE_INVOICE_PDF: &str = "generate_invoice_pdf";
    pub const SEND_INVOICE_EMAIL: &str = "send_invoice_email";
    pub const REGISTER_SHIPMENT: &str = "register_shipment";
    pub const BATCH_FDS_EVALUATION: &str = "batch_fds_evaluation";
    pub const EVALUATE_TRANSACTION: &str = "evaluate_transaction";
    pub const UPDATE_THREAT_INTELLIGENCE: &str = "update_threat_intelligence";
    pub const GENERATE_SALES_REPORT: &str = "generate_sales_report";
    pub const GENERATE_DAILY_SALES_REPORT: &str = "generate_daily_sales_report";
    pub const ARCHIVE_OLD_LOGS: &str = "archive_old_logs";
    pub const REPROCESS_FAILED_TASKS: &str = "reprocess_failed_tasks";
    pub const HEALTH_CHECK: &str = "health_check";

    /// Every task name above; `crate::signatures::TASK_SIGNATURES` gives each its arguments.
    pub const ALL: [&str; 12] = [
        SEND_ORDER_CONFIRMATION_EMAIL,
        GENERATE_INVOICE_PDF,
        SEND_INVOICE_EMAIL,
        REGISTER_SHIPMENT,
        BATCH_FDS_EVALUATION,
        EVALUATE_TRANSACTION,
        UPDATE_THREAT_INTELLIGENCE,
        GENERATE_SALES_REPORT,
        GENERATE_DAILY_SALES_REPORT,
        ARCHIVE_OLD_LOGS,
        REPROCESS_FAILED_TASKS,
        HEALTH_CHECK,
    ];

    /// The queue a task is routed to (Celery's `task_routes`); unknown names go to `default`.
    pub fn queue_for(task: &str) -> &'static str {
        match task {
            SEND_ORDER_CONFIRMATION_EMAIL | SEND_INVOICE_EMAIL => "email",
            GENERATE_INVOICE_PDF | GENERATE_SALES_REPORT | GENERATE_DAILY_SALES_REPORT => "reports",
            BATCH_FDS_EVALUATION | EVALUATE_TRANSACTION | UPDATE_THREAT_INTELLIGENCE => "fds",
            ARCHIVE_OLD_LOGS => "maintenance",
            _ => "default",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delayed_routing_key_matches_kombu() {
        // kombu: '.'.join(bin(5)[2:].zfill(28)) + '.email'
        let expected = format!("{}1.0.1.email", "0.".repeat(25));
        assert_eq!(
            delayed_routing_key(5, "email").as_deref(),
            Some(expected.as_str())
        );
        assert_eq!(delayed_routing_key(0, "email"), None);
        assert_eq!(delayed_routing_key(1 << 28, "email"), None);
        let max = delayed_routing_key((1 << 28) - 1, "q").unwrap_or_default();
        assert_eq!(max, format!("{}q", "1.".repeat(28)));
    }

    #[test]
    fn routes_order_tasks_to_their_queues() {
        assert_eq!(
            tasks::queue_for(tasks::SEND_ORDER_CONFIRMATION_EMAIL),
            "email"
        );
        assert_eq!(tasks::queue_for(tasks::GENERATE_INVOICE_PDF), "reports");
        assert_eq!(
            tasks::queue_for(tasks::GENERATE_DAILY_SALES_REPORT),
            "reports"
        );
        assert_eq!(tasks::queue_for(tasks::REGISTER_SHIPMENT), "default");
        assert_eq!(tasks::queue_for(tasks::BATCH_FDS_EVALUATION), "fds");
        assert_eq!(tasks::queue_for(tasks::ARCHIVE_OLD_LOGS), "maintenance");
        assert_eq!(dead_letter_queue("email"), "failed.email");
    }
}
