//! ChildGuard: terminate reports the exit, a process ignoring SIGTERM is killed, drop kills.

use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::time::Duration;

use shopfds_testkit::process::ChildGuard;

fn alive(pid: u32) -> bool {
    // Reaped children disappear from /proc; zombies would show state Z.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| !stat.contains(") Z "))
        .unwrap_or(false)
}

#[tokio::test]
async fn terminate_sends_sigterm_and_returns_the_status() {
    let mut child = ChildGuard::spawn(Command::new("sleep").arg("30")).unwrap();
    assert!(child.try_wait().unwrap().is_none());
    let status = child.terminate(Duration::from_secs(5)).await.unwrap();
    assert_eq!(status.signal(), Some(nix::libc::SIGTERM));
}

#[tokio::test]
async fn terminate_kills_a_child_that_ignores_sigterm() {
    let mut child =
        ChildGuard::spawn(Command::new("bash").args(["-c", "trap '' TERM; exec sleep 30"]))
            .unwrap();
    // Give bash a moment to install the trap before it execs.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let err = child
        .terminate(Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("did not exit"), "{err}");
    assert!(!alive(child.pid()));
}

#[tokio::test]
async fn drop_stops_the_child_and_logs_are_captured() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("child.log");
    let mut child = ChildGuard::spawn_logged(
        Command::new("bash").args(["-c", "echo listening; echo oops >&2; exec sleep 30"]),
        &log,
    )
    .unwrap();
    child
        .wait_for_log("listening", Duration::from_secs(5))
        .await
        .unwrap();
    let pid = child.pid();
    drop(child);
    assert!(!alive(pid));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("listening") && text.contains("oops"),
        "{text}"
    );
}

#[tokio::test]
async fn wait_for_log_fails_fast_when_the_child_exits() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = ChildGuard::spawn_logged(
        Command::new("bash").args(["-c", "echo boom; exit 3"]),
        &dir.path().join("child.log"),
    )
    .unwrap();
    let err = child
        .wait_for_log("ready", Duration::from_secs(10))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("exited") && text.contains("boom"), "{text}");
}
