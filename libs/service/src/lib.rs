//! The service shell: what every ShopFDS binary does the same way.
//!
//! A binary is its settings (a type implementing [`ServiceSettings`], read through the one
//! [`Env`] reader), and a `run` function that spawns its named parts on a [`Supervisor`]:
//!
//! ```ignore
//! fn main() -> std::process::ExitCode {
//!     shopfds_service::main::<Settings, _>(|settings, shutdown| async move {
//!         Application::build(settings).await?.run_until_stopped(shutdown).await
//!     })
//! }
//! ```
//!
//! [`main`] sizes the thread stack, reads the settings (a bad variable is named on stderr and the
//! process exits with status 2 before anything starts), starts telemetry, logs the settings
//! (secrets are redacted by their types), turns SIGTERM and SIGINT into one cancellation token,
//! and maps the outcome to the exit status. The [`Supervisor`] runs the parts (ops server, HTTP
//! server, consumers, relays), cancels all of them when one fails, and joins them within the
//! grace period: shutdown happens in one place.

pub mod admin;
mod broker;
mod ops;
pub mod relay;
mod run;
mod settings;
mod supervisor;

pub use broker::{spawn_topology, spawn_topology_with, spawn_worker};
pub use ops::{bind_ops, serve_ops, serve_ops_with};
pub use run::{command, main, variables};
pub use settings::{ServiceSettings, ShellSettings};
pub use shopfds_config::{ConfigError, Env, Secret, SecretUrl};
pub use supervisor::{PartOutcome, Supervisor};
