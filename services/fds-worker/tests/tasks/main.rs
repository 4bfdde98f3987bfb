//! The fds tasks against real servers: `evaluate_transaction` once per order, the nightly
//! `batch_fds_evaluation` shared by two fds-worker processes, and `update_threat_intelligence`
//! from a feed served over HTTP, stored in PostgreSQL and picked up by another replica.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::http::StatusCode;
use chrono::Utc;
use fds_worker::engine::{Engine, OrderFacts};
use fds_worker::tasks::batch::{seoul_day, yesterday_in_seoul};
use fds_worker::tasks::intel::reload_threat_intel;
use helpers::{FeedServer, TestEnv, fallback_order, tasks_settings};
use serde_json::{Value, json};
use shopfds_protocol::TaskState;
use shopfds_protocol::names::REASON_HEADER;
use shopfds_protocol::tasks::{
    BATCH_FDS_EVALUATION, EVALUATE_TRANSACTION, UPDATE_THREAT_INTELLIGENCE,
};
use uuid::Uuid;

#[tokio::test]
async fn evaluate_transaction_scores_a_fallback_order_once_and_leaves_realtime_scores_alone() {
    let env = TestEnv::new().await;
    let _worker = env.spawn_worker(Arc::new(Engine::builtin()), tasks_settings("a"));
    let order = fallback_order("c-1001", "203.0.113.7");
    env.create_order(&order).await;

    let first = env
        .send(
            EVALUATE_TRANSACTION,
            json!({"order_id": order.id.to_string()}),
        )
        .await;
    let record = env.wait_for_state(first.id(), TaskState::Success).await;
    let result = record.result.unwrap();
    assert_eq!(result["outcome"], "evaluated", "{result}");
    assert_eq!(result["decision"], "APPROVE", "{result}");
    assert_eq!(result["order_updated"], true, "{result}");

    let stored = env.store.orders().get(order.id).await.unwrap().unwrap();
    assert_eq!(stored.status, "accepted", "the fallback REVIEW is replaced");
    assert_eq!(stored.fds["source"], "batch");
    assert_eq!(stored.fds["decision"], "APPROVE");
    assert_eq!(stored.fds["rules_version"], "builtin-1");
    assert!(stored.fds["reasons"].is_array());
    let results = env
        .store
        .fds()
        .for_order(&order.id.to_string())
        .await
        .unwrap();
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].source, shopfds_store::FdsSource::Batch);

    // The same message delivered again, and another message for the same order.
    env.publish(&first).await;
    let again = env
        .send(
            EVALUATE_TRANSACTION,
            json!({"order_id": order.id.to_string()}),
        )
        .await;
    let record = env.wait_for_state(again.id(), TaskState::Success).await;
    assert_eq!(record.result.unwrap()["outcome"], "already_evaluated");
    env.wait_for_state(first.id(), TaskState::Success).await;
    let results = env
        .store
        .fds()
        .for_order(&order.id.to_string())
        .await
        .unwrap();
    assert_eq!(results.len(), 1, "nothing more written: {results:?}");

    // An order scored in real time gets a batch decision on record, its own stays.
    let scored = fallback_order("c-1002", "203.0.113.8");
    env.create_realtime_order(scored.clone()).await;
    let msg = env
        .send(
            EVALUATE_TRANSACTION,
            json!({"order_id": scored.id.to_string()}),
        )
        .await;
    let result = env
        .wait_for_state(msg.id(), TaskState::Success)
        .await
        .result
        .unwrap();
    assert_eq!(result["order_updated"], false, "{result}");
    let stored = env.store.orders().get(scored.id).await.unwrap().unwrap();
    assert_eq!(stored.fds["source"], "realtime");

    // An unknown order is a permanent failure, dead-lettered with the reason.
    let missing = Uuid::new_v4();
    let msg = env
        .send(
            EVALUATE_TRANSACTION,
            json!({"order_id": missing.to_string()}),
        )
        .await;
    let record = env.wait_for_state(msg.id(), TaskState::Failure).await;
    assert_eq!(record.retries, 0);
    assert_eq!(record.error.unwrap()["exc_type"], "PermanentError");
    let headers = env.take("failed.fds").await;
    let reason = headers[REASON_HEADER].as_str().unwrap();
    assert!(reason.contains(&missing.to_string()), "{reason}");
    assert!(reason.contains("not found"), "{reason}");
}

