//! A three-node RabbitMQ cluster of the test's own ([`RabbitCluster`]: three nodes on loopback
//! ports of their own, joined with `join_cluster`; the shared server on 5672 is never touched)
//! with every queue a quorum queue (`QUEUE_TYPE=quorum`), two in-process workers and a
//! reconnecting publisher whose `BROKER_URL` lists all three nodes.
//!
//! 1,000 tasks are published (confirmed) in three phases while the workers consume: a node that
//! is not the queue's leader is stopped mid-run (the publisher was connected to it), started
//! again, and once the `default` queue is replicated on all three nodes again, the node holding
//! its leader is stopped while tasks are in flight. Two nodes of three always stay up, so the
//! queue keeps its quorum. Every task must succeed, its effect exactly once (the once-only guard
//! of `faults::effect_registry`), none lost, and every client must be connected again without
//! help. The figures (tasks, redeliveries, failover times) are printed for the README.

use std::time::Duration;

use serde_json::{Map, json};
use shopfds_broker::{BrokerSettings, Outgoing, ReconnectingPublisher};
use shopfds_config::Env;
use shopfds_protocol::TaskMessage;
use shopfds_protocol::names::dead_letter_queue;
use shopfds_store::Store;
use shopfds_testkit::pg::TestDatabase;
use shopfds_testkit::rabbit_cluster::RabbitCluster;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::faults::{EFFECT_TASK, effect_store, scalar, start_effect_worker};
use crate::helpers::{QUEUE, poll_until};

const TASKS: usize = 1000;
/// Published before the first stop, between the two stops, and just before the leader's stop.
const PHASES: [usize; 3] = [300, 200, 500];
const RUN_WAIT: Duration = Duration::from_secs(120);
const WORKER_CONNECTION: &str = "cluster-worker";
const PUBLISHER_CONNECTION: &str = "cluster-publisher";

/// Settings read as a binary reads them: `BROKER_URL` listing the nodes, quorum queues.
fn settings(broker_url: &str, connection_name: &str) -> BrokerSettings {
    let env = Env::from_pairs([("BROKER_URL", broker_url), ("QUEUE_TYPE", "quorum")]);
    let mut broker = BrokerSettings::read(&env, connection_name).expect("BROKER_URL lists nodes");
    assert_eq!(broker.nodes().len(), 3);
    broker.reconnect_min = Duration::from_millis(100);
    broker.reconnect_max = Duration::from_millis(500);
    broker
}

async fn succeeded(store: &Store) -> i64 {
    scalar(
        store,
        "SELECT count(*) FROM task_results WHERE state = 'SUCCESS'",
    )
    .await
}

/// Milliseconds from `since` until one more task than `before` succeeded.
async fn next_success_after(store: &Store, before: i64, since: Instant) -> u128 {
    poll_until(RUN_WAIT, || succeeded(store), |n| *n > before)
        .await
        .expect("no task succeeded after the stop");
    since.elapsed().as_millis()
}

/// Publishes `msgs` in confirmed batches of 50; the time the first batch took to confirm.
async fn publish(publisher: &ReconnectingPublisher, msgs: &[TaskMessage]) -> Duration {
    let mut first = None;
    for chunk in msgs.chunks(50) {
        let started = Instant::now();
        let batch: Vec<Outgoing> = chunk.iter().map(|m| Outgoing::task(m, QUEUE)).collect();
        let failures: Vec<String> = publisher
            .publish_batch(&batch)
            .await
            .into_iter()
            .filter_map(|r| r.err().map(|e| e.to_string()))
            .collect();
        assert!(failures.is_empty(), "publish failures: {failures:?}");
        first.get_or_insert(started.elapsed());
    }
    first.unwrap_or_default()
}

