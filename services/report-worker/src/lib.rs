//! report-worker: the worker of queues `reports` and `maintenance` (sales reports, invoices, log
//! archiving). It runs `archive_old_logs`; the report and invoice handlers come in later
//! changes, and until then their messages are dead-lettered as unknown tasks.

pub mod config;
pub mod startup;
pub mod tasks;

pub use config::Settings;
pub use startup::Application;
