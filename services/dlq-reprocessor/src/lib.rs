//! dlq-reprocessor: will inspect, replay and purge the dead-letter queues `failed.<queue>`. Those
//! operations come in a later change; for now it connects to PostgreSQL (migrating it) and
//! RabbitMQ, declares the topology and serves the operations endpoints.

pub mod config;
pub mod startup;

pub use config::Settings;
pub use startup::Application;
