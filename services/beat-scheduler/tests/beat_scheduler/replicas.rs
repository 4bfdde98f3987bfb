//! The scheduler's guarantees on the real PostgreSQL and RabbitMQ, with an injected clock (the
//! ticker's `tick(now)`), so an hour of 10-second slots takes seconds:
//!
//! - two replicas ticking at the same instants over an hour: every slot claimed once; one
//!   replica stopped half-way: the other goes on, no slot lost or doubled; the relay then
//!   publishes exactly one message per slot;
//! - a schedule added, paused and resumed with the CLI takes effect at the next tick of a running
//!   ticker (no restart);
//! - after downtime, `latest` publishes the most recent missed slot once and `skip` none;
//! - the HTTP API (an `admin` key) lists the schedules and adds and pauses one, which the next
//!   tick follows.

use std::collections::HashSet;
use std::time::Duration;

use beat_scheduler::ticker::Ticker;
use chrono::{DateTime, Duration as Span, Utc};
use chrono_tz::Asia::Seoul;
use shopfds_broker::BrokerSettings;
use shopfds_service::Env;
use shopfds_service::relay::RelaySettings;
use shopfds_store::{DatabaseSettings, ScheduleRow, Store};
use shopfds_testkit::pg::TestDatabase;
use shopfds_testkit::rabbit::TestVhost;
use tokio_util::sync::CancellationToken;

fn every(name: &str, secs: i32, missed: &str) -> ScheduleRow {
    ScheduleRow {
        name: name.to_owned(),
        task: "health_check".to_owned(),
        cron: None,
        every_secs: Some(secs),
        kwargs: serde_json::json!({}),
        queue: "default".to_owned(),
        missed: missed.to_owned(),
        enabled: true,
        source: "file".to_owned(),
    }
}

async fn replica(db: &TestDatabase) -> Ticker {
    Ticker {
        store: Store::connect(&DatabaseSettings::with_url(db.url()))
            .await
            .unwrap(),
        timezone: Seoul,
    }
}

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

