//! Tests of shopfds-testkit against the real servers: the helpers must work before any other
//! crate's tests can trust them. All tests compile into this one binary.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod celery;
mod pg;
mod process;
mod rabbit;
mod rabbit_node;
mod smtp;

#[test]
fn workspace_root_is_the_repository() {
    let root = shopfds_testkit::workspace_root();
    assert!(root.join("Cargo.toml").is_file(), "{}", root.display());
    assert!(root.join("scripts").join("python-env.sh").is_file());
    assert!(
        root.join("interop")
            .join("python")
            .join("shopfds_celery.py")
            .is_file()
    );
}

#[test]
fn stable_ports_are_free_and_below_the_ephemeral_range() {
    let ephemeral_start: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    for _ in 0..20 {
        let port = shopfds_testkit::stable_port();
        assert!(port < ephemeral_start, "{port} >= {ephemeral_start}");
        std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    }
}

#[tokio::test]
async fn wait_for_port_sees_a_listener_and_times_out_without_one() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    shopfds_testkit::wait_for_port(port, std::time::Duration::from_secs(1))
        .await
        .unwrap();
    drop(listener);

    let free = shopfds_testkit::free_port();
    let err = shopfds_testkit::wait_for_port(free, std::time::Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(err.to_string().contains(&free.to_string()), "{err}");
}