#[tokio::test]
async fn the_nightly_batch_is_shared_by_two_workers_and_scores_each_unscored_order_once() {
    let env = TestEnv::new().await;
    let (day_start, day_end) = seoul_day(yesterday_in_seoul(Utc::now())).unwrap();
    let step = (day_end - day_start) / 250;

    // A day of 250 transactions, one in five scored in real time; plus orders of today, which
    // tonight's batch does not touch.
    let mut unscored = BTreeSet::new();
    let mut prescored = BTreeSet::new();
    for i in 0..250 {
        let order = fallback_order(&format!("c-{}", i % 40), &format!("198.51.100.{}", i % 200));
        if i % 5 == 0 {
            env.create_realtime_order(order.clone()).await;
            prescored.insert(order.id.to_string());
        } else {
            env.create_order(&order).await;
            unscored.insert(order.id.to_string());
        }
        env.set_created_at(order.id, day_start + step * i).await;
    }
    let mut today = BTreeSet::new();
    for i in 0..5 {
        let order = fallback_order(&format!("c-today-{i}"), "198.51.100.250");
        env.create_order(&order).await;
        env.set_created_at(order.id, day_end + chrono::Duration::minutes(1 + i))
            .await;
        today.insert(order.id.to_string());
    }

    let chunk_size = [("FDS_BATCH_CHUNK_SIZE", "20")];
    let _a = env.spawn_binary("replica-a", &chunk_size).await;
    let _b = env.spawn_binary("replica-b", &chunk_size).await;

    // As beat sends it at midnight: no arguments.
    let planner = env.send(BATCH_FDS_EVALUATION, json!({})).await;
    let plan = env
        .wait_for_state(planner.id(), TaskState::Success)
        .await
        .result
        .unwrap();
    assert_eq!(plan["orders"], 200, "{plan}");
    assert_eq!(plan["chunks"], 10, "{plan}");
    assert_eq!(
        plan["date"],
        yesterday_in_seoul(Utc::now())
            .format("%Y-%m-%d")
            .to_string()
    );
    assert!(plan["group_id"].as_str().is_some(), "{plan}");
    let chunk_ids: Vec<String> = plan["task_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(chunk_ids.len(), 10);

    let mut workers = BTreeSet::new();
    let mut evaluated = 0;
    for id in &chunk_ids {
        let record = env.wait_for_state(id, TaskState::Success).await;
        assert_eq!(record.name, BATCH_FDS_EVALUATION);
        let result = record.result.unwrap();
        assert_eq!(result["orders"], 20, "{result}");
        evaluated += result["evaluated"].as_u64().unwrap();
        workers.insert(result["worker"].as_str().unwrap().to_owned());
    }
    assert_eq!(evaluated, 200);
    assert_eq!(
        workers,
        BTreeSet::from([
            "fds-worker@replica-a".to_owned(),
            "fds-worker@replica-b".to_owned()
        ]),
        "both replicas took chunks"
    );

    let batch = env.results_per_order("batch").await;
    for id in &unscored {
        assert_eq!(batch.get(id), Some(&1), "order {id}: one batch result");
    }
    for id in prescored.iter().chain(&today) {
        assert_eq!(batch.get(id), None, "order {id}: no batch result");
    }
    assert_eq!(batch.len(), unscored.len());
    let still_fallback: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM orders WHERE created_at >= $1 AND created_at < $2 \
           AND fds ->> 'source' = 'fallback'",
    )
    .bind(day_start)
    .bind(day_end)
    .fetch_one(env.store.pool())
    .await
    .unwrap();
    assert_eq!(
        still_fallback, 0,
        "every fallback order of the day has its decision"
    );

    // Run again (a second beat, a replay): nothing is left to do.
    let again = env.send(BATCH_FDS_EVALUATION, json!({})).await;
    let plan = env
        .wait_for_state(again.id(), TaskState::Success)
        .await
        .result
        .unwrap();
    assert_eq!(plan["orders"], 0, "{plan}");
    assert_eq!(plan["chunks"], 0, "{plan}");
}

/// An order from `ip` as the rule engine sees it.
fn facts(ip: &str) -> OrderFacts {
    OrderFacts {
        order_id: Uuid::new_v4().to_string(),
        customer_id: "c-1001".to_owned(),
        email: "minsu.kim@example.com".to_owned(),
        client_ip: Some(ip.parse().unwrap()),
        amount: 90_000,
        currency: "KRW".to_owned(),
        shipping_country: "KR".to_owned(),
        billing_country: "KR".to_owned(),
        card_fingerprint: None,
        account_created_at: None,
        velocity: None,
    }
}

fn rule_ids(engine: &Engine, facts: &OrderFacts) -> Vec<String> {
    engine
        .assess(facts)
        .reasons
        .into_iter()
        .map(|r| r.rule_id)
        .collect()
}

