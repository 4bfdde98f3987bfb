//! `QUEUE_TYPE=quorum` on the shared server (a single node holds quorum queues too), in a vhost
//! of the test's own: every work queue, every `failed.<queue>` and every level of the delay
//! tree is declared as a quorum queue, `BROKER_MAX_PRIORITY` adds no `x-max-priority`, and a
//! retry still crosses the delay tree (TTL and at-least-once dead-lettering on quorum queues).

use std::process::Command;
use std::time::Duration;

use serde_json::{Map, json};
use shopfds_broker::{BrokerSettings, QueueType, ReconnectingPublisher, Registry, TaskError};
use shopfds_config::Env;
use shopfds_protocol::names::{DELAY_LEVELS, WORK_QUEUES, dead_letter_queue, delay_level_name};
use shopfds_protocol::{TaskMessage, TaskState};
use shopfds_store::{DatabaseSettings, Store};
use shopfds_testkit::pg::TestDatabase;
use shopfds_testkit::rabbit::TestVhost;

use crate::helpers::{QUEUE, start_worker, wait_for_state, worker_settings};
use crate::{Log, attempts, fixed_retry, register_logged};

/// `name type arguments` of every queue of `vhost`.
fn queues(vhost: &TestVhost) -> Vec<(String, String, String)> {
    let out = Command::new("rabbitmqctl")
        .args(["-q", "list_queues", "-p", &vhost.name, "--no-table-headers"])
        .args(["name", "type", "arguments"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let mut cols = line.splitn(3, '\t');
            Some((
                cols.next()?.to_owned(),
                cols.next()?.to_owned(),
                cols.next().unwrap_or_default().to_owned(),
            ))
        })
        .collect()
}

#[tokio::test]
async fn with_queue_type_quorum_every_queue_is_quorum_and_a_retry_crosses_the_delay_tree() {
    shopfds_testkit::init_tracing();
    let vhost = tokio::task::spawn_blocking(TestVhost::create)
        .await
        .unwrap()
        .unwrap();
    let db = TestDatabase::create().await.unwrap();
    let store = Store::connect(&DatabaseSettings::with_url(db.url()))
        .await
        .unwrap();
    let url = vhost.amqp_url();
    let env = Env::from_pairs([
        ("BROKER_URL", url.as_str()),
        ("QUEUE_TYPE", "quorum"),
        ("BROKER_MAX_PRIORITY", "5"),
    ]);
    let mut broker = BrokerSettings::read(&env, "quorum-test").unwrap();
    assert_eq!(broker.queue_type, QueueType::Quorum);
    broker.reconnect_max = Duration::from_millis(500);

    let log = Log::default();
    let mut registry = Registry::new();
    register_logged(
        &mut registry,
        "flaky_quorum",
        fixed_retry(2),
        &log,
        |retries| {
            if retries == 0 {
                Err(TaskError::transient("try again in a second"))
            } else {
                Ok(json!("done"))
            }
        },
    );
    // The publisher declares the whole topology on connect, as every service does.
    let publisher = ReconnectingPublisher::new(broker.clone());
    let msg = TaskMessage::new("flaky_quorum", Map::new());
    publisher
        .publish(&shopfds_broker::Outgoing::task(&msg, QUEUE))
        .await
        .expect("declared as quorum queues and published");
    let _worker = start_worker(&broker, &store, registry, worker_settings());

    let record = wait_for_state(&store, msg.id(), TaskState::Success).await;
    assert_eq!(record.retries, 1);
    assert_eq!(attempts(&log).len(), 2, "one retry through the delay tree");

    let declared = queues(&vhost);
    let mut expected: Vec<String> = WORK_QUEUES
        .iter()
        .flat_map(|q| [(*q).to_owned(), dead_letter_queue(q)])
        .collect();
    expected.extend((0..DELAY_LEVELS).map(delay_level_name));
    for name in &expected {
        let found = declared.iter().find(|(n, _, _)| n == name);
        let Some((_, kind, arguments)) = found else {
            panic!("{name} not declared: {declared:?}");
        };
        assert_eq!(kind, "quorum", "{name}: {arguments}");
        assert!(!arguments.contains("x-max-priority"), "{name}: {arguments}");
    }
    let level = declared
        .iter()
        .find(|(n, _, _)| *n == delay_level_name(0))
        .unwrap();
    assert!(
        level.2.contains("at-least-once") && level.2.contains("reject-publish"),
        "{level:?}"
    );
}
