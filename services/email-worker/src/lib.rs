//! email-worker: the worker of queues `email` and `default`. It renders and sends customer mail
//! through SMTP (lettre), once per order even when a message is delivered twice.

pub mod config;
pub mod mail;
pub mod startup;
pub mod tasks;

pub use config::Settings;
pub use startup::Application;
