//! Stock Flower and `celery inspect` against the Rust workers, as a Celery shop runs them: the
//! seed's probes (`celery inspect ping` for liveness, `celery inspect active` for readiness)
//! and `stats`/`registered` answer for each worker; Flower, with basic auth, lists the workers
//! with their stats and queues and an order's tasks with their final states, arguments, results
//! and runtimes, and its buttons (pool grow/shrink, rate limit, revoke, shutdown) act on the Rust
//! workers. Headless Chromium screenshots Flower's workers and tasks pages
//! (`docs/samples/flower-*.png` when `UPDATE_SAMPLES=1`, else a temporary directory).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use shopfds_testkit::celery_monitor::inspect;
use shopfds_testkit::process::ChildGuard;
use shopfds_testkit::python;

use crate::fleet::Fleet;

const WAIT: Duration = Duration::from_secs(60);
const USER: &str = "ops";
const PASSWORD: &str = "flower-test-password";

/// A stock `celery flower` on a port of its own, with basic auth.
struct Flower {
    url: String,
    http: reqwest::Client,
    _child: ChildGuard,
    _dir: tempfile::TempDir,
}

impl Flower {
    async fn start(broker_url: &str) -> Flower {
        let celery = tokio::task::spawn_blocking(|| python::bin("celery"))
            .await
            .unwrap()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let port = shopfds_testkit::free_port();
        let mut cmd = Command::new(celery);
        cmd.args(["-A", "shopfds_celery", "flower", "--address=127.0.0.1"])
            .arg(format!("--port={port}"))
            .arg(format!("--basic-auth={USER}:{PASSWORD}"))
            .arg(format!("--db={}", dir.path().join("flower.db").display()))
            .current_dir(dir.path())
            .env("PYTHONPATH", python::interop_dir())
            .env("BROKER_URL", broker_url);
        let mut child = ChildGuard::spawn_logged(&mut cmd, &dir.path().join("flower.log")).unwrap();
        child.wait_for_log("Visit me at", WAIT).await.unwrap();
        Flower {
            url: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
            _child: child,
            _dir: dir,
        }
    }

