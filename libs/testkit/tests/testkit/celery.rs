//! The stock Python side: a task sent by the stock client is executed by the stock worker. This
//! proves the Python half of every interop test works before Rust is tested against it.

use std::time::Duration;

use serde_json::json;
use shopfds_testkit::celery::{self, CeleryWorker, SendTask};
use shopfds_testkit::rabbit::TestVhost;

#[tokio::test]
async fn stock_client_task_runs_on_stock_worker() {
    let vhost = TestVhost::create().unwrap();
    let url = vhost.amqp_url();
    let worker = CeleryWorker::start(&url, &["email", "default"])
        .await
        .unwrap();

    // Routed by the app's task_routes (email), as a Python caller would do it.
    let id = celery::send_task(
        &url,
        "send_order_confirmation_email",
        json!({ "order_id": "0f3c-김민수" }),
        None,
    )
    .await
    .unwrap();

    // Every option: explicit queue, task id, countdown, extra header.
    let mut task = SendTask::new("register_shipment", json!({ "order_id": "o-2" })).unwrap();
    task.queue = Some("default".to_owned());
    task.task_id = Some("3b1f2c4e-0000-4000-8000-000000000002".to_owned());
    task.countdown = Some(1.0);
    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    task.headers
        .insert("traceparent".to_owned(), json!(traceparent));
    let id2 = celery::send_task_with(&url, &task).await.unwrap();
    assert_eq!(id2, "3b1f2c4e-0000-4000-8000-000000000002");

    let executions = worker
        .wait_for_executions(2, Duration::from_secs(30))
        .await
        .unwrap();
    let first = executions.iter().find(|e| e["id"] == json!(id)).unwrap();
    assert_eq!(first["task"], "send_order_confirmation_email");
    assert_eq!(first["kwargs"], json!({ "order_id": "0f3c-김민수" }));
    assert_eq!(first["args"], json!([]));
    assert_eq!(first["retries"], 0);
    assert_eq!(first["root_id"], json!(id));
    assert_eq!(first["delivery_info"]["routing_key"], "email");

    let second = executions.iter().find(|e| e["id"] == json!(id2)).unwrap();
    assert_eq!(second["task"], "register_shipment");
    assert_eq!(second["delivery_info"]["routing_key"], "default");
    assert_eq!(second["traceparent"], traceparent);
    assert!(
        second["eta"].is_string(),
        "countdown gives an eta: {second}"
    );

    // The worker declared the seed's whole topology, dead-letter queues included.
    for queue in [
        "email",
        "default",
        "fds",
        "reports",
        "maintenance",
        "failed.email",
        "failed.fds",
    ] {
        assert_eq!(vhost.queue_depth(queue).unwrap(), 0, "{queue}");
    }

    let status = worker.stop(Duration::from_secs(10)).await.unwrap();
    assert!(status.success() || status.code().is_none(), "{status:?}");
}
