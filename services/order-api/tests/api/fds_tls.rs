//! The Score call from order-api to fds-worker over TLS and mutual TLS, both services
//! in-process with their settings read from the variables a deployment sets (`GRPC_TLS_*`,
//! `FDS_GRPC_*`), certificates made by the test.

use serde_json::Value;
use shopfds_testkit::tls::{TestPki, path_str};

use crate::helpers::{FdsTlsVars, Options, sample_order, spawn_app_with};

/// fds-worker's variables: its certificate for `names`, and the client CA when `mutual`.
fn server_vars(pki: &TestPki, names: &[&str], mutual: bool) -> Vec<(&'static str, String)> {
    let server = pki.server_for("fds-worker", names).unwrap();
    let mut vars = vec![
        ("GRPC_TLS_CERT_FILE", path_str(&server.cert)),
        ("GRPC_TLS_KEY_FILE", path_str(&server.key)),
    ];
    if mutual {
        vars.push(("GRPC_TLS_CLIENT_CA_FILE", path_str(&pki.ca_file())));
    }
    vars
}

async fn order_answer(tls: FdsTlsVars) -> Value {
    let app = spawn_app_with(Options {
        fds_tls: Some(tls),
        ..Options::default()
    })
    .await;
    let body: Value = app.post_order_json(&sample_order()).await;
    app.stop().await;
    body
}

#[tokio::test]
async fn an_order_is_scored_by_fds_worker_over_mutual_tls() {
    let pki = TestPki::new("order-api-mtls").unwrap();
    let client = pki.client("order-api").unwrap();
    let body = order_answer(FdsTlsVars {
        server: server_vars(&pki, &["127.0.0.1", "localhost"], true),
        client: vec![
            ("FDS_GRPC_CA_FILE", path_str(&pki.ca_file())),
            ("FDS_GRPC_CERT_FILE", path_str(&client.cert)),
            ("FDS_GRPC_KEY_FILE", path_str(&client.key)),
        ],
    })
    .await;
    assert_eq!(body["fds"]["source"], "realtime", "{body}");
    assert_eq!(body["fds"]["decision"], "APPROVE", "{body}");
    assert_eq!(body["status"], "accepted", "{body}");
}

#[tokio::test]
async fn without_a_client_certificate_a_mutual_tls_fds_worker_refuses_and_the_order_falls_back() {
    let pki = TestPki::new("order-api-no-cert").unwrap();
    let body = order_answer(FdsTlsVars {
        server: server_vars(&pki, &["127.0.0.1", "localhost"], true),
        client: vec![("FDS_GRPC_CA_FILE", path_str(&pki.ca_file()))],
    })
    .await;
    assert_eq!(body["fds"]["source"], "fallback", "{body}");
    assert_eq!(body["fds"]["reasons"][0]["rule_id"], "fds.unavailable");
}

#[tokio::test]
async fn tls_without_client_certificates_scores_checking_the_name_of_fds_tls_domain() {
    // fds-worker's certificate names only the Service, not the address order-api dials:
    // FDS_GRPC_TLS_DOMAIN says which name to expect.
    let pki = TestPki::new("order-api-tls").unwrap();
    let body = order_answer(FdsTlsVars {
        server: server_vars(&pki, &["fds-worker.shop.svc"], false),
        client: vec![
            ("FDS_GRPC_CA_FILE", path_str(&pki.ca_file())),
            ("FDS_GRPC_TLS_DOMAIN", "fds-worker.shop.svc".to_owned()),
        ],
    })
    .await;
    assert_eq!(body["fds"]["source"], "realtime", "{body}");
}

#[tokio::test]
async fn a_server_certificate_for_another_name_is_refused_and_the_order_falls_back() {
    let pki = TestPki::new("order-api-wrong-name").unwrap();
    let body = order_answer(FdsTlsVars {
        server: server_vars(&pki, &["fds-worker.shop.svc"], false),
        client: vec![("FDS_GRPC_CA_FILE", path_str(&pki.ca_file()))],
    })
    .await;
    assert_eq!(body["fds"]["source"], "fallback", "{body}");
}