async fn count(store: &Store, sql: &'static str) -> i64 {
    shopfds_store::sqlx::query_scalar(sql)
        .fetch_one(store.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn two_replicas_over_an_hour_publish_every_slot_once_and_one_can_die() {
    let db = TestDatabase::create().await.unwrap();
    let (a, b) = (replica(&db).await, replica(&db).await);
    a.store
        .beat()
        .seed(&[every("health-check", 10, "skip")])
        .await
        .unwrap();
    let start = at("2026-12-05T00:00:00Z");
    let mut claimed = Vec::new();
    // A tick every 2 s; half-way through, replica a stops ticking (killed).
    for step in 0..=1800 {
        let now = start + Span::seconds(2 * step);
        if step < 900 {
            let (x, y) = tokio::join!(a.tick(now), b.tick(now));
            claimed.extend(x.unwrap());
            claimed.extend(y.unwrap());
        } else {
            claimed.extend(b.tick(now).await.unwrap());
        }
    }
    // The first slot is the one on the first tick; then every 10 s to the end: 361 slots.
    let times: Vec<DateTime<Utc>> = claimed.iter().map(|d| d.planned_at).collect();
    let distinct: HashSet<_> = times.iter().collect();
    assert_eq!(times.len(), 361, "each slot claimed once");
    assert_eq!(distinct.len(), 361);
    assert_eq!(times.iter().min(), Some(&start));
    assert_eq!(times.iter().max(), Some(&(start + Span::hours(1))));
    let store = &b.store;
    assert_eq!(count(store, "SELECT count(*) FROM beat_slots").await, 361);
    assert_eq!(count(store, "SELECT count(*) FROM outbox").await, 361);
    assert_eq!(
        count(store, "SELECT count(DISTINCT task_id) FROM outbox").await,
        361
    );

    // The relay publishes one message per slot.
    let vhost = tokio::task::spawn_blocking(TestVhost::create)
        .await
        .unwrap()
        .unwrap();
    let broker = BrokerSettings::with_url(vhost.amqp_url(), "beat-test");
    let shutdown = CancellationToken::new();
    let relay = tokio::spawn(shopfds_service::relay::run(
        store.clone(),
        broker.clone(),
        RelaySettings {
            poll_interval: Duration::from_millis(100),
            ..RelaySettings::default()
        },
        shutdown.clone(),
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while store.outbox().pending().await.unwrap() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "outbox not drained");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shutdown.cancel();
    relay.await.unwrap();
    assert_eq!(vhost.queue_depth("default").unwrap(), 361);
}

#[tokio::test]
async fn a_schedule_added_paused_and_resumed_with_the_cli_takes_effect_at_the_next_tick() {
    let db = TestDatabase::create().await.unwrap();
    let ticker = replica(&db).await;
    let env = Env::from_pairs([("DATABASE_URL", db.url())]);
    let cli = |args: &[&str]| {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let env = &env;
        async move { beat_scheduler::cli::run(&args, env).await }
    };
    let t0 = at("2026-12-05T00:00:00Z");
    assert!(ticker.tick(t0).await.unwrap().is_empty());

    let out = cli(&[
        "schedules",
        "add",
        "report-every-minute",
        "--task",
        "generate_sales_report",
        "--cron",
        "* * * * *",
        "--kwargs",
        r#"{"start_date": "2026-12-01", "end_date": "2026-12-04"}"#,
    ])
    .await
    .unwrap();
    assert!(out.contains("saved"), "{out}");
    let first = ticker.tick(t0 + Span::minutes(1)).await.unwrap();
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0].schedule, "report-every-minute");

    cli(&["schedules", "pause", "report-every-minute"])
        .await
        .unwrap();
    assert!(ticker.tick(t0 + Span::minutes(2)).await.unwrap().is_empty());
    let listed = cli(&["list"]).await.unwrap();
    assert!(
        listed.contains("report-every-minute") && listed.contains("PAUSED"),
        "{listed}"
    );

    cli(&["schedules", "resume", "report-every-minute"])
        .await
        .unwrap();
    let resumed = ticker.tick(t0 + Span::minutes(3)).await.unwrap();
    assert_eq!(resumed.len(), 1, "{resumed:?}");
    assert_eq!(resumed[0].planned_at, t0 + Span::minutes(3));

    // The message carries the schedule's arguments, on the task's queue.
    let (queue, headers): (String, serde_json::Value) = shopfds_store::sqlx::query_as(
        "SELECT routing_key, headers FROM outbox ORDER BY id DESC LIMIT 1",
    )
    .fetch_one(ticker.store.pool())
    .await
    .unwrap();
    assert_eq!(queue, "reports");
    assert_eq!(headers["task"], "generate_sales_report");

    // A bad schedule is refused naming what is wrong; an unknown name is an error.
    let bad = cli(&[
        "schedules",
        "add",
        "x",
        "--task",
        "archive_old_logs",
        "--cron",
        "* *",
    ])
    .await
    .unwrap_err()
    .to_string();
    assert!(bad.contains("five are expected"), "{bad}");
    let unknown = cli(&["schedules", "pause", "nope"])
        .await
        .unwrap_err()
        .to_string();
    assert!(unknown.contains("no schedule named"), "{unknown}");
    cli(&["schedules", "remove", "report-every-minute"])
        .await
        .unwrap();
    assert!(ticker.tick(t0 + Span::minutes(4)).await.unwrap().is_empty());
}

#[tokio::test]
async fn after_downtime_latest_runs_the_last_missed_slot_once_and_skip_none() {
    let db = TestDatabase::create().await.unwrap();
    let ticker = replica(&db).await;
    ticker
        .store
        .beat()
        .seed(&[every("latest", 60, "latest"), every("skip", 60, "skip")])
        .await
        .unwrap();
    let t0 = at("2026-12-05T00:00:00Z");
    assert_eq!(ticker.tick(t0).await.unwrap().len(), 2);
    // Down for an hour and a half.
    let back = t0 + Span::minutes(90) + Span::seconds(45);
    let after = ticker.tick(back).await.unwrap();
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0].schedule, "latest");
    assert_eq!(after[0].planned_at, t0 + Span::minutes(90));
    // Both go on at their next slot.
    let next = ticker.tick(t0 + Span::minutes(91)).await.unwrap();
    assert_eq!(next.len(), 2, "{next:?}");
}

