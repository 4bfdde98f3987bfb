//! `rpc://`: what a stock client configured with `result_backend='rpc://'` observes of Rust tasks.

use serde_json::json;
use shopfds_testkit::celery_results;

use crate::helpers::*;
use crate::redis_results::progress_is_seen;

const RPC: &str = "rpc://";

#[tokio::test]
async fn a_stock_rpc_client_gets_the_result_of_a_rust_task() {
    let worker = rpc_worker().await;
    let got = celery_results::send_and_get(
        &worker.amqp_url(),
        RPC,
        ADD,
        &json!({"x": 20, "y": 22}),
        Some(QUEUE),
        WAIT,
    )
    .await
    .unwrap();
    assert_eq!(got["state"], "SUCCESS", "{got}");
    assert_eq!(got["result"], 42, "{got}");
    // rpc keeps nothing a third party can read.
    let id = got["id"].as_str().unwrap();
    assert_eq!(worker.backend.get(id).await.unwrap(), None);
}

#[tokio::test]
async fn a_permanent_failure_raises_in_the_stock_rpc_client() {
    let worker = rpc_worker().await;
    let got =
        celery_results::send_and_get(&worker.amqp_url(), RPC, FAIL, &json!({}), Some(QUEUE), WAIT)
            .await
            .unwrap();
    assert_eq!(got["state"], "FAILURE", "{got}");
    assert_eq!(got["raised"], "PermanentError", "{got}");
    assert_eq!(got["message"], DECLINED, "{got}");
}

#[tokio::test]
async fn progress_meta_reaches_the_stock_rpc_client() {
    let worker = rpc_worker().await;
    progress_is_seen(&worker, RPC).await;
}
