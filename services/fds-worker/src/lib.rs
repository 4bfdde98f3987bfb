//! fds-worker: the worker of queue `fds` (batch fraud evaluation, threat-intelligence refresh).
//! The gRPC score server and the task handlers come in later changes; for now it consumes `fds`
//! with an empty registry, so every message is dead-lettered as an unknown task.

pub mod config;
pub mod startup;

pub use config::Settings;
pub use startup::Application;