#[tokio::test]
async fn a_quorum_queue_on_three_nodes_loses_nothing_when_a_node_and_then_its_leader_stop() {
    shopfds_testkit::init_tracing();
    let begun = Instant::now();
    let mut cluster = RabbitCluster::start(3).await.expect("a three-node cluster");
    let formed_in = begun.elapsed();
    let db = TestDatabase::create().await.unwrap();
    let store = effect_store(&db).await;

    // The topology, declared through node 0, puts the leader of `default` there
    // (client-local placement); read it rather than assume it.
    let declare = settings(&cluster.broker_url(&[0, 1, 2]), "cluster-declare");
    let conn = shopfds_broker::amqp::connect(&declare).await.unwrap();
    let channel = conn.create_channel().await.unwrap();
    shopfds_broker::topology::declare_for(&channel, &declare)
        .await
        .expect("the whole topology as quorum queues");
    let _ = conn.close(200, "declared".into()).await;
    let leader_name = cluster.queue_leader(QUEUE).await.unwrap();
    let leader = cluster.index_of(&leader_name).unwrap();
    let other = (leader + 1) % 3;
    let third = (leader + 2) % 3;

    // Workers try the leader's node first, the publisher the node stopped first: every client
    // has its connection cut at least once.
    let workers = settings(
        &cluster.broker_url(&[leader, other, third]),
        WORKER_CONNECTION,
    );
    let shutdown = CancellationToken::new();
    // 50 ms per task: the last phase is still running when the leader's node goes.
    start_effect_worker(
        &workers,
        &store,
        &shutdown,
        ("cluster-worker", 1),
        Duration::from_millis(50),
    );
    start_effect_worker(
        &workers,
        &store,
        &shutdown,
        ("cluster-worker", 2),
        Duration::from_millis(50),
    );
    let publisher = ReconnectingPublisher::new(settings(
        &cluster.broker_url(&[other, third, leader]),
        PUBLISHER_CONNECTION,
    ))
    .with_retry_for(RUN_WAIT);

    let messages: Vec<TaskMessage> = (0..TASKS)
        .map(|n| TaskMessage::new(EFFECT_TASK, Map::from_iter([("n".to_owned(), json!(n))])))
        .collect();
    let (first, rest) = messages.split_at(PHASES[0]);
    let (second, third_phase) = rest.split_at(PHASES[1]);

    // Phase 1, then node `other` stops mid-run (the publisher's node).
    publish(&publisher, first).await;
    poll_until(RUN_WAIT, || succeeded(&store), |n| *n >= 100)
        .await
        .expect("the run did not get going");
    let done = succeeded(&store).await;
    assert!(
        done < PHASES[0] as i64,
        "tasks still in flight at the first stop"
    );
    let node = cluster.node_mut(other).unwrap();
    let stop_started = Instant::now();
    node.stop().await.unwrap();
    let first_stop_ms = stop_started.elapsed().as_millis();

    // Phase 2 goes out through another node: the publisher failed over by itself.
    let publisher_failover = publish(&publisher, second).await;
    assert!(
        publisher.connections_opened() >= 2,
        "the publisher opened a connection to another node"
    );

    // The node comes back and catches up before the leader's node may go.
    let node = cluster.node_mut(other).unwrap();
    node.start_again().await.unwrap();
    let replicating = Instant::now();
    cluster
        .wait_replicated(QUEUE, Duration::from_secs(60))
        .await
        .unwrap();
    let replicated_ms = replicating.elapsed().as_millis();

    // Phase 3, then the node holding the leader stops while tasks are in flight.
    publish(&publisher, third_phase).await;
    let leader_name = cluster.queue_leader(QUEUE).await.unwrap();
    let leader = cluster.index_of(&leader_name).unwrap();
    let before = succeeded(&store).await;
    let in_flight = TASKS as i64 - before;
    assert!(in_flight > 0, "tasks still in flight at the leader's stop");
    let stop_started = Instant::now();
    cluster.node_mut(leader).unwrap().stop().await.unwrap();
    let stopped = succeeded(&store).await;
    let leader_failover_ms = next_success_after(&store, stopped, stop_started).await;
    let new_leader = cluster.queue_leader(QUEUE).await.unwrap();
    assert_ne!(new_leader, leader_name, "a new leader was elected");

    let all = poll_until(RUN_WAIT, || succeeded(&store), |n| *n >= TASKS as i64).await;
    assert!(
        all.is_ok(),
        "{} of {TASKS} tasks succeeded within {RUN_WAIT:?}",
        succeeded(&store).await
    );

    // Every published task, SUCCESS once, its effect once; no queue holds anything.
    let states: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, count(*) FROM task_results GROUP BY state ORDER BY state")
            .fetch_all(store.pool())
            .await
            .unwrap();
    assert_eq!(states, vec![("SUCCESS".to_owned(), TASKS as i64)]);
    let recorded: Vec<String> =
        sqlx::query_scalar("SELECT task_id FROM task_results ORDER BY task_id")
            .fetch_all(store.pool())
            .await
            .unwrap();
    let mut expected: Vec<String> = messages.iter().map(|m| m.id().to_owned()).collect();
    expected.sort();
    assert_eq!(recorded, expected, "exactly the published task ids");
    assert_eq!(
        scalar(&store, "SELECT count(*) FROM fault_effects").await,
        TASKS as i64
    );
    assert_eq!(
        scalar(&store, "SELECT count(DISTINCT task_id) FROM fault_effects").await,
        TASKS as i64,
        "no task's effect happened twice"
    );
    let up: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let survivor = &cluster.nodes()[up[0]];
    assert_eq!(survivor.queue_depth(QUEUE).await.unwrap(), 0);
    assert_eq!(
        survivor
            .queue_depth(&dead_letter_queue(QUEUE))
            .await
            .unwrap(),
        0
    );

    // Both workers are connected again, to the two nodes still up (`list_connections` lists
    // the whole cluster's, so one node is asked).
    let worker_connections = || async {
        survivor
            .connection_names()
            .await
            .unwrap_or_default()
            .iter()
            .filter(|n| *n == WORKER_CONNECTION)
            .count()
    };
    let back = poll_until(Duration::from_secs(30), worker_connections, |n| *n == 2).await;
    assert!(
        back.is_ok(),
        "both workers connected to the surviving nodes: {}",
        worker_connections().await
    );

    let attempts = scalar(&store, "SELECT count(*) FROM fault_attempts").await;
    let run_twice = scalar(
        &store,
        "SELECT count(*) FROM (SELECT task_id FROM fault_attempts GROUP BY task_id \
         HAVING count(*) > 1) t",
    )
    .await;
    let figures = format!(
        "cluster figures: tasks={TASKS} succeeded={TASKS} effects_once={TASKS} \
         duplicate_effects=0 deliveries={attempts} redelivered_tasks={run_twice} \
         in_flight_at_leader_stop={in_flight} first_stop_ms={first_stop_ms} \
         publisher_failover_ms={} replicated_again_ms={replicated_ms} \
         leader_failover_ms={leader_failover_ms} publisher_connections={} \
         cluster_formed_ms={} total_ms={}",
        publisher_failover.as_millis(),
        publisher.connections_opened(),
        formed_in.as_millis(),
        begun.elapsed().as_millis()
    );
    eprintln!("{figures}");
    tracing::info!("{figures}");
    shutdown.cancel();
}
