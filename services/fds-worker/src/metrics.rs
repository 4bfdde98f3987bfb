//! fds-worker's own Prometheus collectors, registered in the process-wide registry that
//! `/metrics` renders.

use std::sync::LazyLock;

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts};

struct Collectors {
    decisions_total: IntCounterVec,
    results_dropped_total: IntCounter,
    results_write_failed_total: IntCounter,
    velocity_unavailable_total: IntCounter,
    velocity_index_orders: IntGauge,
    velocity_index_synced: IntGauge,
    velocity_resyncs_total: IntCounter,
    score_duration_seconds: Histogram,
}

static COLLECTORS: LazyLock<Collectors> = LazyLock::new(build);

#[expect(
    clippy::expect_used,
    reason = "names, help texts and labels are constants: an error is a programming mistake that \
              the crate's tests hit on first access"
)]
fn build() -> Collectors {
    let c = Collectors {
        decisions_total: IntCounterVec::new(
            Opts::new(
                "shopfds_fds_decisions_total",
                "Fraud decisions made, by decision and source.",
            ),
            &["decision", "source"],
        )
        .expect("valid collector"),
        results_dropped_total: IntCounter::new(
            "shopfds_fds_results_dropped_total",
            "Decisions not recorded because the writer's buffer was full.",
        )
        .expect("valid collector"),
        results_write_failed_total: IntCounter::new(
            "shopfds_fds_results_write_failed_total",
            "Decisions lost because writing their batch to fds_results failed.",
        )
        .expect("valid collector"),
        velocity_unavailable_total: IntCounter::new(
            "shopfds_fds_velocity_unavailable_total",
            "Scores made without velocity rules because the velocity query failed or was slow.",
        )
        .expect("valid collector"),
        velocity_index_orders: IntGauge::new(
            "shopfds_fds_velocity_index_orders",
            "Orders of the last 24 h held by this replica's in-memory velocity index.",
        )
        .expect("valid collector"),
        velocity_index_synced: IntGauge::new(
            "shopfds_fds_velocity_index_synced",
            "1 while the velocity index follows new orders; 0 while Score counts in the database.",
        )
        .expect("valid collector"),
        velocity_resyncs_total: IntCounter::new(
            "shopfds_fds_velocity_resyncs_total",
            "Times the velocity index lost its feed from the database and was reloaded.",
        )
        .expect("valid collector"),
        score_duration_seconds: Histogram::with_opts(
            HistogramOpts::new(
                "shopfds_fds_score_duration_seconds",
                "Time to score one order on the gRPC path, velocity query included.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
            ]),
        )
        .expect("valid collector"),
    };
    let registry = shopfds_telemetry::metrics::registry();
    let _ = registry.register(Box::new(c.decisions_total.clone()));
    let _ = registry.register(Box::new(c.results_dropped_total.clone()));
    let _ = registry.register(Box::new(c.results_write_failed_total.clone()));
    let _ = registry.register(Box::new(c.velocity_unavailable_total.clone()));
    let _ = registry.register(Box::new(c.velocity_index_orders.clone()));
    let _ = registry.register(Box::new(c.velocity_index_synced.clone()));
    let _ = registry.register(Box::new(c.velocity_resyncs_total.clone()));
    let _ = registry.register(Box::new(c.score_duration_seconds.clone()));
    c
}

pub fn decisions_total() -> &'static IntCounterVec {
    &COLLECTORS.decisions_total
}

pub fn results_dropped_total() -> &'static IntCounter {
    &COLLECTORS.results_dropped_total
}

pub fn results_write_failed_total() -> &'static IntCounter {
    &COLLECTORS.results_write_failed_total
}

pub fn velocity_unavailable_total() -> &'static IntCounter {
    &COLLECTORS.velocity_unavailable_total
}

pub fn velocity_index_orders() -> &'static IntGauge {
    &COLLECTORS.velocity_index_orders
}

pub fn velocity_index_synced() -> &'static IntGauge {
    &COLLECTORS.velocity_index_synced
}

pub fn velocity_resyncs_total() -> &'static IntCounter {
    &COLLECTORS.velocity_resyncs_total
}

pub fn score_duration_seconds() -> &'static Histogram {
    &COLLECTORS.score_duration_seconds
}
