//! HTTP routes of the public API.

pub mod orders;
pub mod tasks;
