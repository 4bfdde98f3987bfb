//! The score server over TLS and mutual TLS (`GRPC_TLS_CERT_FILE`, `GRPC_TLS_KEY_FILE`,
//! `GRPC_TLS_CLIENT_CA_FILE`), with a CA, server and client certificates made by the test.

use std::net::SocketAddr;
use std::path::Path;

use fds_worker::engine::RulesConfig;
use fds_worker::tls::GrpcServerTls;
use shopfds_config::Env;
use shopfds_protocol::grpc::{Decision, FraudDetectionClient, ScoreBatchRequest, ScoreResponse};
use shopfds_testkit::tls::{CertFiles, TestPki, path_str};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::helpers::{GrpcTls, plain_request, spawn_grpc_with_tls};

/// The server's TLS as fds-worker reads it from its variables.
fn server_tls(server: &CertFiles, client_ca: Option<&Path>) -> ServerTlsConfig {
    let mut vars = vec![
        ("GRPC_TLS_CERT_FILE", path_str(&server.cert)),
        ("GRPC_TLS_KEY_FILE", path_str(&server.key)),
    ];
    if let Some(ca) = client_ca {
        vars.push(("GRPC_TLS_CLIENT_CA_FILE", path_str(ca)));
    }
    GrpcServerTls::read(&Env::from_pairs(vars))
        .unwrap()
        .server_config()
        .unwrap()
}

/// A client trusting `ca`, presenting `identity` when given.
fn client_tls(ca: &Path, identity: Option<&CertFiles>) -> ClientTlsConfig {
    let mut config =
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(std::fs::read(ca).unwrap()));
    if let Some(id) = identity {
        config = config.identity(Identity::from_pem(
            std::fs::read(&id.cert).unwrap(),
            std::fs::read(&id.key).unwrap(),
        ));
    }
    config
}

/// A client on a new connection, with no API key: only its certificate (if any) speaks for it.
async fn keyless_client(
    addr: SocketAddr,
    tls: Option<ClientTlsConfig>,
) -> Result<FraudDetectionClient<Channel>, String> {
    let endpoint = match tls {
        Some(tls) => Channel::from_shared(format!("https://{addr}"))
            .unwrap()
            .tls_config(tls)
            .unwrap(),
        None => Channel::from_shared(format!("http://{addr}")).unwrap(),
    };
    let channel = endpoint.connect().await.map_err(|e| format!("{e:?}"))?;
    Ok(FraudDetectionClient::new(channel))
}

/// One Score without an API key on a new connection; any failure (handshake, transport,
/// status) as text.
async fn try_score(
    addr: SocketAddr,
    tls: Option<ClientTlsConfig>,
) -> Result<ScoreResponse, String> {
    keyless_client(addr, tls)
        .await?
        .score(plain_request("tls-probe"))
        .await
        .map(tonic::Response::into_inner)
        .map_err(|status| format!("{status:?}"))
}

#[tokio::test]
async fn mutual_tls_scores_for_a_client_certificate_and_refuses_every_other_client() {
    let pki = TestPki::new("grpc-mtls").unwrap();
    let server = pki.server("fds-worker").unwrap();
    let client = pki.client("order-api").unwrap();
    let app = spawn_grpc_with_tls(
        RulesConfig::default(),
        GrpcTls {
            server: server_tls(&server, Some(&pki.ca_file())),
            client: client_tls(&pki.ca_file(), Some(&client)),
        },
    )
    .await;

    let answer = app
        .client
        .clone()
        .score(plain_request("mtls-1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.decision(), Decision::Approve, "{answer:?}");
    app.recorded("mtls-1", 1).await;

    let without_certificate = try_score(app.addr, Some(client_tls(&pki.ca_file(), None))).await;
    // The server ends the handshake with an alert ("certificate required").
    assert!(
        without_certificate
            .as_ref()
            .is_err_and(|e| e.contains("CertificateRequired")),
        "a client without a certificate is refused: {without_certificate:?}"
    );
    let other = TestPki::new("grpc-other").unwrap();
    let stranger = other.client("stranger").unwrap();
    let foreign_certificate =
        try_score(app.addr, Some(client_tls(&pki.ca_file(), Some(&stranger)))).await;
    assert!(
        foreign_certificate
            .as_ref()
            .is_err_and(|e| e.contains("UnknownCA")),
        "a client certificate of another CA is refused: {foreign_certificate:?}"
    );
    let plaintext = try_score(app.addr, None).await;
    assert!(plaintext.is_err(), "plaintext is refused: {plaintext:?}");
    // The client with its certificate still scores on a fresh connection, without an API key:
    // a verified certificate is an internal caller, so ScoreBatch is open to it too.
    let again = try_score(app.addr, Some(client_tls(&pki.ca_file(), Some(&client)))).await;
    assert!(again.is_ok(), "{again:?}");
    let batch = keyless_client(app.addr, Some(client_tls(&pki.ca_file(), Some(&client))))
        .await
        .unwrap()
        .score_batch(ScoreBatchRequest {
            requests: vec![plain_request("mtls-batch")],
        })
        .await;
    assert!(
        batch.is_ok_and(|b| b.into_inner().responses.len() == 1),
        "ScoreBatch for a verified client certificate"
    );
    app.stop().await;
}

#[tokio::test]
async fn tls_without_a_client_ca_serves_clients_that_present_no_certificate() {
    let pki = TestPki::new("grpc-tls").unwrap();
    let server = pki.server("fds-worker").unwrap();
    let app = spawn_grpc_with_tls(
        RulesConfig::default(),
        GrpcTls {
            server: server_tls(&server, None),
            client: client_tls(&pki.ca_file(), None),
        },
    )
    .await;
    let answer = app
        .client
        .clone()
        .score(plain_request("tls-1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.decision(), Decision::Approve, "{answer:?}");
    // TLS alone is no credential: without a client certificate, Score still needs a key.
    let anonymous = try_score(app.addr, Some(client_tls(&pki.ca_file(), None))).await;
    assert!(
        anonymous
            .as_ref()
            .is_err_and(|e| e.contains("Unauthenticated")),
        "{anonymous:?}"
    );
    // A client that trusts another CA refuses the server's certificate.
    let other = TestPki::new("grpc-tls-other").unwrap();
    let untrusting = try_score(app.addr, Some(client_tls(&other.ca_file(), None))).await;
    assert!(untrusting.is_err(), "{untrusting:?}");
    app.stop().await;
}

#[test]
fn a_client_ca_without_the_servers_own_certificate_is_a_settings_error() {
    let pki = TestPki::new("grpc-settings").unwrap();
    let env = Env::from_pairs([("GRPC_TLS_CLIENT_CA_FILE", path_str(&pki.ca_file()))]);
    let err = GrpcServerTls::read(&env).unwrap_err();
    assert_eq!(err.variable, "GRPC_TLS_CLIENT_CA_FILE");
}