#[tokio::test]
async fn threat_intelligence_is_fetched_stored_and_reaches_every_replica_and_a_bad_feed_changes_nothing()
 {
    let env = TestEnv::new().await;
    let feed = FeedServer::start(
        StatusCode::OK,
        r#"{"ips": ["198.51.100.0/24"], "email_domains": ["mailinator.com"],
            "generated_at": "2025-06-01T00:00:00Z"}"#,
    )
    .await;
    let engine = Arc::new(Engine::builtin());
    let _worker = env.spawn_worker(Arc::clone(&engine), tasks_settings("a"));
    let listed = facts("198.51.100.23");
    assert!(!rule_ids(&engine, &listed).contains(&"intel.ip".to_owned()));

    let msg = env
        .send(UPDATE_THREAT_INTELLIGENCE, json!({"url": feed.url()}))
        .await;
    let result = env
        .wait_for_state(msg.id(), TaskState::Success)
        .await
        .result
        .unwrap();
    assert_eq!(result["version"], 1, "{result}");
    assert_eq!(result["ips"], 1);
    assert_eq!(result["email_domains"], 1);
    assert!(
        !result.to_string().contains("s3cret"),
        "the URL's query is not shown: {result}"
    );
    assert!(rule_ids(&engine, &listed).contains(&"intel.ip".to_owned()));
    assert!(!rule_ids(&engine, &facts("198.51.101.23")).contains(&"intel.ip".to_owned()));

    // A stored order from that IP, scored by the batch, gets the reason too.
    let order = fallback_order("c-2001", "198.51.100.99");
    env.create_order(&order).await;
    let eval = env
        .send(
            EVALUATE_TRANSACTION,
            json!({"order_id": order.id.to_string()}),
        )
        .await;
    let result = env
        .wait_for_state(eval.id(), TaskState::Success)
        .await
        .result
        .unwrap();
    let reasons: Vec<&str> = result["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rule_id"].as_str().unwrap())
        .collect();
    assert!(reasons.contains(&"intel.ip"), "{result}");
    assert_eq!(result["decision"], "REVIEW", "{result}");

    // Another replica (it did not run the task) loads the stored version.
    let other = Engine::builtin();
    let version = reload_threat_intel(&env.store, &other, None).await.unwrap();
    assert_eq!(version, Some(1));
    assert!(rule_ids(&other, &listed).contains(&"intel.ip".to_owned()));
    let mut domain = facts("192.0.2.1");
    domain.email = "someone@mx.mailinator.com".to_owned();
    assert!(rule_ids(&other, &domain).contains(&"intel.email_domain".to_owned()));
    assert_eq!(
        reload_threat_intel(&env.store, &other, version)
            .await
            .unwrap(),
        Some(1),
        "nothing newer"
    );

    // A malformed feed: a permanent failure naming the entry; the snapshot in force stays.
    feed.answer(
        StatusCode::OK,
        r#"{"ips": ["198.51.100.0/24", "10.0.0.300/8"], "email_domains": []}"#,
    );
    let bad = env
        .send(UPDATE_THREAT_INTELLIGENCE, json!({"url": feed.url()}))
        .await;
    let record = env.wait_for_state(bad.id(), TaskState::Failure).await;
    assert_eq!(record.retries, 0, "a bad feed is not retried");
    let error = record.error.unwrap();
    assert_eq!(error["exc_type"], "PermanentError");
    let message = error["exc_message"].as_str().unwrap();
    assert!(message.contains("ips[1]"), "{message}");
    assert!(message.contains("10.0.0.300/8"), "{message}");
    let headers = env.take("failed.fds").await;
    assert_eq!(headers["id"], json!(bad.id()));
    assert!(
        headers[REASON_HEADER].as_str().unwrap().contains("ips[1]"),
        "{headers:?}"
    );
    assert!(rule_ids(&engine, &listed).contains(&"intel.ip".to_owned()));
    assert_eq!(
        env.store.threat_intel().latest_version().await.unwrap(),
        Some(1)
    );

    // A feed that is down is retried, and the retry gets the new feed.
    feed.answer(StatusCode::SERVICE_UNAVAILABLE, "maintenance");
    let retried = env.send(UPDATE_THREAT_INTELLIGENCE, json!({})).await;
    // No url and no THREAT_INTEL_URL: nothing to fetch, permanently.
    let record = env.wait_for_state(retried.id(), TaskState::Failure).await;
    assert!(
        record.error.unwrap()["exc_message"]
            .as_str()
            .unwrap()
            .contains("THREAT_INTEL_URL")
    );
    let down = env
        .send(UPDATE_THREAT_INTELLIGENCE, json!({"url": feed.url()}))
        .await;
    let record = env.wait_for_state(down.id(), TaskState::Retry).await;
    assert!(
        record.error.unwrap()["exc_message"]
            .as_str()
            .unwrap()
            .contains("503"),
    );
    feed.answer(StatusCode::OK, r#"{"ips": ["192.0.2.0/24"]}"#);
    let result: Value = env
        .wait_for_state(down.id(), TaskState::Success)
        .await
        .result
        .unwrap();
    assert_eq!(result["version"], 2, "{result}");
    assert!(rule_ids(&engine, &facts("192.0.2.1")).contains(&"intel.ip".to_owned()));
    assert!(
        !rule_ids(&engine, &listed).contains(&"intel.ip".to_owned()),
        "the new feed replaces the old one"
    );
}
