//! The real order-api binary: configured only through the environment, serves its ops
//! endpoints, takes an order, and exits 0 on SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use shopfds_auth::Scope;
use shopfds_testkit::keys::{TestKey, api_keys_var};
use shopfds_testkit::pg::TestDatabase;
use shopfds_testkit::process::ChildGuard;
use shopfds_testkit::rabbit::TestVhost;

#[tokio::test]
async fn the_binary_serves_takes_an_order_and_stops_cleanly_on_sigterm() {
    let db = TestDatabase::create().await.unwrap();
    let vhost = TestVhost::create().unwrap();
    let port = shopfds_testkit::free_port();
    let ops = shopfds_testkit::free_port();
    let dir = tempfile::tempdir().unwrap();
    let key = TestKey::new(&[Scope::OrdersWrite]);
    let mut child = ChildGuard::spawn_logged(
        Command::new(env!("CARGO_BIN_EXE_order-api"))
            .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("OPS_ADDR", format!("127.0.0.1:{ops}"))
            .env("DATABASE_URL", db.url())
            .env("BROKER_URL", vhost.amqp_url())
            .env("API_KEYS", api_keys_var(&[&key]))
            .env("LOG_FORMAT", "json"),
        &dir.path().join("order-api.log"),
    )
    .unwrap();
    shopfds_testkit::wait_for_port(port, Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{e}: {}", child.log()));

    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    assert_eq!(
        client
            .get(format!("http://127.0.0.1:{ops}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        client
            .get(format!("http://127.0.0.1:{ops}/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let body = serde_json::json!({
        "customer": {"id": "c-1", "email": "a@example.com", "name": "A"},
        "items": [{"sku": "S-1", "name": "Item", "quantity": 1, "unit_price": 1999}],
        "currency": "USD",
        "shipping_address": {"name": "A", "line1": "1 Main St", "city": "Springfield", "postal_code": "12345", "country": "US"},
        "billing_country": "US",
        "payment": {"method": "card"}
    });
    let resp = client
        .post(format!("{base}/v1/orders"))
        .header("authorization", key.bearer())
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    // No fds-worker runs here: the fallback decided, so the order's evaluation (with the
    // confirmation chained behind it) was queued, and the relay published it to queue fds.
    // The customer-facing answer says so only through its status.
    let answer: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(answer["status"], "review", "{answer}");
    assert!(answer.get("fds").is_none(), "{answer}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while vhost.queue_depth("fds").unwrap_or(0) < 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the evaluation never reached the fds queue: {}",
            child.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let status = child.terminate(Duration::from_secs(30)).await.unwrap();
    assert!(status.success(), "exit status {status}: {}", child.log());
}

/// order-api takes orders while RabbitMQ is down (their tasks wait in the outbox), so its
/// readiness checks the database only: a broker outage must not take it out of its Service.
#[tokio::test]
async fn readyz_is_200_while_the_broker_is_unreachable() {
    let db = TestDatabase::create().await.unwrap();
    let port = shopfds_testkit::free_port();
    let ops = shopfds_testkit::free_port();
    let nothing_listens = shopfds_testkit::free_port();
    let dir = tempfile::tempdir().unwrap();
    let mut child = ChildGuard::spawn_logged(
        Command::new(env!("CARGO_BIN_EXE_order-api"))
            .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("OPS_ADDR", format!("127.0.0.1:{ops}"))
            .env("DATABASE_URL", db.url())
            .env(
                "BROKER_URL",
                format!("amqp://guest:guest@127.0.0.1:{nothing_listens}/%2f"),
            )
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT"),
        &dir.path().join("order-api.log"),
    )
    .unwrap();
    shopfds_testkit::wait_for_port(port, Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{e}: {}", child.log()));

    // The relay has tried the broker (and failed) by the time it logs so.
    child
        .wait_for_log("broker unreachable", Duration::from_secs(30))
        .await
        .unwrap();
    let response = reqwest::get(format!("http://127.0.0.1:{ops}/readyz"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({"status": "ready", "checks": {"database": "ok"}})
    );

    let status = child.terminate(Duration::from_secs(30)).await.unwrap();
    assert!(status.success(), "exit status {status}: {}", child.log());
}

/// `shopfds_outbox_pending` is what alerts on a relay that cannot publish: it must rise with the
/// orders taken while the broker is unreachable, not freeze at its last value.
#[tokio::test]
async fn outbox_pending_rises_on_metrics_while_the_broker_is_unreachable() {
    let db = TestDatabase::create().await.unwrap();
    let port = shopfds_testkit::free_port();
    let ops = shopfds_testkit::free_port();
    let nothing_listens = shopfds_testkit::free_port();
    let dir = tempfile::tempdir().unwrap();
    let key = TestKey::new(&[Scope::OrdersWrite]);
    let mut child = ChildGuard::spawn_logged(
        Command::new(env!("CARGO_BIN_EXE_order-api"))
            .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("OPS_ADDR", format!("127.0.0.1:{ops}"))
            .env("DATABASE_URL", db.url())
            .env(
                "BROKER_URL",
                format!("amqp://guest:guest@127.0.0.1:{nothing_listens}/%2f"),
            )
            .env("RELAY_POLL_INTERVAL_MS", "100")
            .env("API_KEYS", api_keys_var(&[&key]))
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT"),
        &dir.path().join("order-api.log"),
    )
    .unwrap();
    shopfds_testkit::wait_for_port(port, Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{e}: {}", child.log()));
    child
        .wait_for_log("broker unreachable", Duration::from_secs(30))
        .await
        .unwrap();

    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    for (n, expected) in [(1, 1), (2, 3)] {
        for i in 0..n {
            let body = serde_json::json!({
                "customer": {"id": format!("c-{expected}-{i}"), "email": "a@example.com", "name": "A"},
                "items": [{"sku": "S-1", "name": "Item", "quantity": 1, "unit_price": 1999}],
                "currency": "USD",
                "shipping_address": {"name": "A", "line1": "1 Main St", "city": "Springfield", "postal_code": "12345", "country": "US"},
                "billing_country": "US",
                "payment": {"method": "card"}
            });
            let resp = client
                .post(format!("{base}/v1/orders"))
                .header("authorization", key.bearer())
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 201);
        }
        // One outbox row per order (no fds-worker: its evaluation, the confirmation chained).
        let line = format!("shopfds_outbox_pending {expected}");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let metrics = client
                .get(format!("http://127.0.0.1:{ops}/metrics"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            if metrics.lines().any(|l| l == line) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "/metrics never showed {line:?}; last:\n{}",
                metrics
                    .lines()
                    .filter(|l| l.contains("outbox_pending"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    let status = child.terminate(Duration::from_secs(30)).await.unwrap();
    assert!(status.success(), "exit status {status}: {}", child.log());
}

#[tokio::test]
async fn an_invalid_connection_limit_is_named_at_start() {
    shopfds_testkit::service::assert_invalid_variables_named(
        env!("CARGO_BIN_EXE_order-api"),
        &[
            ("HTTP_HEADER_READ_TIMEOUT_SECS", "0"),
            ("HTTP_HEADER_READ_TIMEOUT_SECS", "soon"),
            ("HTTP_MAX_CONNECTIONS", "0"),
            ("API_KEYS", "not-an-entry"),
            ("TRUSTED_PROXIES", "proxy.local"),
            ("ORDER_MAX_TOTAL", "9007199254740992"),
            ("ORDER_MAX_LINE_AMOUNT", "0"),
        ],
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn an_unusable_tls_setting_is_named_at_start() {
    shopfds_testkit::service::assert_invalid_variables_named(
        env!("CARGO_BIN_EXE_order-api"),
        &[
            ("DATABASE_CA_FILE", "/nonexistent/ca.pem"),
            ("BROKER_TLS_KEY_FILE", "/nonexistent/key.pem"),
            ("FDS_GRPC_CA_FILE", "/nonexistent/ca.pem"),
            // The default FDS_GRPC_URL is http://: a TLS setting would go unused.
            ("FDS_GRPC_TLS_DOMAIN", "fds-worker"),
        ],
    )
    .await
    .unwrap();
}

/// `order-api keys`: a key made by `create` is admitted by the running binary, `list` shows it
/// without its hash, `revoke` ends it; `generate` makes a working `API_KEYS` entry.
#[tokio::test]
async fn keys_made_listed_and_revoked_on_the_command_line() {
    let db = TestDatabase::create().await.unwrap();
    let vhost = TestVhost::create().unwrap();
    let keys = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_order-api"))
            .arg("keys")
            .args(args)
            .env("DATABASE_URL", db.url())
            .output()
            .unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        let stderr = String::from_utf8(out.stderr).unwrap();
        (out.status.success(), stdout, stderr)
    };
    let (ok, created, note) = keys(&["create", "--name", "storefront", "--scopes", "orders:read"]);
    assert!(ok, "{note}");
    let key = created.trim().to_owned();
    assert!(key.starts_with("sfk_"), "{created}");
    let id = key[4..20].to_owned();
    assert!(note.contains(&id) && !note.contains(&key), "{note}");

    let (ok, generated, note) = keys(&["generate", "--scopes", "orders:write"]);
    assert!(ok, "{note}");
    let mut lines = generated.lines();
    let writer_key = lines.next().unwrap().to_owned();
    let writer_entry = lines.next().unwrap().to_owned();
    assert!(writer_entry.contains(":orders:write:"), "{writer_entry}");
    let (ok, hashed, _) = keys(&["hash", "--scopes", "orders:write", &writer_key]);
    assert!(ok);
    assert_eq!(hashed.trim(), writer_entry);
    let (ok, _, error) = keys(&["create", "--name", "x", "--scopes", "orders:delete"]);
    assert!(!ok && error.contains("orders:delete"), "{error}");

    let port = shopfds_testkit::free_port();
    let dir = tempfile::tempdir().unwrap();
    let mut child = ChildGuard::spawn_logged(
        Command::new(env!("CARGO_BIN_EXE_order-api"))
            .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env(
                "OPS_ADDR",
                format!("127.0.0.1:{}", shopfds_testkit::free_port()),
            )
            .env("DATABASE_URL", db.url())
            .env("BROKER_URL", vhost.amqp_url())
            .env("API_KEYS", &writer_entry)
            .env("API_KEYS_CACHE_SECS", "1"),
        &dir.path().join("order-api.log"),
    )
    .unwrap();
    shopfds_testkit::wait_for_port(port, Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{e}: {}", child.log()));
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let body = serde_json::json!({
        "customer": {"id": "c-1", "email": "a@example.com", "name": "A"},
        "items": [{"sku": "S-1", "name": "Item", "quantity": 1, "unit_price": 1999}],
        "currency": "USD",
        "shipping_address": {"name": "A", "line1": "1 Main St", "city": "Springfield", "postal_code": "12345", "country": "US"},
        "billing_country": "US",
        "payment": {"method": "card"}
    });
    let posted = client
        .post(format!("{base}/v1/orders"))
        .header("authorization", format!("Bearer {writer_key}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        posted.status(),
        201,
        "the generated API_KEYS entry admits its key"
    );
    let order: serde_json::Value = posted.json().await.unwrap();
    let path = format!("{base}/v1/orders/{}", order["order_id"].as_str().unwrap());
    let read = |key: String| {
        let request = client
            .get(&path)
            .header("authorization", format!("Bearer {key}"));
        async move { request.send().await.unwrap().status() }
    };
    assert_eq!(read(key.clone()).await, 200, "the created key reads");

    let (ok, listed, _) = keys(&["list"]);
    assert!(ok);
    let row = listed.lines().find(|l| l.starts_with(&id)).unwrap();
    assert!(
        row.contains("storefront") && row.contains("orders:read"),
        "{listed}"
    );
    assert!(row.trim_end().ends_with('-'), "not revoked yet: {row}");
    let hash = writer_entry.rsplit(':').next().unwrap();
    assert!(
        !listed.contains(&key[21..]) && !listed.contains(hash),
        "{listed}"
    );

    let (ok, _, note) = keys(&["revoke", &id]);
    assert!(ok, "{note}");
    let (ok, _, _) = keys(&["revoke", &id]);
    assert!(!ok, "a second revoke says there is no active key");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while read(key.clone()).await != 401 {
        assert!(
            std::time::Instant::now() < deadline,
            "the revoked key still reads: {}",
            child.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = child.log();
    assert!(
        !log.contains(&key[21..]) && !log.contains(&writer_key[21..]),
        "{log}"
    );
    let status = child.terminate(Duration::from_secs(30)).await.unwrap();
    assert!(status.success(), "exit status {status}: {}", child.log());
}
