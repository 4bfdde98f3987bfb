//! The fds.v1.FraudDetection server over real gRPC (tonic client, loopback) against a real
//! PostgreSQL: APPROVE / REVIEW / BLOCK with their reasons, velocity from stored orders,
//! ScoreBatch, validation errors, grpc.health.v1, reflection, and recording in fds_results.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;
mod tls;

use fds_worker::engine::{IntelSnapshot, RulesConfig};
use helpers::{plain_request, spawn_grpc, spawn_grpc_with_index};
use shopfds_protocol::grpc::{Decision, ScoreBatchRequest, ScoreResponse};
use shopfds_store::{FdsDecision, FdsSource};

fn rule_ids(r: &ScoreResponse) -> Vec<&str> {
    r.reasons.iter().map(|r| r.rule_id.as_str()).collect()
}

fn rules_with_listed_ip() -> RulesConfig {
    let mut rules = RulesConfig::default();
    rules.intel.ips = vec!["198.51.100.0/24".parse().unwrap()];
    rules
}

#[tokio::test]
async fn approve_review_and_block_with_their_reasons_are_recorded() {
    let app = spawn_grpc(rules_with_listed_ip()).await;
    let mut client = app.client.clone();

    let approve = client
        .score(plain_request("approve-1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(approve.decision(), Decision::Approve, "{approve:?}");
    assert_eq!(approve.score, 0);
    assert!(approve.reasons.is_empty());
    assert_eq!(approve.rules_version, "test-rules");

    let mut review = plain_request("review-1");
    review.amount = 5_000_000;
    let review = client.score(review).await.unwrap().into_inner();
    assert_eq!(review.decision(), Decision::Review, "{review:?}");
    assert_eq!(review.score, 40);
    assert_eq!(rule_ids(&review), ["amount.high"]);
    assert_eq!(review.reasons[0].weight, 40);

    let mut block = plain_request("block-1");
    block.client_ip = "198.51.100.23".into();
    block.billing_country = "US".into();
    let block = client.score(block).await.unwrap().into_inner();
    assert_eq!(block.decision(), Decision::Block, "{block:?}");
    assert_eq!(block.score, 80);
    assert_eq!(rule_ids(&block), ["intel.ip", "country.mismatch"]);
    assert!(block.reasons[0].message.contains("198.51.100.23"));

    let stored = app.recorded("block-1", 1).await;
    assert_eq!(stored[0].decision, FdsDecision::Block);
    assert_eq!(stored[0].score, 80);
    assert_eq!(stored[0].source, FdsSource::Realtime);
    assert_eq!(stored[0].rules_version, "test-rules");
    assert_eq!(stored[0].reasons[0]["rule_id"], "intel.ip");
    assert_eq!(stored[0].reasons[1]["weight"], 20);
    assert_eq!(
        app.recorded("approve-1", 1).await[0].decision,
        FdsDecision::Approve
    );
    assert_eq!(
        app.recorded("review-1", 1).await[0].decision,
        FdsDecision::Review
    );

    // The feed's indicators apply to the next call.
    app.engine
        .intel()
        .replace(IntelSnapshot::new([], ["example.com"]));
    let listed = client
        .score(plain_request("approve-2"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rule_ids(&listed), ["intel.email_domain"]);
    assert_eq!(listed.decision(), Decision::Review);

    app.stop().await;
}

#[tokio::test]
async fn velocity_is_counted_from_stored_orders_per_customer_ip_and_card() {
    let app = spawn_grpc(RulesConfig::default()).await;
    // 3 orders in the last hour by the customer, 1 earlier today, 1 two days ago; the IP and
    // card are shared.
    for minutes_ago in [5, 20, 50, 300, 2 * 24 * 60] {
        app.insert_order("c-velo", "192.0.2.44", "fp-velo", minutes_ago)
            .await;
    }
    let response = score_velo(&app, "velo-1").await;
    assert_eq!(response.score, 55);
    assert_eq!(response.decision(), Decision::Review);

    // Another customer on the same IP only trips nothing.
    let mut other = plain_request("velo-2");
    other.client_ip = "192.0.2.44".into();
    let other = app.client.clone().score(other).await.unwrap().into_inner();
    assert!(other.reasons.is_empty(), "{other:?}");
    app.stop().await;
}

/// Scores an order of customer `c-velo` from its IP and card, who has 3 orders in the last hour
/// (4 with this one): customer and card trip their 1 h limit of 3, the IP (limit 5) does not.
async fn score_velo(app: &helpers::TestGrpc, order_id: &str) -> ScoreResponse {
    let mut request = plain_request(order_id);
    request.customer_id = "c-velo".into();
    request.client_ip = "192.0.2.44".into();
    request.card_fingerprint = "fp-velo".into();
    let response = app
        .client
        .clone()
        .score(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        rule_ids(&response),
        ["velocity.customer.1h", "velocity.card.1h"],
        "{response:?}"
    );
    assert!(
        response.reasons[0].message.starts_with("4 orders"),
        "{response:?}"
    );
    response
}

/// The same history as above, counted by the in-memory index, which learns of the orders from
/// the `orders_new` notifications (loading at start is shown by the reload test below).
#[tokio::test]
async fn the_in_memory_index_counts_announced_orders_like_the_query() {
    let app = spawn_grpc_with_index(RulesConfig::default()).await;
    app.insert_order("c-velo", "192.0.2.44", "fp-velo", 5).await;
    app.insert_order("c-velo", "192.0.2.44", "fp-velo", 2 * 24 * 60)
        .await;
    app.index_holds(1).await;
    for minutes_ago in [20, 50, 300] {
        app.insert_order("c-velo", "192.0.2.44", "fp-velo", minutes_ago)
            .await;
    }
    app.index_holds(4).await;

    score_velo(&app, "velo-mem-1").await;
    app.stop().await;
}

/// The listener's connection is killed: the index is reloaded, and orders stored while it was
/// gone are counted.
#[tokio::test]
async fn the_index_reloads_after_losing_its_listener() {
    let app = spawn_grpc_with_index(RulesConfig::default()).await;
    app.index_holds(0).await;
    let killed: i64 = sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE datname = current_database() AND query LIKE 'LISTEN%' AND pid <> pg_backend_pid()",
    )
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    assert_eq!(killed, 1, "one listening connection");
    for minutes_ago in [1, 2, 3, 4] {
        app.insert_order("c-gap", "192.0.2.45", "fp-gap", minutes_ago)
            .await;
    }
    app.index_holds(4).await;
    let mut request = plain_request("velo-gap");
    request.customer_id = "c-gap".into();
    let response = app
        .client
        .clone()
        .score(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        rule_ids(&response),
        ["velocity.customer.1h"],
        "{response:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn score_batch_answers_in_order_records_as_batch_and_names_a_bad_field() {
    let app = spawn_grpc(rules_with_listed_ip()).await;
    let mut client = app.client.clone();
    let mut blocked = plain_request("batch-2");
    blocked.client_ip = "198.51.100.9".into();
    blocked.account_created_at = Some(prost_types::Timestamp {
        seconds: chrono::Utc::now().timestamp() - 3600,
        nanos: 0,
    });
    blocked.amount = 600_000;
    let response = client
        .score_batch(ScoreBatchRequest {
            requests: vec![plain_request("batch-1"), blocked],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.responses.len(), 2);
    assert_eq!(response.responses[0].decision(), Decision::Approve);
    assert_eq!(response.responses[1].decision(), Decision::Block);
    assert_eq!(
        rule_ids(&response.responses[1]),
        ["intel.ip", "account.new_large_order"]
    );
    assert_eq!(app.recorded("batch-2", 1).await[0].source, FdsSource::Batch);

    let mut bad = plain_request("batch-4");
    bad.client_ip = "not-an-ip".into();
    let status = client
        .score_batch(ScoreBatchRequest {
            requests: vec![plain_request("batch-3"), bad],
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("requests[1].client_ip"),
        "{status:?}"
    );

    let mut no_currency = plain_request("bad-1");
    no_currency.currency = String::new();
    let status = client.score(no_currency).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().starts_with("currency"), "{status:?}");
    app.stop().await;
}

#[tokio::test]
async fn health_says_serving_and_reflection_lists_the_service() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::{ServerReflectionRequest, ServiceResponse};

    let app = spawn_grpc(RulesConfig::default()).await;
    let mut health = HealthClient::new(app.channel.clone());
    for service in ["", "fds.v1.FraudDetection"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status();
        assert_eq!(status, ServingStatus::Serving, "{service:?}");
    }

    let mut reflection = ServerReflectionClient::with_interceptor(
        app.channel.clone(),
        helpers::WithKey::new(Some(&app.keys.admin)),
    );
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().expect("an answer");
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("not a service list: {answer:?}");
    };
    let names: Vec<String> = list
        .service
        .into_iter()
        .map(|ServiceResponse { name }| name)
        .collect();
    assert!(
        names.iter().any(|n| n == "fds.v1.FraudDetection"),
        "{names:?}"
    );
    assert!(
        names.iter().any(|n| n == "grpc.health.v1.Health"),
        "{names:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn score_needs_a_key_with_fds_score_and_a_revoked_key_is_refused() {
    use shopfds_store::NewApiKey;
    use tonic::Code;

    let app = spawn_grpc(RulesConfig::default()).await;
    // order-api's key (fds:score) scores; so does admin.
    let scored = app
        .client_with(Some(&app.keys.score))
        .score(plain_request("with-key"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(scored.decision(), Decision::Approve);

    // No key, a made-up key, a key of the HTTP API without fds:score.
    let none = app
        .client_with(None)
        .score(plain_request("no-key"))
        .await
        .unwrap_err();
    assert_eq!(none.code(), Code::Unauthenticated, "{none:?}");
    let stranger = shopfds_testkit::keys::TestKey::new(&[shopfds_auth::Scope::Admin]);
    let unknown = app
        .client_with(Some(&stranger))
        .score(plain_request("unknown-key"))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::Unauthenticated, "{unknown:?}");
    assert!(!unknown.message().contains(&stranger.key));
    let reader = app
        .client_with(Some(&app.keys.reader))
        .score(plain_request("reader-key"))
        .await
        .unwrap_err();
    assert_eq!(reader.code(), Code::PermissionDenied, "{reader:?}");
    assert!(reader.message().contains("fds:score"), "{reader:?}");

    // A key from the api_keys table works until it is revoked.
    let stored = shopfds_testkit::keys::TestKey::new(&[shopfds_auth::Scope::FdsScore]);
    let hash = stored.entry.rsplit(':').next().unwrap().to_owned();
    app.store
        .api_keys()
        .insert(&NewApiKey {
            id: stored.id.clone(),
            name: "order-api".into(),
            scopes: vec!["fds:score".into()],
            hash,
        })
        .await
        .unwrap();
    let mut client = app.client_with(Some(&stored));
    client.score(plain_request("stored-key")).await.unwrap();
    assert!(app.store.api_keys().revoke(&stored.id).await.unwrap());
    // The server may trust its cached answer for API_KEYS_CACHE_SECS (30 s by default).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(45);
    loop {
        match client.score(plain_request("revoked-key")).await {
            Err(status) if status.code() == Code::Unauthenticated => break,
            other => assert!(
                std::time::Instant::now() < deadline,
                "the revoked key still scores: {other:?}"
            ),
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    // Nothing refused was scored: only the admitted calls reached fds_results.
    assert!(app.recorded("no-key", 0).await.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn score_batch_and_reflection_are_for_internal_callers_only_and_health_is_open() {
    use tonic::Code;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;

    let app = spawn_grpc(RulesConfig::default()).await;
    let batch = ScoreBatchRequest {
        requests: vec![plain_request("batch-1")],
    };
    let refused = app
        .client_with(Some(&app.keys.score))
        .score_batch(batch.clone())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let anonymous = app
        .client_with(None)
        .score_batch(batch.clone())
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated, "{anonymous:?}");
    let admitted = app.client.clone().score_batch(batch).await.unwrap();
    assert_eq!(admitted.into_inner().responses.len(), 1);

    let list = || {
        futures::stream::iter([ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        }])
    };
    for (key, code) in [
        (Some(&app.keys.score), Code::PermissionDenied),
        (None, Code::Unauthenticated),
    ] {
        let mut reflection = ServerReflectionClient::with_interceptor(
            app.channel.clone(),
            helpers::WithKey::new(key),
        );
        let status = reflection.server_reflection_info(list()).await.unwrap_err();
        assert_eq!(status.code(), code, "{status:?}");
    }

    // Probes carry no key.
    let mut health = HealthClient::new(app.channel.clone());
    health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    app.stop().await;
}
