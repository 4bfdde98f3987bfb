//! What a message can do to a worker: a body compressed by the stock Celery client, a method
//! the worker cannot read, an eta past the horizon, a body over the size cap, and big
//! messages held at once (the prefetch byte budget).

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use shopfds_broker::{Registry, TaskOptions};
use shopfds_protocol::TaskState;
use shopfds_testkit::celery::{SendTask, send_task_with};
use tokio::sync::Semaphore;

use super::helpers::{QUEUE, WAIT, poll_until, spawn_worker, spawn_worker_with, worker_settings};
use super::{Log, attempts, register_logged, v2_headers};

const BODY: &[u8] =
    br#"[[], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]"#;

#[tokio::test]
async fn bodies_compressed_by_the_stock_celery_client_are_decompressed_and_run() {
    let log = Log::default();
    let mut registry = Registry::new();
    register_logged(
        &mut registry,
        "packed",
        TaskOptions::default(),
        &log,
        |_| Ok(json!("unpacked")),
    );
    let tw = spawn_worker(registry).await;
    // kombu's names: zlib → application/x-gzip, bzip2 → application/x-bz2, lzma → application/x-lzma.
    for compression in ["zlib", "gzip", "bzip2", "lzma"] {
        let task = SendTask {
            queue: Some(QUEUE.to_owned()),
            compression: Some(compression.to_owned()),
            ..SendTask::new(
                "packed",
                json!({"order_id": "o-1", "pad": "x".repeat(4096)}),
            )
            .unwrap()
        };
        let id = send_task_with(&tw.vhost.amqp_url(), &task).await.unwrap();
        let record = tw.wait_for_state(&id, TaskState::Success).await;
        assert_eq!(record.result, Some(json!("unpacked")), "{compression}");
    }
    assert_eq!(attempts(&log).len(), 4);
    assert_eq!(tw.vhost.queue_depth("failed.default").unwrap(), 0);
}

#[tokio::test]
async fn an_unsupported_compression_is_dead_lettered_with_its_name() {
    let tw = spawn_worker(Registry::new()).await;
    let mut headers = v2_headers("packed", "brotli");
    headers.insert("compression".to_owned(), json!("application/x-brotli"));
    let id = headers["id"].as_str().unwrap().to_owned();
    tw.publish_raw(
        "application/json",
        &headers,
        b"\x8b\x03\x80not really brotli",
    )
    .await;
    let dead = tw.dead_letters(1).await;
    assert!(
        dead[0]
            .reason()
            .contains("compression \"application/x-brotli\" is not supported"),
        "{}",
        dead[0].reason()
    );
    tw.wait_for_state(&id, TaskState::Rejected).await;
}

#[tokio::test]
async fn an_eta_past_the_horizon_is_refused_with_a_reason_and_rejected() {
    let log = Log::default();
    let mut registry = Registry::new();
    register_logged(
        &mut registry,
        "far_off",
        TaskOptions::default(),
        &log,
        |_| Ok(json!("ran")),
    );
    let mut settings = worker_settings();
    settings.eta_horizon = Duration::from_secs(3600);
    let tw = spawn_worker_with(registry, settings).await;
    let task = SendTask {
        queue: Some(QUEUE.to_owned()),
        countdown: Some(2.0 * 3600.0),
        ..SendTask::new("far_off", json!({})).unwrap()
    };
    let id = send_task_with(&tw.vhost.amqp_url(), &task).await.unwrap();
    let dead = tw.dead_letters(1).await;
    assert_eq!(dead[0].header_str("id"), id);
    assert!(
        dead[0].reason().contains("WORKER_ETA_HORIZON_SECS"),
        "{}",
        dead[0].reason()
    );
    tw.wait_for_state(&id, TaskState::Rejected).await;
    assert!(attempts(&log).is_empty());
}

