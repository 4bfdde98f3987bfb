//! The real binaries of an order's path (order-api, fds-worker, email-worker, report-worker) as
//! processes on one database and vhost ([`fleet`]), seen from outside as an operator sees them:
//! - [`trace`]: one order is one trace across every service, in a real OTLP collector;
//! - [`flower`]: stock Flower and `celery inspect` see and steer the Rust workers;
//! - [`balance`]: Score calls are spread over every fds-worker.
//!
//! The service binaries are built first (`shopfds_testkit::binaries::build`; nothing to do when
//! they are fresh), so the tests run the code of this checkout.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod balance;
mod fleet;
mod flower;
mod trace;
