//! fds-worker: fraud detection for ShopFDS.
//!
//! - [`grpc`]: the `fds.v1.FraudDetection` score server (order-api calls it before writing an
//!   order), with grpc.health.v1 and reflection;
//! - [`engine`]: the rule engine ([`engine::Engine::assess`]), its hot-reloaded rules file and
//!   the run-time threat intelligence, usable from the queue tasks too;
//! - [`recorder`]: every decision written to `fds_results` in the background;
//! - the worker of queue `fds`, with an empty registry until its task handlers land (messages
//!   are dead-lettered as unknown tasks).

pub mod config;
pub mod engine;
pub mod grpc;
pub mod metrics;
pub mod recorder;
pub mod startup;
pub mod tasks;

pub use config::{FdsSettings, Settings};
pub use grpc::FraudDetectionService;
pub use startup::Application;
