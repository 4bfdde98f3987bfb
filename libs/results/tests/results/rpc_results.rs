//! `rpc://`: what a stock client configured with `result_backend='rpc://'` observes of Rust tasks.

use serde_json::{Map, json};
use shopfds_broker::{Outgoing, Publisher};
use shopfds_protocol::TaskMessage;
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

#[tokio::test]
async fn a_reply_whose_queue_is_gone_is_dropped_and_the_task_still_acked() {
    let mut worker = rpc_worker().await;
    let mut msg = TaskMessage::new(BODY, Map::new());
    msg.args = vec![json!([1, 2])];
    msg.properties.reply_to = Some("a-client-that-left".to_owned());
    let conn = shopfds_broker::amqp::connect(&worker.broker).await.unwrap();
    let publisher = Publisher::new(&conn).await.unwrap();
    publisher
        .publish(&Outgoing::task(&msg, QUEUE))
        .await
        .unwrap();
    assert_eq!(next_body(&mut worker.tasks).await, json!([1, 2]));
    // Acked: once the worker is gone, nothing comes back to the queue, and nothing was
    // dead-lettered.
    worker.stop().await;
    let vhost = &worker.vhost;
    let depth = |q: &str| vhost.queue_depth(q).unwrap();
    assert_eq!(depth(QUEUE), 0);
    assert_eq!(depth("failed.default"), 0);
}
