//! fds-worker: fraud detection for ShopFDS.
//!
//! - [`auth`]: who may call which RPC (API keys with scopes, or a verified client certificate);
//! - [`grpc`]: the `fds.v1.FraudDetection` score server (order-api calls it before writing an
//!   order), with grpc.health.v1 and reflection;
//! - [`engine`]: the rule engine ([`engine::Engine::assess`]), its hot-reloaded rules file and
//!   the run-time threat intelligence, usable from the queue tasks too;
//! - [`recorder`]: every decision written to `fds_results` in the background;
//! - [`velocity`]: the orders of the last 24 h per customer, IP and card, in memory on every
//!   replica and fed by the database, so Score needs no query;
//! - [`tasks`]: the worker of queue `fds`: `evaluate_transaction`, `batch_fds_evaluation` (the
//!   nightly batch, fanned out as a group of chunks) and `update_threat_intelligence`.

pub mod auth;
pub mod config;
pub mod engine;
pub mod grpc;
pub mod metrics;
pub mod recorder;
pub mod startup;
pub mod tasks;
pub mod tls;
pub mod velocity;

pub use config::{FdsSettings, Settings};
pub use grpc::FraudDetectionService;
pub use startup::Application;
