//! TestVhost: a private vhost per test, usable with lapin, gone after drop.

use lapin::BasicProperties;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use shopfds_testkit::rabbit::TestVhost;

fn vhost_exists(name: &str) -> bool {
    let out = std::process::Command::new("rabbitmqctl")
        .args(["-q", "list_vhosts", "name"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|line| line.trim() == name)
}

#[tokio::test]
async fn queue_depth_sees_a_published_message_and_the_vhost_is_deleted_on_drop() {
    let vhost = TestVhost::create().unwrap();
    assert!(vhost.name.starts_with("shopfds-test-"));
    assert_eq!(
        vhost.amqp_url(),
        format!(
            "amqp://guest:guest@127.0.0.1:5672/{}",
            vhost.name.replace('-', "%2D")
        )
    );

    let conn = vhost.connect().await.unwrap();
    let channel = conn.create_channel().await.unwrap();
    channel
        .queue_declare(
            "probe".into(),
            QueueDeclareOptions::durable(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert_eq!(vhost.queue_depth("probe").unwrap(), 0);

    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    channel
        .basic_publish(
            "".into(),
            "probe".into(),
            BasicPublishOptions::default(),
            b"{}",
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(vhost.queue_depth("probe").unwrap(), 1);

    let missing = vhost.queue_depth("no-such-queue").unwrap_err();
    assert!(
        format!("{missing:#}").contains("no-such-queue"),
        "{missing:#}"
    );

    conn.close(200, "done".into()).await.unwrap();
    let name = vhost.name.clone();
    assert!(vhost_exists(&name));
    drop(vhost);
    assert!(!vhost_exists(&name), "vhost {name} still exists after drop");
}

#[tokio::test]
async fn vhosts_isolate_queues_of_the_same_name() {
    let (a, b) = (TestVhost::create().unwrap(), TestVhost::create().unwrap());
    let conn = a.connect().await.unwrap();
    let channel = conn.create_channel().await.unwrap();
    channel
        .queue_declare(
            "email".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert_eq!(a.queue_depth("email").unwrap(), 0);
    assert!(
        b.queue_depth("email").is_err(),
        "queue leaked into the other vhost"
    );
    conn.close(200, "done".into()).await.unwrap();
}
