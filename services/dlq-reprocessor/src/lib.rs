//! dlq-reprocessor: the dead-letter workbench. It lists the dead-letter queues and their
//! messages, replays them (one, a filtered set, or all; with edited arguments; parking a message
//! replayed too often), and purges a queue when told twice — over an HTTP API on its operations
//! port ([`api`]) and from the command line ([`cli`]), on the same code ([`workbench`]).

pub mod api;
pub mod cli;
pub mod config;
pub mod depths;
pub mod startup;
pub mod workbench;

pub use config::Settings;
pub use startup::Application;
