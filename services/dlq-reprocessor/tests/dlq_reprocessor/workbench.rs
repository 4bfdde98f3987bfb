//! The dead-letter workbench on the real RabbitMQ and PostgreSQL, with a real worker whose task
//! fails for good until the test lets it succeed:
//!
//! - dead-lettered messages are listed with their reasons; one replayed by id runs to SUCCESS;
//!   an edit that does not fit the task is refused naming the argument, a fitting one runs with
//!   the new arguments and the lineage keeps both; a message that keeps failing is parked after
//!   the cap instead of looping;
//! - a replay whose process dies between the confirmed publish and the ack (the database is cut
//!   before the lineage is written) leaves the message in the dead-letter queue and its copy in
//!   the work queue: in one of the two queues, never lost;
//! - purge refuses without the queue's name; the HTTP API needs an `admin` key.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dlq_reprocessor::workbench::{Edit, Filter, Limits, Workbench, WorkbenchError};
use serde_json::{Value, json};
use shopfds_broker::{
    BrokerSettings, Outgoing, Publisher, QueueType, Registry, Task, TaskContext, TaskError,
    TaskOptions, Worker, WorkerSettings, topology,
};
use shopfds_protocol::payloads::OrderTask;
use shopfds_protocol::{TaskArgs, TaskMessage, TaskState, tasks};
use shopfds_store::{DatabaseSettings, Store};
use shopfds_testkit::net::TcpProxy;
use shopfds_testkit::pg::TestDatabase;
use shopfds_testkit::rabbit::TestVhost;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// `register_shipment` that fails for good while `healthy` is false and records the order ids
/// it succeeded for.
struct Shipment {
    healthy: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Uuid>>>,
}

impl Task for Shipment {
    const NAME: &'static str = tasks::REGISTER_SHIPMENT;
    type Args = OrderTask;

    fn options(&self) -> TaskOptions {
        TaskOptions::default()
    }

    async fn run(&self, args: OrderTask, _: TaskContext) -> Result<Value, TaskError> {
        if !self.healthy.load(Ordering::SeqCst) {
            return Err(TaskError::permanent(
                "partner answered 400: address unknown",
            ));
        }
        self.seen.lock().unwrap().push(args.order_id);
        Ok(json!({"booked": args.order_id}))
    }
}

struct Rig {
    store: Store,
    broker: BrokerSettings,
    publisher: Publisher,
    healthy: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Uuid>>>,
    shutdown: CancellationToken,
    vhost: TestVhost,
    db: TestDatabase,
}

async fn rig() -> Rig {
    shopfds_testkit::init_tracing();
    let vhost = tokio::task::spawn_blocking(TestVhost::create)
        .await
        .unwrap()
        .unwrap();
    let db = TestDatabase::create().await.unwrap();
    let store = Store::connect(&DatabaseSettings::with_url(db.url()))
        .await
        .unwrap();
    let broker = BrokerSettings::with_url(vhost.amqp_url(), "dlq-test");
    let conn = shopfds_broker::amqp::connect(&broker).await.unwrap();
    let channel = conn.create_channel().await.unwrap();
    topology::declare(&channel, QueueType::Classic)
        .await
        .unwrap();
    let publisher = Publisher::new(&conn).await.unwrap();
    let healthy = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut registry = Registry::new();
    registry.task(Shipment {
        healthy: healthy.clone(),
        seen: seen.clone(),
    });
    let mut settings = WorkerSettings::new("dlq-test", &["default"]);
    settings.shutdown_grace = Duration::from_secs(2);
    let shutdown = CancellationToken::new();
    let worker = Worker::new(
        broker.clone(),
        settings,
        registry,
        shopfds_results::postgres(&store),
    );
    tokio::spawn(worker.run(shutdown.clone()));
    Rig {
        store,
        broker,
        publisher,
        healthy,
        seen,
        shutdown,
        vhost,
        db,
    }
}

impl Rig {
    async fn ship(&self) -> TaskMessage {
        let msg = TaskMessage::new(
            tasks::REGISTER_SHIPMENT,
            OrderTask {
                order_id: Uuid::new_v4(),
            }
            .to_kwargs(),
        );
        self.publisher
            .publish(&Outgoing::task(&msg, "default"))
            .await
            .unwrap();
        msg
    }

