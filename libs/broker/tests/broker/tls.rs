//! `amqps://` with a CA and a client certificate: a RabbitMQ node of the test's own whose TLS
//! listener requires a client certificate (`verify_peer`, `fail_if_no_peer_cert`), with a CA,
//! server and client certificates made by the test. A worker and a publisher connect through
//! `shopfds_broker::amqp::connect`, as every connection of the workspace does.

// Fixtures fail the test loudly; clippy's in-test allowance only covers `#[test]` bodies.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use serde_json::{Map, json};
use shopfds_broker::{
    BrokerSettings, BrokerTls, Outgoing, QueueType, ReconnectingPublisher, Registry, TaskOptions,
    topology,
};
use shopfds_config::Env;
use shopfds_protocol::{TaskMessage, TaskState};
use shopfds_store::{DatabaseSettings, Store};
use shopfds_testkit::pg::TestDatabase;
use shopfds_testkit::rabbit_node::{NodeTls, RabbitNode};
use shopfds_testkit::tls::{CertFiles, TestPki, path_str};

use crate::helpers::{QUEUE, start_worker, wait_for_state, worker_settings};

/// Broker settings for `url` with the TLS variables given, read as a binary reads them.
fn settings(url: &str, ca: &Path, client: Option<&CertFiles>) -> BrokerSettings {
    let mut vars = vec![("BROKER_TLS_CA_FILE", path_str(ca))];
    if let Some(client) = client {
        vars.push(("BROKER_TLS_CERT_FILE", path_str(&client.cert)));
        vars.push(("BROKER_TLS_KEY_FILE", path_str(&client.key)));
    }
    BrokerSettings {
        tls: BrokerTls::read(&Env::from_pairs(vars), url).unwrap(),
        ..BrokerSettings::with_url(url, "tls-test")
    }
}

#[tokio::test]
async fn amqps_with_a_client_certificate_round_trips_a_task_and_other_clients_are_refused() {
    shopfds_testkit::init_tracing();
    let pki = TestPki::new("broker").unwrap();
    let server = pki.server("rabbit").unwrap();
    let client = pki.client("shopfds-worker").unwrap();
    let node = RabbitNode::start_with_tls(&NodeTls {
        ca: pki.ca_file(),
        cert: server.cert.clone(),
        key: server.key.clone(),
    })
    .await
    .unwrap();
    let url = node.amqps_url().unwrap();

    // Without a client certificate, the node ends the handshake.
    let anonymous = settings(&url, &pki.ca_file(), None);
    let refused = shopfds_broker::amqp::connect(&anonymous).await.unwrap_err();
    // The node sends its alert and closes; the client reads either, depending on which reaches
    // it first.
    let refused = refused.to_string();
    assert!(
        refused.contains("alert") || refused.contains("reset by peer"),
        "the node aborts the handshake: {refused}"
    );

    // Trusting another CA, the client refuses the node's certificate.
    let other = TestPki::new("other").unwrap();
    let wrong_ca = settings(&url, &other.ca_file(), Some(&client));
    let refused = shopfds_broker::amqp::connect(&wrong_ca).await.unwrap_err();
    assert!(
        refused.to_string().contains("certificate"),
        "the client names the untrusted certificate: {refused}"
    );

    // With the CA and the client certificate: a task published and run over amqps.
    let mut broker = settings(&url, &pki.ca_file(), Some(&client));
    broker.connection_name = "tls-worker".to_owned();
    let conn = shopfds_broker::amqp::connect(&broker).await.unwrap();
    topology::declare_with(
        &conn.create_channel().await.unwrap(),
        QueueType::Classic,
        None,
    )
    .await
    .unwrap();
    let db = TestDatabase::create().await.unwrap();
    let store = Store::connect(&DatabaseSettings::with_url(db.url()))
        .await
        .unwrap();
    let mut registry = Registry::new();
    registry.register("tls_echo", TaskOptions::default(), |_ctx| async move {
        Ok(json!("answered over amqps"))
    });
    let mut worker = start_worker(&broker, &store, registry, worker_settings());
    let mut publisher_settings = broker.clone();
    publisher_settings.connection_name = "tls-publisher".to_owned();
    let publisher = ReconnectingPublisher::new(publisher_settings);
    let msg = TaskMessage::new("tls_echo", Map::new());
    publisher
        .publish(&Outgoing::task(&msg, QUEUE))
        .await
        .unwrap();
    let done = wait_for_state(&store, msg.id(), TaskState::Success).await;
    assert_eq!(done.result, Some(json!("answered over amqps")));
    let names = node.connection_names().await.unwrap();
    assert!(
        names.iter().any(|n| n == "tls-worker") && names.iter().any(|n| n == "tls-publisher"),
        "the worker and the publisher are connected to the TLS node: {names:?}"
    );
    worker.stop().await.unwrap();
}

#[test]
fn a_broker_key_file_that_does_not_parse_is_named() {
    let pki = TestPki::new("bad-key").unwrap();
    let client = pki.client("c").unwrap();
    let key = pki.dir().join("garbage.key");
    std::fs::write(
        &key,
        "-----BEGIN PRIVATE KEY-----\n???\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let env = Env::from_pairs([
        ("BROKER_TLS_CERT_FILE", path_str(&client.cert)),
        ("BROKER_TLS_KEY_FILE", path_str(&key)),
    ]);
    let err = BrokerTls::read(&env, "amqps://rabbit/%2f").unwrap_err();
    assert_eq!(err.variable, "BROKER_TLS_KEY_FILE");
}

#[test]
fn broker_tls_files_with_a_plain_amqp_url_are_a_settings_error() {
    let pki = TestPki::new("plain").unwrap();
    let env = Env::from_pairs([("BROKER_TLS_CA_FILE", path_str(&pki.ca_file()))]);
    let err = BrokerTls::read(&env, "amqp://rabbit/%2f").unwrap_err();
    assert_eq!(err.variable, "BROKER_TLS_CA_FILE");
    assert!(err.message.contains("amqps://"), "{err}");
}
