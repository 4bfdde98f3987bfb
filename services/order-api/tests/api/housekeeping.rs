//! Housekeeping runs beside the relay, on every replica: here on one whose relay is off.

use std::time::{Duration, Instant};

use crate::helpers::{Options, spawn_app_with, sqlx_count};

#[tokio::test]
async fn a_replica_without_the_relay_purges_what_has_expired_and_keeps_the_rest() {
    let app = spawn_app_with(Options {
        relay_disabled: true,
        housekeeping_every: Some(Duration::from_millis(100)),
        fds_down: true,
        ..Options::default()
    })
    .await;
    // Each table gets a row past its cut-off ("old") and one within it ("new").
    for sql in [
        "INSERT INTO task_results (task_id, name, queue, state, expires_at) VALUES \
         ('old', 't', 'q', 'SUCCESS', now() - interval '1 minute'), \
         ('new', 't', 'q', 'SUCCESS', now() + interval '1 hour')",
        "INSERT INTO outbox (task_id, exchange, routing_key, headers, properties, body, sent_at) \
         VALUES ('old', 'e', 'q', '{}', '{}', '', now() - interval '25 hours'), \
                ('new', 'e', 'q', '{}', '{}', '', now() - interval '1 hour')",
        "INSERT INTO idempotency_keys (scope, key, request_hash, created_at) VALUES \
         ('', 'old', 'h', now() - interval '25 hours'), ('', 'new', 'h', now())",
        "INSERT INTO chords (group_id, size, created_at) VALUES \
         ('old', 2, now() - interval '8 days'), ('new', 2, now())",
    ] {
        shopfds_store::sqlx::query(sql)
            .execute(app.store.pool())
            .await
            .unwrap();
    }

    let old = [
        "SELECT count(*) FROM task_results WHERE task_id = 'old'",
        "SELECT count(*) FROM outbox WHERE task_id = 'old'",
        "SELECT count(*) FROM idempotency_keys WHERE key = 'old'",
        "SELECT count(*) FROM chords WHERE group_id = 'old'",
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    for sql in old {
        while sqlx_count(&app.store, sql).await > 0 {
            assert!(Instant::now() < deadline, "still there: {sql}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    for sql in [
        "SELECT count(*) FROM task_results WHERE task_id = 'new'",
        "SELECT count(*) FROM outbox WHERE task_id = 'new'",
        "SELECT count(*) FROM idempotency_keys WHERE key = 'new'",
        "SELECT count(*) FROM chords WHERE group_id = 'new'",
    ] {
        assert_eq!(sqlx_count(&app.store, sql).await, 1, "{sql}");
    }
    app.stop().await;
}
