//! report-worker: the worker of queues `reports` and `maintenance` (sales reports, invoices, log
//! archiving). The task handlers come in later changes; for now it consumes both queues with an
//! empty registry, so every message is dead-lettered as an unknown task.

pub mod config;
pub mod startup;

pub use config::Settings;
pub use startup::Application;