    async fn wait_for(&self, id: &str, state: TaskState) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let record = self.store.results().get(id).await.unwrap();
            if record.as_ref().is_some_and(|r| r.state == state) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{id} not {state:?}: {record:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn depth(&self, wb: &Workbench, queue: &str) -> (u32, u32) {
        let q = wb
            .queues()
            .await
            .unwrap()
            .into_iter()
            .find(|q| q.queue == queue)
            .unwrap();
        (q.dead_letters, q.parked)
    }

    /// Polls until `failed.<queue>` holds `n` messages.
    async fn wait_depth(&self, wb: &Workbench, queue: &str, n: u32) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while self.depth(wb, queue).await.0 != n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "failed.{queue} never held {n}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn by_id(id: &str) -> Filter {
    Filter {
        id: Some(id.to_owned()),
        ..Filter::default()
    }
}

#[tokio::test]
async fn dead_letters_are_listed_replayed_edited_and_parked_after_the_cap() {
    let rig = rig().await;
    let wb = Workbench::new(
        rig.broker.clone(),
        rig.store.clone(),
        Limits {
            rate: 100.0,
            max_replays: 1,
        },
    );
    let (m1, m2, m3) = (rig.ship().await, rig.ship().await, rig.ship().await);
    for m in [&m1, &m2, &m3] {
        rig.wait_for(m.id(), TaskState::Failure).await;
    }
    rig.wait_depth(&wb, "default", 3).await;

    // Listed with their reasons, nothing consumed; filters and paging.
    let listed = wb
        .list("failed.default", &Filter::default(), 0, 10)
        .await
        .unwrap();
    assert_eq!(listed.len(), 3);
    for letter in &listed {
        assert_eq!(letter.task.as_deref(), Some(tasks::REGISTER_SHIPMENT));
        assert!(
            letter
                .reason
                .as_deref()
                .is_some_and(|r| r.contains("address unknown")),
            "{letter:?}"
        );
        assert_eq!(letter.replays, 0);
    }
    let page = wb.list("default", &Filter::default(), 1, 1).await.unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].id, listed[1].id);
    let none = Filter {
        reason: Some("timeout".to_owned()),
        ..Filter::default()
    };
    assert!(wb.list("default", &none, 0, 10).await.unwrap().is_empty());
    assert_eq!(rig.depth(&wb, "default").await, (3, 0));

    // The partner is fixed: m1 replayed by id runs to SUCCESS.
    rig.healthy.store(true, Ordering::SeqCst);
    let report = wb
        .replay("default", &by_id(m1.id()), false, None, "test")
        .await
        .unwrap();
    assert_eq!(report.replayed, vec![m1.id().to_owned()]);
    assert_eq!(report.left, 2);
    rig.wait_for(m1.id(), TaskState::Success).await;

    // An edit that does not fit the task is refused naming the argument; m2 stays.
    let bad = Edit {
        id: m2.id().to_owned(),
        kwargs: json!({"order_id": "not-a-uuid"})
            .as_object()
            .unwrap()
            .clone(),
    };
    let err = wb
        .replay("default", &by_id(m2.id()), false, Some(&bad), "test")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, WorkbenchError::Invalid(m) if m.contains("order_id")),
        "{err}"
    );
    assert_eq!(rig.depth(&wb, "default").await.0, 2);
    // A fitting edit runs with the new arguments; the lineage keeps both.
    let new_order = Uuid::new_v4();
    let good = Edit {
        id: m2.id().to_owned(),
        kwargs: json!({"order_id": new_order}).as_object().unwrap().clone(),
    };
    wb.replay("default", &by_id(m2.id()), false, Some(&good), "test")
        .await
        .unwrap();
    rig.wait_for(m2.id(), TaskState::Success).await;
    assert!(rig.seen.lock().unwrap().contains(&new_order));
    let lineage = rig.store.dlq_replays().of_task(m2.id()).await.unwrap();
    assert_eq!(lineage.len(), 1);
    assert_eq!(
        lineage[0].edited_args.as_ref().unwrap()[1]["order_id"],
        json!(new_order)
    );
    assert_eq!(
        lineage[0].original_args.as_ref().unwrap()[1]["order_id"],
        m2.kwargs["order_id"]
    );
    assert_eq!(lineage[0].replayed_by, "test");

    // m3 keeps failing: replayed once (the cap), dead-lettered again, then parked.
    rig.healthy.store(false, Ordering::SeqCst);
    let first = wb
        .replay("default", &Filter::default(), true, None, "test")
        .await
        .unwrap();
    assert_eq!(first.replayed, vec![m3.id().to_owned()]);
    rig.wait_depth(&wb, "default", 1).await;
    let again = wb.list("default", &Filter::default(), 0, 10).await.unwrap();
    assert_eq!(again[0].replays, 1);
    let second = wb
        .replay("default", &Filter::default(), true, None, "test")
        .await
        .unwrap();
    assert_eq!(second.parked, vec![m3.id().to_owned()]);
    assert!(second.replayed.is_empty());
    assert_eq!(rig.depth(&wb, "default").await, (0, 1));

    // Replaying needs a selection; purging needs the queue's name.
    assert!(matches!(
        wb.replay("default", &Filter::default(), false, None, "test")
            .await,
        Err(WorkbenchError::Invalid(_))
    ));
    rig.ship().await;
    rig.wait_depth(&wb, "default", 1).await;
    assert!(matches!(
        wb.purge("default", "yes").await,
        Err(WorkbenchError::Invalid(_))
    ));
    assert_eq!(wb.purge("default", "failed.default").await.unwrap(), 1);
    assert_eq!(rig.depth(&wb, "default").await.0, 0);
    rig.shutdown.cancel();
}

