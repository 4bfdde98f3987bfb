//! `STORAGE_URL=s3://bucket/prefix` against a real S3-compatible server (moto's, from the test
//! kit): a document put is read back, a missing one is `None`, objects land under the prefix,
//! the store answers its probe; a store whose endpoint nothing serves fails its probe.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use shopfds_config::Env;
use shopfds_documents::StorageSettings;
use shopfds_testkit::s3::S3Server;

fn settings(endpoint: &str) -> StorageSettings {
    StorageSettings::read(&Env::from_pairs([
        ("STORAGE_URL", "s3://shop-documents/prod"),
        ("AWS_ACCESS_KEY_ID", "shop"),
        ("AWS_SECRET_ACCESS_KEY", "not-checked-by-the-test-server"),
        ("AWS_REGION", "ap-northeast-2"),
        ("AWS_ENDPOINT", endpoint),
        ("AWS_ALLOW_HTTP", "true"),
    ]))
    .unwrap()
}

#[tokio::test]
async fn documents_round_trip_through_an_s3_bucket_under_the_prefix() {
    let server = S3Server::start().await.unwrap();
    server.bucket("shop-documents").await.unwrap();
    let storage = settings(&server.endpoint()).open().unwrap().unwrap();
    assert_eq!(storage.describe(), "s3://shop-documents/prod");
    assert_eq!(storage.check().await, Ok(()), "{}", server.log());

    let pdf = b"%PDF-1.7 an invoice".to_vec();
    let stored = storage.put("invoices/o-1.pdf", pdf.clone()).await.unwrap();
    assert_eq!(stored.size, pdf.len());
    assert_eq!(
        storage.get("invoices/o-1.pdf").await.unwrap(),
        Some(pdf.clone())
    );
    assert_eq!(storage.get("invoices/o-2.pdf").await.unwrap(), None);

    // The object is under the prefix in the bucket, as a store without the prefix sees it.
    let mut whole = settings(&server.endpoint());
    whole.location = Some(shopfds_documents::StorageLocation::S3 {
        bucket: "shop-documents".to_owned(),
        prefix: String::new(),
    });
    let whole = whole.open().unwrap().unwrap();
    assert_eq!(whole.get("prod/invoices/o-1.pdf").await.unwrap(), Some(pdf));
}

#[tokio::test]
async fn a_store_nothing_answers_for_fails_its_probe() {
    let closed = format!("http://127.0.0.1:{}", shopfds_testkit::free_port());
    let storage = settings(&closed).open().unwrap().unwrap();
    let probe = storage.check().await;
    assert!(probe.is_err(), "{probe:?}");
    assert!(storage.get("invoices/o-1.pdf").await.is_err());
}
