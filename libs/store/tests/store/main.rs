//! Integration tests of `shopfds-store` against the real PostgreSQL: each test runs on a database
//! of its own, created by `Store::connect`.

mod helpers;
mod rate_limits;
mod sales;
mod tls;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use helpers::*;
use serde_json::json;
use shopfds_protocol::TaskState;
use shopfds_store::{
    ChordError, ChordPart, ChordProgress, CreateOutcome, DatabaseSettings, OutboxRow, Store,
    StoredResponse, TaskStateUpdate,
};
use sqlx::Connection;

// --- connection ------------------------------------------------------------------------------

#[tokio::test]
async fn connect_creates_a_missing_database_and_migrates_it() {
    let name = unique_db_name();
    assert!(!database_exists(&name).await);

    let store = Store::connect(&settings_for(&name)).await.unwrap();

    assert!(database_exists(&name).await);
    for table in [
        "orders",
        "order_items",
        "outbox",
        "task_results",
        "processed_tasks",
        "idempotency_keys",
    ] {
        let found: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
            .bind(table)
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(found.as_deref(), Some(table), "table {table} missing");
    }
    store.ping().await.unwrap();
    TestStore {
        store,
        db_name: name,
    }
    .cleanup()
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_connects_to_a_missing_database_both_succeed() {
    let name = unique_db_name();
    let settings = settings_for(&name);
    let (a, b) = tokio::join!(Store::connect(&settings), Store::connect(&settings));
    let (a, b) = (a.unwrap(), b.unwrap());
    a.ping().await.unwrap();
    b.ping().await.unwrap();
    b.close().await;
    TestStore {
        store: a,
        db_name: name,
    }
    .cleanup()
    .await;
}

#[tokio::test]
async fn an_unreachable_database_is_reported_as_unavailable() {
    let settings = DatabaseSettings {
        url: "postgres://postgres@127.0.0.1:1/shopfds".to_owned(),
        max_connections: 2,
        acquire_timeout: Duration::from_millis(500),
        tls: Default::default(),
        migrate: true,
    };
    // The lazy pool starts without the database...
    let store = Store::connect_lazy(&settings).unwrap();
    // ...and its errors say "unavailable", which the API turns into 503.
    let err = store.ping().await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    let err = Store::connect(&settings).await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
}

#[tokio::test]
async fn a_database_url_with_sslmode_require_connects_over_tls() {
    // The production template's `?sslmode=require`: before sqlx was built with TLS, every
    // connect failed ("… built without TLS").
    let name = unique_db_name();
    let settings = DatabaseSettings::with_url(format!("{}/{name}?sslmode=require", server_url()));
    let store = Store::connect(&settings).await.unwrap();
    let encrypted: Option<bool> =
        sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(encrypted, Some(true), "the session is encrypted");
    TestStore {
        store,
        db_name: name,
    }
    .cleanup()
    .await;
}

#[tokio::test]
async fn sslmode_verify_full_refuses_a_server_certificate_no_trusted_ca_signed() {
    // The local server's certificate is self-signed: verification must fail, and say so.
    let settings = DatabaseSettings {
        url: format!("{}/postgres?sslmode=verify-full", server_url()),
        max_connections: 1,
        acquire_timeout: Duration::from_secs(5),
        tls: Default::default(),
        migrate: true,
    };
    let err = Store::connect_lazy(&settings)
        .unwrap()
        .ping()
        .await
        .unwrap_err();
    let text = format!("{err:?}").to_lowercase();
    assert!(
        text.contains("certificate") || text.contains("tls"),
        "a TLS verification error: {text}"
    );
    assert!(!text.contains("without tls"), "{text}");
}

// --- orders ----------------------------------------------------------------------------------

#[tokio::test]
async fn create_order_then_get_order_round_trips_with_items_in_order() {
    let t = spawn_store().await;
    let order = order(vec![
        item("KB-101", 2, 45000),
        item("MS-202", 1, 29000),
        item("PAD-303", 3, 9900),
        item("AA-000", 1, 100), // sorts first by sku: the order must follow line order
    ]);
    let task_id = format!("{}-email", order.id);

    let outcome = t
        .store
        .orders()
        .create(
            None,
            &order,
            &[message(&task_id)],
            &[pending(&task_id)],
            &response_for(&order),
        )
        .await
        .unwrap();
    assert_eq!(outcome, CreateOutcome::Created);

    let got = t.store.orders().get(order.id).await.unwrap().unwrap();
    assert_eq!(got.id, order.id);
    assert_eq!(got.items, order.items);
    assert_eq!(got.customer_name, "김민수");
    assert_eq!(got.account_created_at, order.account_created_at);
    assert_eq!(got.total, order.total);
    assert_eq!(got.shipping_address, order.shipping_address);
    assert_eq!(got.payment, order.payment);
    assert_eq!(got.client_ip, order.client_ip);
    assert_eq!(got.fds, order.fds);
    assert_eq!(got.tasks, order.tasks);
    assert_eq!(got.status, "accepted");
    assert_eq!(got.tracking_number, None);

    // The same transaction queued the message and made the task known as PENDING.
    assert_eq!(t.store.outbox().pending().await.unwrap(), 1);
    let task = t.store.results().get(&task_id).await.unwrap().unwrap();
    assert_eq!(task.state, TaskState::Pending);
    assert_eq!(task.name, "send_order_confirmation_email");
    assert_eq!(task.queue, "email");

    t.store
        .orders()
        .set_tracking_number(order.id, "CJ-1234567890")
        .await
        .unwrap();
    t.store
        .orders()
        .set_invoice_url(order.id, "file:///invoices/1.pdf")
        .await
        .unwrap();
    let got = t.store.orders().get(order.id).await.unwrap().unwrap();
    assert_eq!(got.tracking_number.as_deref(), Some("CJ-1234567890"));
    assert_eq!(got.invoice_url.as_deref(), Some("file:///invoices/1.pdf"));
    assert!(got.updated_at >= got.created_at);

    assert!(
        t.store
            .orders()
            .get(uuid::Uuid::new_v4())
            .await
            .unwrap()
            .is_none()
    );
    t.cleanup().await;
}

#[tokio::test]
async fn a_rejected_order_writes_nothing_at_all() {
    let t = spawn_store().await;
    let mut bad = simple_order();
    bad.items.push(item("BAD-1", 0, 100)); // quantity must be > 0
    let err = t
        .store
        .orders()
        .create(
            Some(&idem("k-bad", "h")),
            &bad,
            &[message("t-bad")],
            &[pending("t-bad")],
            &response_for(&bad),
        )
        .await
        .unwrap_err();
    assert!(!err.is_unavailable(), "{err:?}");
    assert_eq!(count(&t.store, "SELECT count(*) FROM orders").await, 0);
    assert_eq!(count(&t.store, "SELECT count(*) FROM outbox").await, 0);
    assert_eq!(
        count(&t.store, "SELECT count(*) FROM task_results").await,
        0
    );
    assert_eq!(
        count(&t.store, "SELECT count(*) FROM idempotency_keys").await,
        0
    );
    t.cleanup().await;
}

#[tokio::test]
async fn idempotency_replay_returns_the_stored_response_and_writes_no_second_order() {
    let t = spawn_store().await;
    let first = simple_order();
    let key = idem("key-1", "hash-a");
    let stored = response_for(&first);
    let outcome = t
        .store
        .orders()
        .create(
            Some(&key),
            &first,
            &[message("t-1")],
            &[pending("t-1")],
            &stored,
        )
        .await
        .unwrap();
    assert_eq!(outcome, CreateOutcome::Created);

    // The retry carries a fresh order id (the API generates one per request).
    let retry = simple_order();
    let outcome = t
        .store
        .orders()
        .create(
            Some(&key),
            &retry,
            &[message("t-2")],
            &[pending("t-2")],
            &response_for(&retry),
        )
        .await
        .unwrap();
    assert_eq!(outcome, CreateOutcome::Replayed(stored));
    assert_eq!(count(&t.store, "SELECT count(*) FROM orders").await, 1);
    assert_eq!(count(&t.store, "SELECT count(*) FROM outbox").await, 1);
    assert!(t.store.orders().get(retry.id).await.unwrap().is_none());
    assert!(t.store.results().get("t-2").await.unwrap().is_none());
    t.cleanup().await;
}

#[tokio::test]
async fn a_key_reused_with_another_request_is_a_conflict() {
    let t = spawn_store().await;
    let first = simple_order();
    t.store
        .orders()
        .create(
            Some(&idem("key-1", "hash-a")),
            &first,
            &[message("t-1")],
            &[],
            &response_for(&first),
        )
        .await
        .unwrap();
    let other = simple_order();
    let outcome = t
        .store
        .orders()
        .create(
            Some(&idem("key-1", "hash-b")),
            &other,
            &[message("t-2")],
            &[],
            &response_for(&other),
        )
        .await
        .unwrap();
    assert_eq!(outcome, CreateOutcome::KeyConflict);
    assert_eq!(count(&t.store, "SELECT count(*) FROM orders").await, 1);
    assert_eq!(count(&t.store, "SELECT count(*) FROM outbox").await, 1);
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_with_one_key_create_once_and_replay_once() {
    let t = spawn_store().await;
    // Hold back every order INSERT so both requests are inside their transactions at once: the
    // first waits on this lock after claiming the key, the second waits on the key's unique
    // index behind the first.
    let mut blocker =
        sqlx::postgres::PgConnection::connect(&format!("{}/{}", server_url(), t.db_name))
            .await
            .unwrap();
    let mut blocker_tx = blocker.begin().await.unwrap();
    sqlx::query("LOCK TABLE orders IN SHARE MODE")
        .execute(&mut *blocker_tx)
        .await
        .unwrap();

    let key = idem("same-key", "same-hash");
    let run = |store: Store, key: shopfds_store::IdempotencyRequest| async move {
        let order = simple_order();
        let id = order.id;
        let outcome = store
            .orders()
            .create(
                Some(&key),
                &order,
                &[message(&id.to_string())],
                &[pending(&id.to_string())],
                &response_for(&order),
            )
            .await;
        (id, outcome)
    };
    let a = tokio::spawn(run(t.store.clone(), key.clone()));
    let b = tokio::spawn(run(t.store.clone(), key.clone()));

    let store = t.store.clone();
    let db = t.db_name.clone();
    eventually("both requests to wait on a lock", || {
        let store = store.clone();
        let db = db.clone();
        async move {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = $1 AND wait_event_type = 'Lock'",
            )
            .bind(db)
            .fetch_one(store.pool())
            .await
            .unwrap();
            waiting == 2
        }
    })
    .await;
    blocker_tx.commit().await.unwrap();

    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    let outcomes = [a.1.unwrap(), b.1.unwrap()];
    let created: Vec<_> = outcomes
        .iter()
        .filter(|o| **o == CreateOutcome::Created)
        .collect();
    let replayed: Vec<_> = outcomes
        .iter()
        .filter_map(|o| match o {
            CreateOutcome::Replayed(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(created.len(), 1, "{outcomes:?}");
    assert_eq!(replayed.len(), 1, "{outcomes:?}");
    let winner = if outcomes[0] == CreateOutcome::Created {
        a.0
    } else {
        b.0
    };
    // The replay is the winner's response, not the loser's.
    assert_eq!(replayed[0].body["order_id"], json!(winner));
    assert_eq!(count(&t.store, "SELECT count(*) FROM orders").await, 1);
    assert_eq!(count(&t.store, "SELECT count(*) FROM outbox").await, 1);
    let _ = blocker.close().await;
    t.cleanup().await;
}

#[tokio::test]
async fn purged_idempotency_keys_no_longer_replay() {
    let t = spawn_store().await;
    let key = idem("old-key", "h");
    let first = simple_order();
    t.store
        .orders()
        .create(Some(&key), &first, &[], &[], &response_for(&first))
        .await
        .unwrap();
    assert_eq!(
        t.store
            .idempotency()
            .purge(chrono::Duration::hours(24))
            .await
            .unwrap(),
        0
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        t.store
            .idempotency()
            .purge(chrono::Duration::milliseconds(1))
            .await
            .unwrap(),
        1
    );
    let second = simple_order();
    let outcome = t
        .store
        .orders()
        .create(Some(&key), &second, &[], &[], &response_for(&second))
        .await
        .unwrap();
    assert_eq!(outcome, CreateOutcome::Created);
    t.cleanup().await;
}

#[tokio::test]
async fn one_key_under_two_scopes_makes_two_orders_and_replays_within_its_scope() {
    let t = spawn_store().await;
    let (a, b) = (simple_order(), simple_order());
    let (key_a, key_b) = (
        idem_in("api-key-a", "same-key", "hash-a"),
        idem_in("api-key-b", "same-key", "hash-b"),
    );
    for (key, order, task) in [(&key_a, &a, "t-a"), (&key_b, &b, "t-b")] {
        let outcome = t
            .store
            .orders()
            .create(
                Some(key),
                order,
                &[message(task)],
                &[],
                &response_for(order),
            )
            .await
            .unwrap();
        assert_eq!(outcome, CreateOutcome::Created, "{}", key.scope);
    }
    assert_eq!(count(&t.store, "SELECT count(*) FROM orders").await, 2);

    // Within a scope the key replays that scope's first answer, before and at the write.
    let retry = simple_order();
    assert_eq!(
        t.store.idempotency().outcome(&key_b).await.unwrap(),
        Some(CreateOutcome::Replayed(response_for(&b)))
    );
    let outcome = t
        .store
        .orders()
        .create(
            Some(&key_b),
            &retry,
            &[message("t-b2")],
            &[],
            &response_for(&retry),
        )
        .await
        .unwrap();
    assert_eq!(outcome, CreateOutcome::Replayed(response_for(&b)));
    // The anonymous caller's scope is a third one: the key is still free there.
    assert_eq!(
        t.store
            .idempotency()
            .outcome(&idem("same-key", "hash-a"))
            .await
            .unwrap(),
        None
    );
    assert_eq!(count(&t.store, "SELECT count(*) FROM orders").await, 2);
    assert_eq!(count(&t.store, "SELECT count(*) FROM outbox").await, 2);
    t.cleanup().await;
}

#[tokio::test]
async fn keys_stored_before_scopes_existed_belong_to_the_anonymous_caller() {
    // The migrations before the scope's, from a copy of the directory without it.
    let dir = std::env::temp_dir().join(format!("shopfds-migrations-{}", unique_db_name()));
    std::fs::create_dir_all(&dir).unwrap();
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    for entry in std::fs::read_dir(&source).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_owned();
        if name.to_string_lossy().as_ref() < "20261130100000" {
            std::fs::copy(&path, dir.join(name)).unwrap();
        }
    }
    let name = unique_db_name();
    let mut conn = maintenance_connection().await;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&mut conn)
        .await
        .unwrap();
    let _ = conn.close().await;
    let mut old = sqlx::PgConnection::connect(&format!("{}/{name}", server_url()))
        .await
        .unwrap();
    sqlx::migrate::Migrator::new(dir.as_path())
        .await
        .unwrap()
        .run(&mut old)
        .await
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    sqlx::query(
        "INSERT INTO idempotency_keys (key, request_hash, response_status, response_body) \
         VALUES ('old-key', 'h', 201, '{\"order_id\": \"first\"}')",
    )
    .execute(&mut old)
    .await
    .unwrap();
    let _ = old.close().await;

    // Connecting migrates the rest: the old key is now the anonymous caller's.
    let t = TestStore {
        store: Store::connect(&settings_for(&name)).await.unwrap(),
        db_name: name,
    };
    let replay = Some(CreateOutcome::Replayed(StoredResponse {
        status: 201,
        body: json!({ "order_id": "first" }),
    }));
    let key = idem("old-key", "h");
    assert_eq!(t.store.idempotency().outcome(&key).await.unwrap(), replay);
    let order = simple_order();
    let outcome = t
        .store
        .orders()
        .create(Some(&key), &order, &[], &[], &response_for(&order))
        .await
        .unwrap();
    assert_eq!(Some(outcome), replay);
    let scoped = idem_in("api-key-a", "old-key", "h");
    assert_eq!(t.store.idempotency().outcome(&scoped).await.unwrap(), None);
    t.cleanup().await;
}

// --- outbox ----------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_relays_send_every_row_exactly_once() {
    let t = spawn_store().await;
    let messages: Vec<_> = (0..200).map(|i| message(&format!("task-{i}"))).collect();
    t.store.outbox().enqueue(&messages).await.unwrap();
    assert_eq!(t.store.outbox().pending().await.unwrap(), 200);

    let seen: Arc<Mutex<HashMap<i64, u32>>> = Arc::default();
    let relay = |store: Store, seen: Arc<Mutex<HashMap<i64, u32>>>| async move {
        let mut published = 0;
        loop {
            let seen = seen.clone();
            let sent = store
                .outbox()
                .relay(10, |rows: Vec<OutboxRow>| async move {
                    // Take some time, as a broker confirm does, so the relays overlap.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    let mut seen = seen.lock().unwrap();
                    rows.iter()
                        .map(|r| {
                            *seen.entry(r.id).or_default() += 1;
                            (r.id, Ok(()))
                        })
                        .collect()
                })
                .await
                .unwrap();
            if sent == 0 {
                return published;
            }
            published += sent;
        }
    };
    let a = tokio::spawn(relay(t.store.clone(), seen.clone()));
    let b = tokio::spawn(relay(t.store.clone(), seen.clone()));
    let (a, b) = (a.await.unwrap(), b.await.unwrap());

    assert_eq!(a + b, 200);
    assert!(a > 0 && b > 0, "both relays should have worked: {a} + {b}");
    assert_eq!(t.store.outbox().pending().await.unwrap(), 0);
    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM outbox ORDER BY id")
        .fetch_all(t.store.pool())
        .await
        .unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(ids.len(), 200);
    for id in ids {
        assert_eq!(seen.get(&id), Some(&1), "outbox id {id} published {seen:?}");
    }
    t.cleanup().await;
}

#[tokio::test]
async fn a_publish_error_leaves_the_row_unsent_with_the_error_recorded() {
    let t = spawn_store().await;
    t.store
        .outbox()
        .enqueue(&[message("ok-task"), message("nacked-task")])
        .await
        .unwrap();

    let sent = t
        .store
        .outbox()
        .relay(10, |rows: Vec<OutboxRow>| async move {
            assert_eq!(rows.len(), 2);
            // Rows come oldest first, with the message as enqueued.
            assert_eq!(rows[0].message, message("ok-task"));
            assert_eq!(rows[1].message, message("nacked-task"));
            vec![
                (rows[0].id, Ok(())),
                (rows[1].id, Err("broker nack".to_owned())),
            ]
        })
        .await
        .unwrap();
    assert_eq!(sent, 1);
    assert_eq!(t.store.outbox().pending().await.unwrap(), 1);

    let (attempts, last_error, sent_at): (i32, Option<String>, Option<chrono::DateTime<Utc>>) =
        sqlx::query_as("SELECT attempts, last_error, sent_at FROM outbox WHERE task_id = $1")
            .bind("nacked-task")
            .fetch_one(t.store.pool())
            .await
            .unwrap();
    assert_eq!(attempts, 1);
    assert_eq!(last_error.as_deref(), Some("broker nack"));
    assert_eq!(sent_at, None);

    // The next step offers the failed row again, with its attempt counted.
    let sent = t
        .store
        .outbox()
        .relay(10, |rows: Vec<OutboxRow>| async move {
            assert_eq!(rows.len(), 1);
            assert_eq!(rows[0].message.task_id, "nacked-task");
            assert_eq!(rows[0].attempts, 1);
            rows.iter().map(|r| (r.id, Ok(()))).collect()
        })
        .await
        .unwrap();
    assert_eq!(sent, 1);
    assert_eq!(t.store.outbox().pending().await.unwrap(), 0);

    // Only sent rows are purged.
    t.store.outbox().enqueue(&[message("later")]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let purged = t
        .store
        .outbox()
        .purge_sent(chrono::Duration::milliseconds(1))
        .await
        .unwrap();
    assert_eq!(purged, 2);
    assert_eq!(count(&t.store, "SELECT count(*) FROM outbox").await, 1);
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_or_panicking_relay_step_leaves_its_rows_unsent() {
    let t = spawn_store().await;
    t.store.outbox().enqueue(&[message("t-1")]).await.unwrap();

    // Dropped mid-publish (a timeout, a shutdown).
    let outbox = t.store.outbox();
    let step = outbox.relay(10, |_rows| std::future::pending());
    assert!(
        tokio::time::timeout(Duration::from_millis(200), step)
            .await
            .is_err()
    );
    assert_eq!(t.store.outbox().pending().await.unwrap(), 1);

    // A publisher that panics.
    let store = t.store.clone();
    let panicked = tokio::spawn(async move {
        store
            .outbox()
            .relay(10, |_rows| async move {
                panic!("publisher bug");
                #[allow(unreachable_code)]
                Vec::new()
            })
            .await
    })
    .await;
    assert!(panicked.unwrap_err().is_panic());
    assert_eq!(t.store.outbox().pending().await.unwrap(), 1);

    // Once the abandoned transactions have rolled back, the row is published normally.
    let store = t.store.clone();
    eventually("the row to be relayed", || {
        let store = store.clone();
        async move {
            store
                .outbox()
                .relay(10, |rows: Vec<OutboxRow>| async move {
                    rows.iter().map(|r| (r.id, Ok(()))).collect()
                })
                .await
                .unwrap()
                == 1
        }
    })
    .await;
    assert_eq!(t.store.outbox().pending().await.unwrap(), 0);
    t.cleanup().await;
}

#[tokio::test]
async fn the_outbox_listener_is_notified_when_an_order_commits() {
    let t = spawn_store().await;
    let mut listener = t.store.outbox().listener().await.unwrap();
    let order = simple_order();
    t.store
        .orders()
        .create(None, &order, &[message("t-1")], &[], &response_for(&order))
        .await
        .unwrap();
    let note = tokio::time::timeout(Duration::from_secs(5), listener.recv())
        .await
        .expect("a notification within 5 s")
        .unwrap();
    assert_eq!(note.channel(), "outbox_new");

    // enqueue() wakes the relays too.
    t.store.outbox().enqueue(&[message("t-2")]).await.unwrap();
    let note = tokio::time::timeout(Duration::from_secs(5), listener.recv())
        .await
        .expect("a notification within 5 s")
        .unwrap();
    assert_eq!(note.channel(), "outbox_new");
    drop(listener);
    t.cleanup().await;
}

// --- result store ----------------------------------------------------------------------------

fn update(task_id: &str, state: TaskState, retries: i32) -> TaskStateUpdate {
    TaskStateUpdate {
        task_id: task_id.to_owned(),
        name: "generate_invoice_pdf".to_owned(),
        queue: "reports".to_owned(),
        state,
        retries,
        progress: None,
        result: None,
        error: None,
        expires_at: None,
    }
}

#[tokio::test]
async fn a_late_started_never_hides_success() {
    let t = spawn_store().await;
    let mut started = update("inv-1", TaskState::Started, 0);
    t.store.results().record(&started).await.unwrap();
    let mut progress = update("inv-1", TaskState::Progress, 0);
    progress.progress = Some(json!({ "current": 1, "total": 3, "message": "rendering" }));
    t.store.results().record(&progress).await.unwrap();
    let got = t.store.results().get("inv-1").await.unwrap().unwrap();
    assert_eq!(got.state, TaskState::Progress);
    assert_eq!(got.progress.unwrap()["current"], 1);

    let mut success = update("inv-1", TaskState::Success, 1);
    success.result = Some(json!({ "url": "file:///invoices/1.pdf" }));
    t.store.results().record(&success).await.unwrap();

    // A redelivered message starts again after the first run finished.
    started.retries = 0;
    t.store.results().record(&started).await.unwrap();

    let got = t.store.results().get("inv-1").await.unwrap().unwrap();
    assert_eq!(got.state, TaskState::Success);
    assert_eq!(got.result, Some(json!({ "url": "file:///invoices/1.pdf" })));
    assert_eq!(got.retries, 1);
    assert_eq!(got.name, "generate_invoice_pdf");
    assert_eq!(got.queue, "reports");
    t.cleanup().await;
}

#[tokio::test]
async fn retries_keep_the_highest_count_seen() {
    let t = spawn_store().await;
    t.store
        .results()
        .record(&update("t", TaskState::Retry, 3))
        .await
        .unwrap();
    t.store
        .results()
        .record(&update("t", TaskState::Started, 2))
        .await
        .unwrap();
    let got = t.store.results().get("t").await.unwrap().unwrap();
    assert_eq!(got.state, TaskState::Started);
    assert_eq!(got.retries, 3);
    t.cleanup().await;
}

#[tokio::test]
async fn expired_results_read_as_unknown_and_are_purged() {
    let t = spawn_store().await;
    let mut old = update("old", TaskState::Success, 0);
    old.expires_at = Some(Utc::now() - chrono::Duration::minutes(1));
    t.store.results().record(&old).await.unwrap();
    let mut fresh = update("fresh", TaskState::Success, 0);
    fresh.expires_at = Some(Utc::now() + chrono::Duration::days(1));
    t.store.results().record(&fresh).await.unwrap();
    t.store
        .results()
        .record(&update("forever", TaskState::Success, 0))
        .await
        .unwrap();

    assert!(t.store.results().get("old").await.unwrap().is_none());
    let got = t.store.results().get("fresh").await.unwrap().unwrap();
    assert!(got.expires_at.is_some());
    assert!(t.store.results().get("forever").await.unwrap().is_some());

    assert_eq!(t.store.results().purge_expired().await.unwrap(), 1);
    assert_eq!(
        count(&t.store, "SELECT count(*) FROM task_results").await,
        2
    );
    assert_eq!(
        count(
            &t.store,
            "SELECT count(*) FROM task_results WHERE task_id = 'old'"
        )
        .await,
        0
    );
    t.cleanup().await;
}

// --- once-only side effects ------------------------------------------------------------------

#[tokio::test]
async fn a_completed_key_is_seen_as_done_by_the_next_run() {
    let t = spawn_store().await;
    let first = t.store.once().begin("email:order-1").await.unwrap();
    assert!(first.already_done().is_none());
    first
        .complete("task-1", json!({ "message_id": "<1@shopfds>" }))
        .await
        .unwrap();

    let second = t.store.once().begin("email:order-1").await.unwrap();
    assert_eq!(
        second.already_done(),
        Some(&json!({ "message_id": "<1@shopfds>" }))
    );
    drop(second);
    assert!(
        t.store
            .once()
            .begin("email:order-2")
            .await
            .unwrap()
            .already_done()
            .is_none()
    );
    t.cleanup().await;
}

#[tokio::test]
async fn a_dropped_guard_lets_the_next_run_do_the_work() {
    let t = spawn_store().await;
    let first = t.store.once().begin("ship:order-1").await.unwrap();
    drop(first); // the worker crashed or the effect failed
    let second = tokio::time::timeout(Duration::from_secs(5), t.store.once().begin("ship:order-1"))
        .await
        .expect("the dropped guard released its lock")
        .unwrap();
    assert!(second.already_done().is_none());
    second.complete("task-2", json!("CJ-1")).await.unwrap();
    assert_eq!(
        count(&t.store, "SELECT count(*) FROM processed_tasks").await,
        1
    );
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_deliveries_of_one_task_serialize() {
    let t = spawn_store().await;
    let first = t.store.once().begin("charge:order-1").await.unwrap();

    let store = t.store.clone();
    let second = tokio::spawn(async move { store.once().begin("charge:order-1").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!second.is_finished(), "the second delivery must wait");
    // Another key is not held up.
    drop(t.store.once().begin("charge:order-2").await.unwrap());

    first
        .complete("task-1", json!({ "charged": true }))
        .await
        .unwrap();
    let second = tokio::time::timeout(Duration::from_secs(5), second)
        .await
        .expect("the second delivery proceeds after the first completes")
        .unwrap()
        .unwrap();
    assert_eq!(second.already_done(), Some(&json!({ "charged": true })));
    drop(second);
    t.cleanup().await;
}

// --- chords ----------------------------------------------------------------------------------

#[derive(Debug, thiserror::Error)]
#[error("broker down")]
struct BrokerDown;

fn part<'a>(
    group: &'a str,
    size: usize,
    task: &'a str,
    index: i64,
    result: &'a serde_json::Value,
) -> ChordPart<'a> {
    ChordPart {
        group_id: group,
        size,
        task_id: task,
        group_index: Some(index),
        result,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_chord_parts_complete_the_chord_exactly_once_with_ordered_results() {
    let t = spawn_store().await;
    const SIZE: usize = 24;
    let published = Arc::new(Mutex::new(Vec::new()));
    let mut handles = Vec::new();
    // Last index first, so arrival order differs from header order.
    for i in (0..SIZE).rev() {
        let store = t.store.clone();
        let published = published.clone();
        handles.push(tokio::spawn(async move {
            let result = json!(format!("r{i}"));
            let task = format!("t-{i}");
            store
                .chords()
                .part_succeeded(&part("g-1", SIZE, &task, i as i64, &result), |results| {
                    let published = published.clone();
                    async move {
                        published.lock().unwrap().push(results);
                        Ok::<_, BrokerDown>(())
                    }
                })
                .await
                .unwrap()
        }));
    }
    let mut completed = 0;
    for h in handles {
        if let ChordProgress::Completed { .. } = h.await.unwrap() {
            completed += 1;
        }
    }
    assert_eq!(completed, 1, "exactly one part completes the chord");
    let published = published.lock().unwrap().clone();
    assert_eq!(published.len(), 1, "the body is published once");
    let expected: Vec<serde_json::Value> = (0..SIZE).map(|i| json!(format!("r{i}"))).collect();
    assert_eq!(published[0], expected, "results in header order");
    let chord = t.store.chords().get("g-1").await.unwrap().unwrap();
    assert_eq!((chord.done, chord.state.as_str()), (SIZE as i32, "SUCCESS"));
    t.cleanup().await;
}

#[tokio::test]
async fn a_redelivered_part_is_not_counted_twice() {
    let t = spawn_store().await;
    let r = json!(1);
    let never = |_| async { Err::<(), _>(BrokerDown) };
    let first = t
        .store
        .chords()
        .part_succeeded(&part("g-2", 2, "t-a", 0, &r), never)
        .await
        .unwrap();
    assert_eq!(first, ChordProgress::Counted { done: 1, size: 2 });
    let again = t
        .store
        .chords()
        .part_succeeded(&part("g-2", 2, "t-a", 0, &r), never)
        .await
        .unwrap();
    assert_eq!(again, ChordProgress::AlreadyCounted);
    assert_eq!(t.store.chords().get("g-2").await.unwrap().unwrap().done, 1);
    t.cleanup().await;
}

#[tokio::test]
async fn a_failed_body_publish_keeps_nothing_so_the_retry_completes() {
    let t = spawn_store().await;
    let r = json!(1);
    let ok = |_| async { Ok::<(), BrokerDown>(()) };
    t.store
        .chords()
        .part_succeeded(&part("g-3", 2, "t-a", 0, &r), ok)
        .await
        .unwrap();
    let down = t
        .store
        .chords()
        .part_succeeded(&part("g-3", 2, "t-b", 1, &r), |_| async {
            Err::<(), _>(BrokerDown)
        })
        .await;
    assert!(matches!(down, Err(ChordError::Publish(BrokerDown))));
    assert_eq!(t.store.chords().get("g-3").await.unwrap().unwrap().done, 1);
    let retried = t
        .store
        .chords()
        .part_succeeded(&part("g-3", 2, "t-b", 1, &r), ok)
        .await
        .unwrap();
    assert!(matches!(retried, ChordProgress::Completed { .. }));
    t.cleanup().await;
}

#[tokio::test]
async fn a_failed_part_fails_the_chord_once_and_later_parts_do_not_complete_it() {
    let t = spawn_store().await;
    let r = json!(1);
    assert!(
        t.store
            .chords()
            .part_failed("g-4", 2, "t-a", "boom")
            .await
            .unwrap()
    );
    assert!(
        !t.store
            .chords()
            .part_failed("g-4", 2, "t-a", "boom")
            .await
            .unwrap()
    );
    let later = t
        .store
        .chords()
        .part_succeeded(&part("g-4", 2, "t-b", 1, &r), |_| async {
            Ok::<(), BrokerDown>(())
        })
        .await
        .unwrap();
    assert_eq!(later, ChordProgress::ChordFailed);
    let chord = t.store.chords().get("g-4").await.unwrap().unwrap();
    assert_eq!(chord.state, "FAILURE");
    assert_eq!(chord.failed_task_id.as_deref(), Some("t-a"));
    assert_eq!(
        t.store
            .chords()
            .purge_before(Utc::now() + chrono::Duration::seconds(1))
            .await
            .unwrap(),
        1
    );
    assert!(t.store.chords().get("g-4").await.unwrap().is_none());
    t.cleanup().await;
}

#[tokio::test]
async fn without_migrating_a_store_starts_only_on_a_migrated_database() {
    // DATABASE_MIGRATE=false (the manifests, where a Job migrates): a fresh database is refused,
    // naming the variable; once a migrating connect has run, the same settings connect.
    let name = unique_db_name();
    let url = format!("{}/{name}", server_url());
    let no_migrate = DatabaseSettings {
        migrate: false,
        ..DatabaseSettings::with_url(url.clone())
    };
    let err = Store::connect(&no_migrate).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("DATABASE_MIGRATE"), "{text}");
    assert!(
        !err.is_unavailable(),
        "a schema behind is not an outage: {err:?}"
    );

    let migrated = Store::connect(&DatabaseSettings::with_url(url))
        .await
        .unwrap();
    let store = Store::connect(&no_migrate).await.unwrap();
    store.ping().await.unwrap();
    store.close().await;
    TestStore {
        store: migrated,
        db_name: name,
    }
    .cleanup()
    .await;
}
