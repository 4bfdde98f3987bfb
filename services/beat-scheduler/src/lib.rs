//! beat-scheduler: publishes the periodic tasks (celery beat's job) exactly once per planned
//! time however many replicas run, in a configured time zone (Asia/Seoul by default).
//!
//! - [`schedule`]: a schedule (crontab via `croner`, or a fixed interval) and its run times;
//! - [`file`]: the checked-in schedule file, seeded into PostgreSQL at start;
//! - [`plan`]: which slots are due, a pure function of the schedules, the last slots and now;
//! - [`ticker`]: each tick claims the due slots with their messages in one transaction (the
//!   slot's primary key lets one replica through), and the outbox relay publishes them;
//! - [`cli`]: `beat-scheduler list` and `beat-scheduler schedules …` (add, pause, resume,
//!   remove), on the same database, taking effect within a tick; [`api`]: the same over HTTP on
//!   the ops port.

pub mod api;
pub mod cli;
pub mod config;
pub mod file;
pub mod plan;
pub mod schedule;
pub mod startup;
pub mod ticker;

pub use config::Settings;
pub use startup::Application;
