//! The result backends against the real servers: a real Rust worker writes, a stock Python
//! Celery client (`interop/python/results_client.py`) reads, as a Python user would.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod chords;
mod helpers;
mod redis_results;
mod rpc_results;
mod settings_build;
