//! The shared rate limit: two stores (two replicas' pools) asking at once never get more than
//! the limit in one second of the database's clock.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeMap;

use shopfds_store::{Slot, Store};

use crate::helpers::{settings_for, spawn_store};

/// Asks until granted, sleeping as told; returns the second the slot belongs to.
async fn take_slot(store: &Store, per_second: u32) -> chrono::DateTime<chrono::Utc> {
    loop {
        match store
            .rate_limits()
            .acquire("partner", per_second)
            .await
            .expect("acquire")
        {
            Slot::Granted { window } => return window,
            Slot::Wait(wait) => tokio::time::sleep(wait).await,
        }
    }
}

#[tokio::test]
async fn two_replicas_together_stay_within_the_limit_per_second() {
    const LIMIT: u32 = 5;
    const CALLS: usize = 24;
    let first = spawn_store().await;
    // A second pool on the same database: another replica.
    let second = Store::connect(&settings_for(&first.db_name)).await.unwrap();
    let mut calls = tokio::task::JoinSet::new();
    for n in 0..CALLS {
        let store = if n % 2 == 0 {
            first.store.clone()
        } else {
            second.clone()
        };
        calls.spawn(async move { take_slot(&store, LIMIT).await });
    }
    let mut per_second: BTreeMap<_, u32> = BTreeMap::new();
    while let Some(window) = calls.join_next().await {
        *per_second.entry(window.unwrap()).or_default() += 1;
    }
    assert_eq!(per_second.values().sum::<u32>(), CALLS as u32);
    assert!(
        per_second.values().all(|n| *n <= LIMIT),
        "more than {LIMIT} in a second: {per_second:?}"
    );
    assert!(
        per_second.len() >= CALLS.div_ceil(LIMIT as usize),
        "the calls were spread over the seconds they needed: {per_second:?}"
    );
    second.close().await;
    first.cleanup().await;
}
