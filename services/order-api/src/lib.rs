//! order-api: the HTTP API of ShopFDS orders. It validates an order, writes it and its task
//! messages in one transaction, answers at once, and relays the messages to RabbitMQ;
//! housekeeping purges what has expired.

pub mod auth;
pub mod config;
pub mod domain;
pub mod error;
pub mod fds;
pub mod fds_targets;
pub mod fds_tls;
pub mod housekeeping;
pub mod keys;
pub mod routes;
pub mod security;
pub mod startup;

pub use config::Settings;
pub use startup::Application;
