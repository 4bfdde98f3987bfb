//! `RESULT_BACKEND` to a working backend, against the real servers.

use shopfds_results::ResultSettings;
use shopfds_store::{DatabaseSettings, Store};
use shopfds_testkit::pg::TestDatabase;

use crate::helpers::*;

fn settings(value: &str) -> ResultSettings {
    ResultSettings::read(&shopfds_config::Env::from_pairs([(
        "RESULT_BACKEND",
        value,
    )]))
    .unwrap()
}

#[tokio::test]
async fn each_value_of_result_backend_builds_its_backend() {
    let (_vhost, broker) = vhost().await;
    let db = TestDatabase::create().await.unwrap();
    let store = Store::connect(&DatabaseSettings::with_url(db.url()))
        .await
        .unwrap();
    for (value, name) in [
        ("postgres", "postgres"),
        (REDIS_URL, "redis"),
        ("rpc://", "rpc"),
    ] {
        let backend = settings(value).build(&store, &broker).await.unwrap();
        assert_eq!(backend.name(), name);
    }
    // Nothing listens on port 1: the error names the variable, not a password.
    let err = settings("redis://:hunter2@127.0.0.1:1/0")
        .build(&store, &broker)
        .await
        .err()
        .expect("an unreachable Redis is an error");
    assert_eq!(err.variable, "RESULT_BACKEND");
    assert!(!err.message.contains("hunter2"), "{}", err.message);
}
