//! The wire contract every ShopFDS service agrees on: the Celery message protocol v2 envelope,
//! task names and their typed keyword arguments, queue and exchange names, and task states.

pub mod state;

pub use state::TaskState;
