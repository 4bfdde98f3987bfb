//! A real Rust worker on a vhost of its own, writing through the backend under test, with the
//! tasks the tests send from the stock Python client.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use shopfds_broker::{
    BrokerError, BrokerSettings, QueueType, Registry, ResultBackend, TaskError, TaskOptions,
    Worker, WorkerSettings, topology,
};
use shopfds_testkit::rabbit::TestVhost;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The queue the Rust worker consumes.
pub const QUEUE: &str = "default";
pub const REDIS_URL: &str = "redis://127.0.0.1:6379/0";
pub const WAIT: Duration = Duration::from_secs(30);

pub const ADD: &str = "results.add";
pub const FAIL: &str = "results.fail";
pub const PROGRESS: &str = "results.progress";
pub const PART: &str = "results.part";
pub const BODY: &str = "results.body";
pub const DECLINED: &str = "card declined: insufficient funds";

/// What the test controls and observes of the tasks.
pub struct Tasks {
    /// `results.progress` waits for a permit after reporting its progress.
    pub release: Arc<Semaphore>,
    /// The first argument each `results.body` run got (a chord's results).
    pub bodies: mpsc::UnboundedReceiver<Value>,
}

/// `results.add(x, y)` → x + y; `results.fail()` → permanent error; `results.progress()` →
/// PROGRESS {1, 2, "half way"}, waits for a release, → "done"; `results.part(n)` → n * 10;
/// `results.body(results)` → their sum (numbers only), and tells the test what it got.
pub fn registry() -> (Registry, Tasks) {
    let release = Arc::new(Semaphore::new(0));
    let (bodies_tx, bodies) = mpsc::unbounded_channel();
    let mut registry = Registry::new();
    let options = TaskOptions {
        max_retries: 0,
        ..TaskOptions::default()
    };
    registry.register(ADD, options.clone(), |ctx| async move {
        let kw = &ctx.message.kwargs;
        let x = kw.get("x").and_then(Value::as_i64).unwrap_or(0);
        let y = kw.get("y").and_then(Value::as_i64).unwrap_or(0);
        Ok(json!(x + y))
    });
    registry.register(FAIL, options.clone(), |_ctx| async move {
        Err(TaskError::permanent(DECLINED))
    });
    let gate = release.clone();
    registry.register(PROGRESS, options.clone(), move |ctx| {
        let gate = gate.clone();
        async move {
            ctx.progress(1, 2, "half way").await;
            let permit = gate.acquire().await.map_err(TaskError::permanent)?;
            permit.forget();
            Ok(json!("done"))
        }
    });
    registry.register(PART, options.clone(), |ctx| async move {
        let n = ctx
            .message
            .kwargs
            .get("n")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        Ok(json!(n * 10))
    });
    registry.register(BODY, options, move |ctx| {
        let bodies_tx = bodies_tx.clone();
        async move {
            let results = ctx.message.args.first().cloned().unwrap_or(Value::Null);
            let sum: i64 = results
                .as_array()
                .map(|r| r.iter().filter_map(Value::as_i64).sum())
                .unwrap_or(0);
            let _ = bodies_tx.send(results);
            Ok(json!(sum))
        }
    });
    (registry, Tasks { release, bodies })
}

/// A vhost with the topology declared and a Rust worker on it; the worker stops on drop.
pub struct TestWorker {
    pub broker: BrokerSettings,
    pub backend: Arc<dyn ResultBackend>,
    pub tasks: Tasks,
    shutdown: CancellationToken,
    handle: Option<JoinHandle<Result<(), BrokerError>>>,
    pub vhost: TestVhost,
}

impl Drop for TestWorker {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl TestWorker {
    pub fn amqp_url(&self) -> String {
        self.vhost.amqp_url()
    }

    /// Stops the worker and waits until it closed its connection (what it did not ack is then
    /// back in the queue).
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(handle) = self.handle.take() {
            tokio::time::timeout(WAIT, handle)
                .await
                .expect("the worker did not stop")
                .expect("the worker panicked")
                .expect("the worker failed");
        }
    }
}

/// A fresh vhost (topology declared) and its broker settings.
pub async fn vhost() -> (TestVhost, BrokerSettings) {
    shopfds_testkit::init_tracing();
    let vhost = tokio::task::spawn_blocking(TestVhost::create)
        .await
        .expect("join")
        .expect("create vhost");
    let mut broker = BrokerSettings::with_url(vhost.amqp_url(), "results-test");
    broker.reconnect_max = Duration::from_millis(500);
    let conn = shopfds_broker::amqp::connect(&broker)
        .await
        .expect("connect");
    let channel = conn.create_channel().await.expect("channel");
    topology::declare_with(&channel, QueueType::Classic, None)
        .await
        .expect("declare topology");
    let _ = conn.close(200, "declared".into()).await;
    (vhost, broker)
}

/// A Rust worker consuming `default` on a fresh vhost, writing through the backend `make`
/// builds for that vhost's broker settings.
pub async fn spawn_worker<F, Fut>(make: F) -> TestWorker
where
    F: FnOnce(BrokerSettings) -> Fut,
    Fut: std::future::Future<Output = Arc<dyn ResultBackend>>,
{
    let (vhost, broker) = vhost().await;
    let backend = make(broker.clone()).await;
    let (registry, tasks) = registry();
    let mut settings = WorkerSettings::new("results-test", &[QUEUE]);
    settings.concurrency = 4;
    settings.shutdown_grace = Duration::from_millis(300);
    let shutdown = CancellationToken::new();
    let worker = Worker::new(broker.clone(), settings, registry, backend.clone());
    let handle = tokio::spawn(worker.run(shutdown.clone()));
    TestWorker {
        broker,
        backend,
        tasks,
        shutdown,
        handle: Some(handle),
        vhost,
    }
}

/// The Redis backend of the tests (results kept an hour).
pub async fn redis_backend() -> Arc<dyn ResultBackend> {
    Arc::new(
        shopfds_results::RedisBackend::connect(REDIS_URL, Duration::from_secs(3600))
            .await
            .expect("connect to Redis"),
    )
}

/// A Rust worker writing to Redis.
pub async fn redis_worker() -> TestWorker {
    spawn_worker(|_| redis_backend()).await
}

/// A Rust worker answering `rpc://` clients.
pub async fn rpc_worker() -> TestWorker {
    spawn_worker(|broker| async move {
        Arc::new(shopfds_results::RpcBackend::new(&broker)) as Arc<dyn ResultBackend>
    })
    .await
}

/// A raw Redis connection, to look at the keys as a Celery process would.
pub async fn redis() -> redis::aio::MultiplexedConnection {
    redis::Client::open(REDIS_URL)
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect to Redis")
}

/// Waits for the next chord body the Rust worker ran.
pub async fn next_body(tasks: &mut Tasks) -> Value {
    tokio::time::timeout(WAIT, tasks.bodies.recv())
        .await
        .expect("no chord body ran on the Rust worker in time")
        .expect("the worker's registry was dropped")
}
