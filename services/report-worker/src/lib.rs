//! report-worker: the worker of queues `reports` and `maintenance` (sales reports, invoices, log
//! archiving). It runs `archive_old_logs`, `generate_sales_report` and
//! `generate_daily_sales_report`; the invoice handler comes in a later change, and until then
//! its messages are dead-lettered as unknown tasks.

pub mod config;
pub mod startup;
pub mod tasks;

pub use config::Settings;
pub use startup::Application;