#[tokio::test]
async fn the_http_api_adds_and_pauses_a_schedule_that_the_next_tick_follows() {
    use shopfds_auth::Scope;
    use shopfds_testkit::keys::{TestKey, auth_settings};

    let db = TestDatabase::create().await.unwrap();
    let vhost = tokio::task::spawn_blocking(TestVhost::create)
        .await
        .unwrap()
        .unwrap();
    let admin = TestKey::new(&[Scope::Admin]);
    let mut settings = beat_scheduler::Settings::from_env().unwrap();
    settings.database = DatabaseSettings::with_url(db.url());
    settings.broker = BrokerSettings::with_url(vhost.amqp_url(), "beat-api-test");
    settings.shell.ops_addr = "127.0.0.1:0".parse().unwrap();
    settings.auth = auth_settings(&[&admin]);
    settings.relay.enabled = false;
    // The app's own ticker ticks once at start, then not for an hour: the test's ticker, on an
    // injected clock, is the one that shows what the API changed.
    settings.tick = Duration::from_secs(3600);
    let app = beat_scheduler::Application::build(settings).await.unwrap();
    let base = format!("http://127.0.0.1:{}", app.ops_port());
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    let client = reqwest::Client::new();
    let ticker = replica(&db).await;

    // The file's five are there, with their next runs; no key is 401.
    assert_eq!(
        client
            .get(format!("{base}/v1/schedules"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let listed: serde_json::Value = client
        .get(format!("{base}/v1/schedules"))
        .bearer_auth(&admin.key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["timezone"], "Asia/Seoul");
    assert_eq!(listed["schedules"].as_array().unwrap().len(), 5, "{listed}");
    assert_eq!(
        listed["schedules"][0]["next_runs"]
            .as_array()
            .unwrap()
            .len(),
        5
    );

    // Added over HTTP: the next tick publishes it.
    let saved = client
        .put(format!("{base}/v1/schedules/minutely-health"))
        .bearer_auth(&admin.key)
        .json(&serde_json::json!({"task": "health_check", "every_secs": 60}))
        .send()
        .await
        .unwrap();
    assert_eq!(saved.status(), 200);
    let t0 = at("2026-12-05T00:00:00Z");
    let claimed = ticker.tick(t0).await.unwrap();
    assert!(
        claimed.iter().any(|d| d.schedule == "minutely-health"),
        "{claimed:?}"
    );
    // Paused over HTTP: the next tick does not.
    let paused = client
        .post(format!("{base}/v1/schedules/minutely-health/pause"))
        .bearer_auth(&admin.key)
        .send()
        .await
        .unwrap();
    assert_eq!(paused.status(), 200);
    let claimed = ticker.tick(t0 + Span::minutes(1)).await.unwrap();
    assert!(
        !claimed.iter().any(|d| d.schedule == "minutely-health"),
        "{claimed:?}"
    );
    // A bad schedule is 422 naming what is wrong; an unknown one 404.
    let bad = client
        .put(format!("{base}/v1/schedules/x"))
        .bearer_auth(&admin.key)
        .json(&serde_json::json!({"task": "health_check", "cron": "* *"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 422);
    assert!(bad.text().await.unwrap().contains("five are expected"));
    let unknown = client
        .delete(format!("{base}/v1/schedules/nope"))
        .bearer_auth(&admin.key)
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    shutdown.cancel();
    running.await.unwrap().unwrap();
}