#[tokio::test]
async fn a_replay_that_dies_between_publish_and_ack_loses_nothing() {
    let rig = rig().await;
    // A dead letter of queue `email` (no worker consumes it here), as a worker dead-letters one.
    let msg = TaskMessage::new(
        tasks::SEND_ORDER_CONFIRMATION_EMAIL,
        OrderTask {
            order_id: Uuid::new_v4(),
        }
        .to_kwargs(),
    );
    let mut dead = Outgoing::task(&msg, "email");
    dead.exchange = "dlx".to_owned();
    dead.routing_key = "failed.email".to_owned();
    dead.headers
        .insert("x-shopfds-reason".to_owned(), json!("SMTP 451: try later"));
    rig.publisher.publish(&dead).await.unwrap();

    // The workbench's database goes away: the copy is published and confirmed, the lineage
    // cannot be written, and the dead letter is never acked.
    let proxy = TcpProxy::open(([127, 0, 0, 1], 5432).into()).await.unwrap();
    let cut_store =
        Store::connect_lazy(&DatabaseSettings::with_url(rig.db.url_via(proxy.port()))).unwrap();
    proxy.cut().await;
    let wb = Workbench::new(rig.broker.clone(), cut_store, Limits::default());
    let outcome = wb
        .replay("email", &Filter::default(), true, None, "test")
        .await;
    assert!(
        matches!(outcome, Err(WorkbenchError::Database(_))),
        "{outcome:?}"
    );

    let healthy = Workbench::new(rig.broker.clone(), rig.store.clone(), Limits::default());
    assert_eq!(
        rig.depth(&healthy, "email").await.0,
        1,
        "the dead letter is back"
    );
    assert_eq!(
        rig.vhost.queue_depth("email").unwrap(),
        1,
        "its copy is in the work queue"
    );
    rig.shutdown.cancel();
}

#[tokio::test]
async fn the_http_api_needs_an_admin_key_and_answers_for_the_workbench() {
    use shopfds_auth::Scope;
    use shopfds_testkit::keys::{TestKey, auth_settings};

    let rig = rig().await;
    let admin = TestKey::new(&[Scope::Admin]);
    let reader = TestKey::new(&[Scope::OrdersRead]);
    let mut settings = dlq_reprocessor::Settings::from_env().unwrap();
    settings.broker = rig.broker.clone();
    settings.database = DatabaseSettings::with_url(rig.db.url());
    settings.shell.ops_addr = "127.0.0.1:0".parse().unwrap();
    settings.auth = auth_settings(&[&admin, &reader]);
    let app = dlq_reprocessor::Application::build(settings).await.unwrap();
    let base = format!("http://127.0.0.1:{}", app.ops_port());
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    let client = reqwest::Client::new();

    rig.ship().await;
    let wb = Workbench::new(rig.broker.clone(), rig.store.clone(), Limits::default());
    rig.wait_depth(&wb, "default", 1).await;

    let status = |r: reqwest::Response| r.status().as_u16();
    assert_eq!(
        status(client.get(format!("{base}/v1/dlq")).send().await.unwrap()),
        401
    );
    let as_reader = client
        .get(format!("{base}/v1/dlq"))
        .bearer_auth(&reader.key)
        .send()
        .await
        .unwrap();
    assert_eq!(status(as_reader), 403);
    let queues: Value = client
        .get(format!("{base}/v1/dlq"))
        .bearer_auth(&admin.key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let default = queues["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["queue"] == "default")
        .unwrap()
        .clone();
    assert_eq!(default["dead_letters"], 1, "{queues}");
    let listed: Value = client
        .get(format!(
            "{base}/v1/dlq/failed.default/messages?task=register_shipment"
        ))
        .bearer_auth(&admin.key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["messages"].as_array().unwrap().len(), 1, "{listed}");
    // No selection: 422; an unknown queue: 422 naming it; a purge without confirmation: 422.
    let unselected = client
        .post(format!("{base}/v1/dlq/default/replay"))
        .bearer_auth(&admin.key)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(status(unselected), 422);
    let unknown = client
        .get(format!("{base}/v1/dlq/nope/messages"))
        .bearer_auth(&admin.key)
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status().as_u16(), 422);
    assert!(unknown.text().await.unwrap().contains("nope"));
    let unconfirmed = client
        .delete(format!("{base}/v1/dlq/default"))
        .bearer_auth(&admin.key)
        .send()
        .await
        .unwrap();
    assert_eq!(status(unconfirmed), 422);
    // Replay all over the API: the worker is healthy now.
    rig.healthy.store(true, Ordering::SeqCst);
    let report: Value = client
        .post(format!("{base}/v1/dlq/default/replay"))
        .bearer_auth(&admin.key)
        .json(&json!({"all": true}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(report["replayed"].as_array().unwrap().len(), 1, "{report}");
    let id = report["replayed"][0].as_str().unwrap().to_owned();
    rig.wait_for(&id, TaskState::Success).await;
    let lineage = rig.store.dlq_replays().of_task(&id).await.unwrap();
    assert!(
        lineage[0].replayed_by.starts_with("api key "),
        "{lineage:?}"
    );
    shutdown.cancel();
    running.await.unwrap().unwrap();
    rig.shutdown.cancel();
}
