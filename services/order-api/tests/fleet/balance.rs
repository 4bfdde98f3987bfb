//! Score calls spread over every fds-worker: order-api with two fds-worker processes listed in
//! `FDS_GRPC_URL` (as a headless Service's name resolves to every pod) places orders, and each
//! fds-worker's own `/metrics` shows it scored some of them.

use crate::fleet::Fleet;

/// `shopfds_fds_score_duration_seconds_count` on one fds-worker's `/metrics`.
async fn scores(http: &reqwest::Client, ops: &str) -> u64 {
    let text = http
        .get(format!("{ops}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("shopfds_fds_score_duration_seconds_count "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn score_calls_are_spread_over_every_fds_worker() {
    let mut fleet = Fleet::start_with(None, &[], 2).await;
    let orders = 20;
    for _ in 0..orders {
        let order: serde_json::Value = fleet.post_order().await.json().await.unwrap();
        assert_eq!(order["fds"]["source"], "realtime", "{order}");
    }
    let fds_ops = [&fleet.ops_urls[1], &fleet.ops_urls[2]];
    let mut counts = Vec::new();
    for ops in fds_ops {
        counts.push(scores(&fleet.http, ops).await);
    }
    assert_eq!(
        counts.iter().sum::<u64>(),
        orders,
        "every order scored once: {counts:?}"
    );
    assert!(
        counts.iter().all(|c| *c > 0),
        "both fds-workers served Score calls: {counts:?}"
    );
    fleet.stop().await;
}
