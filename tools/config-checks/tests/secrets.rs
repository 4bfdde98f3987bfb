//! No secret reaches a log line or an error message: all six binaries run with passwords in their
//! URLs (RabbitMQ user, PostgreSQL, SMTP, the shipping partner, a threat-intel feed key), the
//! partner's token and API keys (the caller's, order-api's key to fds-worker), debug logging of
//! every crate on, and an order taken (scored over gRPC with the key) whose mail fails on the
//! unreachable SMTP server; then every log is searched for the secrets. Settings errors with
//! secrets in the bad value are checked too.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use shopfds_auth::Scope;
use shopfds_config_checks::BINARIES;
use shopfds_testkit::keys::{TestKey, api_keys_var};
use shopfds_testkit::pg::TestDatabase;
use shopfds_testkit::process::ChildGuard;
use shopfds_testkit::rabbit::{TestUser, TestVhost};

struct Running {
    name: &'static str,
    child: ChildGuard,
    ops: u16,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_a_log_line() {
    let bin = shopfds_testkit::binaries::build().unwrap();
    let vhost = TestVhost::create().unwrap();
    let user = TestUser::create(&vhost).unwrap();
    let db = TestDatabase::create().await.unwrap();
    let id = uuid::Uuid::new_v4().simple().to_string();
    // The local PostgreSQL trusts local connections: a password in the URL is sent and ignored.
    let pg_secret = format!("pg-secret-{id}");
    let smtp_secret = format!("smtp-secret-{id}");
    let intel_secret = format!("intel-secret-{id}");
    let partner_secret = format!("partner-secret-{id}");
    let partner_token = format!("partner-token-{id}");
    let aws_secret = format!("aws-secret-{id}");
    let caller = TestKey::new(&[Scope::Admin]);
    let scorer = TestKey::new(&[Scope::FdsScore]);
    // A key's id is public (logged with each order); what follows it is the secret.
    let key_secret = |key: &TestKey| key.key[key.key.len() - 64..].to_owned();
    let (caller_secret, scorer_secret) = (key_secret(&caller), key_secret(&scorer));
    let secrets = [
        user.password.as_str(),
        pg_secret.as_str(),
        smtp_secret.as_str(),
        intel_secret.as_str(),
        partner_secret.as_str(),
        partner_token.as_str(),
        aws_secret.as_str(),
        caller_secret.as_str(),
        scorer_secret.as_str(),
    ];
    let database_url = db
        .url()
        .replacen("postgres@", &format!("postgres:{pg_secret}@"), 1);
    assert!(database_url.contains(&pg_secret), "{database_url}");
    let http = shopfds_testkit::free_port();
    let grpc = shopfds_testkit::free_port();
    // Nothing listens there: every send fails and is retried, and the failure is logged.
    let smtp = shopfds_testkit::free_port();
    let logs = tempfile::tempdir().unwrap();

    let s3 = shopfds_testkit::s3::S3Server::start().await.unwrap();
    s3.bucket("shop-documents").await.unwrap();

    let mut running = Vec::new();
    for name in BINARIES {
        let ops = shopfds_testkit::free_port();
        let mut cmd = Command::new(bin.join(name));
        cmd.env_remove("RUST_MIN_STACK")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env("BROKER_URL", user.amqp_url(&vhost))
            .env("DATABASE_URL", &database_url)
            .env("OPS_ADDR", format!("127.0.0.1:{ops}"))
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "debug,h2=info,hyper=info,tower=info");
        match name {
            "order-api" => {
                cmd.env("HTTP_ADDR", format!("127.0.0.1:{http}"))
                    .env("FDS_GRPC_URL", format!("http://127.0.0.1:{grpc}"))
                    .env("FDS_TIMEOUT_MS", "2000")
                    .env("API_KEYS", api_keys_var(&[&caller]))
                    .env("FDS_API_KEY", &scorer.key);
            }
            "email-worker" => {
                cmd.env(
                    "SMTP_URL",
                    format!("smtp://mailer:{smtp_secret}@127.0.0.1:{smtp}"),
                )
                .env(
                    "SHIPPING_PARTNER_URL",
                    format!("https://shop:{partner_secret}@partner.invalid/api"),
                )
                .env("SHIPPING_PARTNER_TOKEN", &partner_token);
            }
            "fds-worker" => {
                cmd.env("GRPC_ADDR", format!("127.0.0.1:{grpc}"))
                    .env(
                        "THREAT_INTEL_URL",
                        format!("https://intel.invalid/feed.json?api_key={intel_secret}"),
                    )
                    .env("API_KEYS", api_keys_var(&[&scorer]));
            }
            "report-worker" => {
                // Documents in an S3-compatible store (the order's invoice is written there);
                // its secret key is in the settings logged at start.
                cmd.env("STORAGE_URL", "s3://shop-documents/prod")
                    .env("AWS_ACCESS_KEY_ID", "shop")
                    .env("AWS_SECRET_ACCESS_KEY", &aws_secret)
                    .env("AWS_ENDPOINT", s3.endpoint())
                    .env("AWS_ALLOW_HTTP", "true");
            }
            _ => {}
        }
        let child =
            ChildGuard::spawn_logged(&mut cmd, &logs.path().join(format!("{name}.log"))).unwrap();
        running.push(Running { name, child, ops });
    }
    for service in &running {
        wait_ready(service).await;
    }

