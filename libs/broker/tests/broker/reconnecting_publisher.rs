//! ReconnectingPublisher through a link the test cuts (`TcpProxy`, the shared server stays up): a
//! publish during an outage waits instead of failing and lands once the broker is reachable
//! again; past its retry window it gives up with an error; an unroutable message fails at once.

use std::time::Duration;

use serde_json::{Map, json};
use shopfds_broker::{BrokerSettings, Outgoing, PublishError, ReconnectingPublisher};
use shopfds_protocol::TaskMessage;
use shopfds_testkit::net::TcpProxy;
use shopfds_testkit::rabbit::TestVhost;

use crate::helpers::wait_for_depth;

/// `reports` has no consumer in these tests: what was confirmed stays there to be counted.
fn reports(n: usize) -> Vec<Outgoing> {
    (0..n)
        .map(|i| {
            let msg = TaskMessage::new(
                "generate_sales_report",
                Map::from_iter([("n".to_owned(), json!(i))]),
            );
            Outgoing::task(&msg, "reports")
        })
        .collect()
}

fn via(proxy: &TcpProxy, vhost: &TestVhost) -> BrokerSettings {
    let url = vhost
        .amqp_url()
        .replace(":5672/", &format!(":{}/", proxy.port()));
    let mut settings = BrokerSettings::with_url(url, "reconnecting-publisher-test");
    settings.reconnect_min = Duration::from_millis(50);
    settings.reconnect_max = Duration::from_millis(200);
    settings
}

#[tokio::test]
async fn a_publish_during_an_outage_waits_and_lands_once_the_broker_is_back() {
    shopfds_testkit::init_tracing();
    let vhost = tokio::task::spawn_blocking(TestVhost::create)
        .await
        .unwrap()
        .unwrap();
    let proxy = TcpProxy::open(([127, 0, 0, 1], 5672).into()).await.unwrap();
    let publisher = ReconnectingPublisher::new(via(&proxy, &vhost));

    let first = publisher.publish_batch(&reports(50)).await;
    assert!(first.iter().all(Result::is_ok), "{first:?}");
    assert_eq!(publisher.connections_opened(), 1);

    proxy.cut().await;
    let during = {
        let publisher = publisher.clone();
        tokio::spawn(async move { publisher.publish_batch(&reports(50)).await })
    };
    // The outage lasts a second: the call neither fails nor returns meanwhile.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !during.is_finished(),
        "a publish during the outage must wait"
    );
    proxy.resume().await.unwrap();

    let second = tokio::time::timeout(Duration::from_secs(30), during)
        .await
        .expect("the publish did not finish after the broker came back")
        .unwrap();
    assert!(second.iter().all(Result::is_ok), "{second:?}");
    assert_eq!(publisher.connections_opened(), 2, "it reconnected once");
    wait_for_depth(&vhost, "reports", |d| d == 100).await;
}

#[tokio::test]
async fn a_publish_gives_up_after_its_window_and_an_unroutable_one_fails_at_once() {
    shopfds_testkit::init_tracing();
    let vhost = tokio::task::spawn_blocking(TestVhost::create)
        .await
        .unwrap()
        .unwrap();
    let proxy = TcpProxy::closed(([127, 0, 0, 1], 5672).into());
    let publisher =
        ReconnectingPublisher::new(via(&proxy, &vhost)).with_retry_for(Duration::from_millis(800));
    let msg = reports(1).remove(0);
    match publisher.publish(&msg).await {
        Err(PublishError::GaveUp { window, .. }) => {
            assert_eq!(window, Duration::from_millis(800));
        }
        other => panic!("expected GaveUp, got {other:?}"),
    }
    assert_eq!(publisher.connections_opened(), 0);

    proxy.resume().await.unwrap();
    let mut nowhere = msg.clone();
    nowhere.routing_key = "no-queue-bound-here".to_owned();
    match publisher.publish(&nowhere).await {
        Err(PublishError::Unroutable { routing_key, .. }) => {
            assert_eq!(routing_key, "no-queue-bound-here");
        }
        other => panic!("expected Unroutable, got {other:?}"),
    }
    assert_eq!(
        publisher.connections_opened(),
        1,
        "not retried: unroutable stays unroutable"
    );
    publisher.publish(&msg).await.unwrap();
    wait_for_depth(&vhost, "reports", |d| d == 1).await;
}