#[tokio::test]
async fn a_message_over_the_size_cap_is_dead_lettered_unread_and_the_next_one_runs() {
    let log = Log::default();
    let mut registry = Registry::new();
    register_logged(&mut registry, "sized", TaskOptions::default(), &log, |_| {
        Ok(json!("ok"))
    });
    let mut settings = worker_settings();
    settings.max_message_bytes = 64 * 1024;
    let tw = spawn_worker_with(registry, settings).await;

    let big = v2_headers("sized", "big");
    let big_id = big["id"].as_str().unwrap().to_owned();
    let mut body = br#"[[], {"pad": ""#.to_vec();
    body.extend(std::iter::repeat_n(b'x', 100 * 1024));
    body.extend(br#""}, {}]"#);
    tw.publish_raw("application/json", &big, &body).await;
    let small = v2_headers("sized", "small");
    let small_id = small["id"].as_str().unwrap().to_owned();
    tw.publish_raw("application/json", &small, BODY).await;

    tw.wait_for_state(&small_id, TaskState::Success).await;
    let dead = tw.dead_letters(1).await;
    assert_eq!(dead[0].header_str("id"), big_id);
    let reason = dead[0].reason();
    for needle in [
        format!("{} bytes", body.len()),
        "65536".to_owned(),
        "WORKER_MAX_MESSAGE_BYTES".to_owned(),
    ] {
        assert!(reason.contains(&needle), "{needle:?} not in {reason}");
    }
    assert_eq!(dead[0].body, body, "the body is kept for a replay");
    tw.wait_for_state(&big_id, TaskState::Rejected).await;
    let ran: Vec<String> = attempts(&log).into_iter().map(|a| a.id).collect();
    assert_eq!(ran, vec![small_id]);
}

// Multi-threaded: the broker's counts are read with `rabbitmqctl`, which blocks its thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_messages_held_at_once_stay_within_the_prefetch_byte_budget() {
    const MESSAGES: usize = 16;
    const SIZE: usize = 256 * 1024;
    // Every task waits until the test lets it finish, so the messages stay unacknowledged.
    let gate = Arc::new(Semaphore::new(0));
    let mut registry = Registry::new();
    let held = gate.clone();
    registry.register("held", TaskOptions::default(), move |_| {
        let held = held.clone();
        async move {
            let _pass = held.acquire().await;
            Ok(json!("released"))
        }
    });
    let mut settings = worker_settings();
    settings.concurrency = MESSAGES;
    settings.prefetch_bytes = 4 * SIZE;
    let tw = spawn_worker_with(registry, settings).await;

    // One at a time, each delivered (or the consumer gone) before the next: the prefetch (16)
    // would let all of them in; the budget (4 bodies) cancels the consumer once 4 are held, so
    // the broker keeps the rest.
    poll_until(
        WAIT,
        || async { tw.vhost.consumers(QUEUE).unwrap() },
        |n| *n == 1,
    )
    .await
    .unwrap();
    let mut ids = Vec::new();
    for i in 0..MESSAGES {
        let headers = v2_headers("held", &format!("big-{i}"));
        ids.push(headers["id"].as_str().unwrap().to_owned());
        let mut body = br#"[[], {"pad": ""#.to_vec();
        body.extend(std::iter::repeat_n(b'x', SIZE));
        body.extend(br#""}, {}]"#);
        tw.publish_raw("application/json", &headers, &body).await;
        let delivered = u32::try_from(i + 1).unwrap();
        poll_until(
            WAIT,
            || async {
                (
                    tw.vhost.unacked(QUEUE).unwrap(),
                    tw.vhost.consumers(QUEUE).unwrap(),
                )
            },
            |(unacked, consumers)| *unacked == delivered || *consumers == 0,
        )
        .await
        .unwrap();
    }
    assert_eq!(
        tw.vhost.consumers(QUEUE).unwrap(),
        0,
        "the consumer is paused"
    );
    assert_eq!(tw.vhost.unacked(QUEUE).unwrap(), 4, "4 bodies held of 16");
    assert_eq!(
        tw.vhost.queue_depth(QUEUE).unwrap(),
        12,
        "the rest wait in the broker"
    );

    // Released, they all run: the consumer resumes as messages settle.
    gate.add_permits(MESSAGES);
    for id in &ids {
        tw.wait_for_state(id, TaskState::Success).await;
    }
    assert_eq!(tw.vhost.queue_depth(QUEUE).unwrap(), 0);
}