    let client = reqwest::Client::new();
    let response = client
        .post(format!("http://127.0.0.1:{http}/v1/orders"))
        .header("authorization", caller.bearer())
        .json(&serde_json::json!({
            "customer": {"id": "c-secret", "email": "buyer@example.com", "name": "Buyer"},
            "items": [{"sku": "S-1", "name": "Item", "quantity": 1, "unit_price": 1999}],
            "currency": "USD",
            "shipping_address": {"name": "Buyer", "line1": "1 Main St", "city": "Springfield", "postal_code": "12345", "country": "US"},
            "billing_country": "US",
            "payment": {"method": "card"}
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let order: serde_json::Value = response.json().await.unwrap();
    // Scored by fds-worker with order-api's key (the fallback would mean the key was refused).
    assert_eq!(order["fds"]["source"], "realtime", "{order}");
    let mailer = running
        .iter_mut()
        .find(|s| s.name == "email-worker")
        .unwrap();
    mailer
        .child
        .wait_for_log("task will be retried", Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}: {}", mailer.child.log()));

    for service in &mut running {
        let status = service
            .child
            .terminate(Duration::from_secs(60))
            .await
            .unwrap();
        assert!(status.success(), "{}: {status}", service.name);
    }
    for service in &running {
        let log = service.child.log();
        assert!(
            log.contains("\"starting\"") && log.contains(&user.name),
            "{}: the settings (with the broker URL's user) were not logged:\n{log}",
            service.name
        );
        assert_no_secret(&format!("{} log", service.name), &log, &secrets);
    }
}

#[tokio::test]
async fn a_bad_value_is_named_without_its_secret() {
    let bin = shopfds_testkit::binaries::build().unwrap();
    let secret = format!("secret-{}", uuid::Uuid::new_v4().simple());
    for (variable, value) in [
        ("BROKER_URL", format!("http://shop:{secret}@rabbit/")),
        ("DATABASE_URL", format!("mysql://shop:{secret}@db/shop")),
        (
            "DATABASE_URL",
            format!("postgres://shop:{secret}@[::1/shop"),
        ),
        ("RESULT_BACKEND", format!("mongodb://shop:{secret}@mongo/0")),
        (
            "RESULT_BACKEND",
            format!("redis://:{secret}@cache:notaport/0"),
        ),
        ("SMTP_URL", format!("http://mailer:{secret}@smtp/")),
    ] {
        let (status, stderr) = shopfds_testkit::service::run_with_env(
            &bin.join("email-worker").to_string_lossy(),
            &[(variable, value.as_str())],
        )
        .await
        .unwrap();
        assert_eq!(status.code(), Some(2), "{variable}: {stderr}");
        assert!(stderr.contains(variable), "{variable}: {stderr}");
        assert_no_secret(&format!("{variable} error"), &stderr, &[&secret]);
    }
}

async fn wait_ready(service: &Running) {
    let url = format!("http://127.0.0.1:{}/readyz", service.ops);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(response) = reqwest::get(&url).await
            && response.status() == 200
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} not ready within 60 s:\n{}",
            service.name,
            service.child.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn assert_no_secret(what: &str, text: &str, secrets: &[&str]) {
    for secret in secrets {
        if let Some(line) = text.lines().find(|line| line.contains(secret)) {
            panic!("{what} shows a secret:\n{line}");
        }
    }
}