    async fn get(&self, path: &str) -> Value {
        let response = self
            .http
            .get(format!("{}{path}", self.url))
            .basic_auth(USER, Some(PASSWORD))
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "GET {path}: {}",
            response.status()
        );
        response.json().await.unwrap()
    }

    async fn post(&self, path: &str) -> Value {
        let response = self
            .http
            .post(format!("{}{path}", self.url))
            .basic_auth(USER, Some(PASSWORD))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body = response.text().await.unwrap();
        assert!(status.is_success(), "POST {path}: {status} {body}");
        serde_json::from_str(&body).unwrap_or(Value::String(body))
    }

    /// Polls `path` until `done` accepts it.
    async fn get_until(&self, path: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let value = self.get(path).await;
            if done(&value) {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "GET {path} never satisfied: {value:#}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// Runs the stock `celery inspect <command> -d <node> --json` and returns its reply.
async fn celery_inspect(broker_url: &str, command: &str, node: &str) -> Value {
    let celery = tokio::task::spawn_blocking(|| python::bin("celery"))
        .await
        .unwrap()
        .unwrap();
    let out = tokio::process::Command::new(celery)
        .args([
            "-A",
            "shopfds_celery",
            "inspect",
            command,
            "-d",
            node,
            "--json",
            "--timeout",
            "5",
        ])
        .env("PYTHONPATH", python::interop_dir())
        .env("BROKER_URL", broker_url)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "celery inspect {command} -d {node}: {}\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let replies: Value =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    replies[node].clone()
}

/// Headless Chromium's screenshot of `url` at `to`.
fn screenshot(url: &str, to: &Path) {
    let status = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1920,560",
            "--virtual-time-budget=10000",
        ])
        .arg(format!("--screenshot={}", to.display()))
        .arg(url)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    let png = std::fs::read(to).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "{} is not a PNG", to.display());
    assert!(
        png.len() > 20_000,
        "{} is {} bytes: an empty page?",
        to.display(),
        png.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_flower_and_celery_inspect_see_and_steer_the_rust_workers() {
    let mut fleet = Fleet::start(None, &[("WORKER_SEND_TASK_EVENTS", "true")]).await;
    let broker = fleet.vhost.amqp_url();
    let pings = inspect(
        &broker,
        "ping",
        &[],
        &serde_json::json!({}),
        Duration::from_secs(3),
    )
    .await
    .unwrap();
    let mut nodes: Vec<String> = pings.as_object().unwrap().keys().cloned().collect();
    nodes.sort();
    let prefixes: Vec<&str> = nodes
        .iter()
        .map(|n| n.split('@').next().unwrap_or(""))
        .collect();
    assert_eq!(
        prefixes,
        ["email-worker", "fds-worker", "report-worker"],
        "{pings}"
    );

    // The seed's probes, and what Flower asks, unchanged against each Rust worker.
    for node in &nodes {
        assert_eq!(
            celery_inspect(&broker, "ping", node).await,
            serde_json::json!({"ok": "pong"})
        );
        assert!(celery_inspect(&broker, "active", node).await.is_array());
        let stats = celery_inspect(&broker, "stats", node).await;
        assert!(
            stats["pool"]["max-concurrency"]
                .as_u64()
                .is_some_and(|n| n > 0),
            "{stats}"
        );
        let registered = celery_inspect(&broker, "registered", node).await;
        assert!(
            registered.as_array().is_some_and(|r| !r.is_empty()),
            "{registered}"
        );
    }

    let flower = Flower::start(&broker).await;
    let anonymous = flower
        .http
        .get(format!("{}/api/workers", flower.url))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401, "Flower asks for its basic auth");
    let workers = flower
        .get_until("/api/workers?refresh=1", |w| {
            nodes
                .iter()
                .all(|n| w[n.as_str()]["stats"]["pool"].is_object())
        })
        .await;
    let email = nodes[0].as_str();
    let report = nodes[2].as_str();
    let queues: Vec<&str> = workers[report]["active_queues"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|q| q["name"].as_str())
        .collect();
    assert_eq!(queues, ["reports", "maintenance"]);
    assert!(
        workers[email]["registered"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("send_order_confirmation_email")),
        "{:#}",
        workers[email]
    );

    // An order's tasks, run by the Rust workers, as Flower lists them.
    let order: Value = fleet.post_order().await.json().await.unwrap();
    let ids: Vec<String> = order["tasks"]
        .as_object()
        .unwrap()
        .values()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    assert_eq!(ids.len(), 4, "{order}");
    let tasks = flower
        .get_until("/api/tasks", |t| {
            ids.iter().all(|id| t[id.as_str()]["state"] == "SUCCESS")
        })
        .await;
    for id in &ids {
        let task = &tasks[id.as_str()];
        let worker = task["worker"].as_str().unwrap_or_default();
        assert!(nodes.iter().any(|n| n == worker), "{task:#}");
        assert!(
            task["runtime"].as_f64().is_some_and(|r| r >= 0.0),
            "{task:#}"
        );
        assert!(
            task["kwargs"]
                .as_str()
                .is_some_and(|k| k.contains("order_id")),
            "{task:#}"
        );
        assert!(task["result"].is_string(), "{task:#}");
        assert!(
            task["received"].is_number() && task["started"].is_number(),
            "{task:#}"
        );
    }

    let samples = match std::env::var_os("UPDATE_SAMPLES") {
        Some(_) => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/samples"),
        None => std::env::temp_dir(),
    };
    let authed = flower
        .url
        .replace("http://", &format!("http://{USER}:{PASSWORD}@"));
    screenshot(
        &format!("{authed}/workers"),
        &samples.join("flower-workers.png"),
    );
    screenshot(
        &format!("{authed}/tasks"),
        &samples.join("flower-tasks.png"),
    );

    // Flower's buttons act on the Rust workers.
    let before = workers[email]["stats"]["pool"]["max-concurrency"]
        .as_u64()
        .unwrap();
    flower
        .post(&format!("/api/worker/pool/grow/{email}?n=2"))
        .await;
    flower
        .get_until("/api/workers?refresh=1", |w| {
            w[email]["stats"]["pool"]["max-concurrency"].as_u64() == Some(before + 2)
        })
        .await;
    flower
        .post(&format!("/api/worker/pool/shrink/{email}?n=1"))
        .await;
    flower
        .get_until("/api/workers?refresh=1", |w| {
            w[email]["stats"]["pool"]["max-concurrency"].as_u64() == Some(before + 1)
        })
        .await;
    let limited = flower
        .post(&format!(
            "/api/task/rate-limit/send_order_confirmation_email?workername={email}&ratelimit=10/m"
        ))
        .await;
    assert_eq!(
        limited["message"], "new rate limit set successfully",
        "{limited}"
    );
    let revoked_id = uuid::Uuid::new_v4().to_string();
    flower.post(&format!("/api/task/revoke/{revoked_id}")).await;
    flower
        .get_until("/api/workers?refresh=1", |w| {
            nodes.iter().all(|n| {
                w[n.as_str()]["revoked"]
                    .as_array()
                    .is_some_and(|r| r.contains(&Value::String(revoked_id.clone())))
            })
        })
        .await;
    flower.post(&format!("/api/worker/shutdown/{report}")).await;
    let report_process = &mut fleet.processes[2];
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = report_process.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "report-worker still running: {}",
            report_process.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        status.success(),
        "shut down from Flower, report-worker exits 0: {status}"
    );
    fleet.stop().await;
}
