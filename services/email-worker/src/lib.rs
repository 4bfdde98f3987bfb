//! email-worker: the worker of queues `email` and `default`. It renders and sends customer mail
//! through SMTP (lettre), once per order even when a message is delivered twice, and registers
//! orders' shipments with the shipping partner's HTTP API (`register_shipment`).

pub mod config;
pub mod mail;
pub mod partner;
pub mod startup;
pub mod tasks;

pub use config::Settings;
pub use startup::Application;
