//! RabbitNode: a broker of the test's own that survives a restart with its data, closes its
//! clients' connections on demand, and leaves no process behind.

use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use shopfds_testkit::rabbit_node::RabbitNode;

/// `beam.smp` processes in process group `pgid`.
fn node_processes(pgid: u32) -> usize {
    let out = std::process::Command::new("ps")
        .args(["-eo", "pgid=,comm="])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|line| {
            let mut cols = line.split_whitespace();
            cols.next() == Some(pgid.to_string().as_str())
                && cols.next().is_some_and(|comm| comm.starts_with("beam"))
        })
        .count()
}

#[tokio::test]
async fn a_node_of_its_own_keeps_persistent_messages_across_a_restart_and_stops_on_drop() {
    let mut node = RabbitNode::start().await.unwrap();
    assert_ne!(node.amqp_port(), 5672);
    let first_group = node.process_group().unwrap();
    assert_eq!(node_processes(first_group), 1, "one beam for the node");

    let conn = Connection::connect(&node.url(), ConnectionProperties::default())
        .await
        .unwrap();
    let channel = conn.create_channel().await.unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare("kept".into(), durable, FieldTable::default())
        .await
        .unwrap();
    channel
        .basic_publish(
            "".into(),
            "kept".into(),
            BasicPublishOptions::default(),
            b"survives",
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(node.queue_depth("kept").await.unwrap(), 1);

    // close_all_connections: the client sees its connection closed, the node stays up.
    node.close_all_connections().await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while conn.status().connected() {
        assert!(
            std::time::Instant::now() < deadline,
            "connection still open"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    node.stop().await.unwrap();
    assert_eq!(node_processes(first_group), 0, "stopped means no beam left");
    assert!(
        Connection::connect(&node.url(), ConnectionProperties::default())
            .await
            .is_err(),
        "nothing listens while the node is stopped"
    );
    node.start_again().await.unwrap();
    let second_group = node.process_group().unwrap();

    let conn = Connection::connect(&node.url(), ConnectionProperties::default())
        .await
        .unwrap();
    let channel = conn.create_channel().await.unwrap();
    let got = channel
        .basic_get("kept".into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("the persistent message survived the restart");
    assert_eq!(got.delivery.data, b"survives");

    drop(conn);
    drop(node);
    assert_eq!(
        node_processes(second_group),
        0,
        "dropped means no beam left"
    );
}
