//! `DATABASE_CA_FILE` against the local PostgreSQL, whose certificate is self-signed (Debian's
//! snakeoil): trusting that certificate itself as the CA lets `sslmode=verify-ca` connect; a CA
//! the test made, which signed nothing the server has, is refused with the reason.

// Fixtures fail the test loudly; clippy's in-test allowance only covers `#[test]` bodies.
#![allow(clippy::unwrap_used)]

use shopfds_config::Env;
use shopfds_store::{DatabaseSettings, DatabaseTls, Store};
use shopfds_testkit::tls::{TestPki, path_str};

use crate::helpers::server_url;

/// The server's certificate file (`SHOW ssl_cert_file`, relative to the data directory unless
/// absolute).
async fn server_certificate() -> String {
    let store = Store::connect_lazy(&DatabaseSettings::with_url(format!(
        "{}/postgres",
        server_url()
    )))
    .unwrap();
    let file: String = sqlx::query_scalar("SELECT current_setting('ssl_cert_file')")
        .fetch_one(store.pool())
        .await
        .unwrap();
    if file.starts_with('/') {
        return file;
    }
    let data: String = sqlx::query_scalar("SELECT current_setting('data_directory')")
        .fetch_one(store.pool())
        .await
        .unwrap();
    format!("{data}/{file}")
}

fn verify_ca(ca_file: &str) -> DatabaseSettings {
    let env = Env::from_pairs([("DATABASE_CA_FILE", ca_file)]);
    DatabaseSettings {
        tls: DatabaseTls::read(&env).unwrap(),
        ..DatabaseSettings::with_url(format!("{}/postgres?sslmode=verify-ca", server_url()))
    }
}

#[tokio::test]
async fn database_ca_file_with_sslmode_verify_ca_connects_to_the_server_it_signed() {
    let settings = verify_ca(&server_certificate().await);
    let store = Store::connect_lazy(&settings).unwrap();
    let encrypted: Option<bool> =
        sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(encrypted, Some(true), "the session is encrypted");
}

#[tokio::test]
async fn database_ca_file_of_an_unrelated_ca_is_refused_with_the_reason() {
    let pki = TestPki::new("unrelated").unwrap();
    let settings = verify_ca(&path_str(&pki.ca_file()));
    let err = Store::connect_lazy(&settings)
        .unwrap()
        .ping()
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("certificate") && text.to_lowercase().contains("issuer"),
        "names the untrusted certificate: {text}"
    );
}

#[tokio::test]
async fn database_ca_file_with_an_sslmode_that_checks_nothing_is_a_settings_error() {
    let pki = TestPki::new("prefer").unwrap();
    let env = Env::from_pairs([("DATABASE_CA_FILE", path_str(&pki.ca_file()))]);
    let settings = DatabaseSettings {
        tls: DatabaseTls::read(&env).unwrap(),
        ..DatabaseSettings::with_url(format!("{}/postgres?sslmode=prefer", server_url()))
    };
    let err = Store::connect_lazy(&settings).unwrap_err();
    assert!(
        err.to_string().contains("DATABASE_CA_FILE") && err.to_string().contains("verify-full"),
        "{err}"
    );
}

#[test]
fn database_ca_file_that_holds_no_certificate_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ca.pem");
    std::fs::write(&path, "not a certificate\n").unwrap();
    let env = Env::from_pairs([("DATABASE_CA_FILE", path_str(&path))]);
    let err = DatabaseTls::read(&env).unwrap_err();
    assert_eq!(err.variable, "DATABASE_CA_FILE");
}
