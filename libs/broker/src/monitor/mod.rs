//! Monitoring and remote control as a Celery shop knows them: a Rust worker sends Celery's
//! events on `celeryev` ([`event`], [`dispatch`]) and answers Celery's remote-control commands
//! on its pidbox ([`pidbox`], [`control`]), so stock Flower, `celery inspect` and
//! `celery control` see and steer it as they do a stock worker; revokes outlive restarts
//! ([`revoke`]).
//!
//! The [`Monitor`] is one per worker and kept across reconnections: what it holds now
//! ([`inventory`]), the revoked ids, the Lamport [`clock`], the limits changed by remote
//! control, and the pool's size.

pub mod clock;
pub mod control;
pub mod dispatch;
pub mod event;
pub mod inventory;
pub mod lateness;
pub mod pidbox;
pub mod pool;
pub mod revoke;

use std::collections::HashMap;
use std::str::FromStr as _;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use crate::runtime::process::RateLimiter;
use crate::runtime::task::Registry;
use crate::{BrokerSettings, QueueConsumer, WorkerSettings, topology};
pub use clock::Clock;
pub use dispatch::Events;
pub use inventory::Inventory;
pub use pool::Pool;
pub use revoke::{RevokeStore, Revoked};

/// Soft and hard limits set by the `time_limit` command, per task name.
pub type TimeLimits = HashMap<String, (Option<Duration>, Option<Duration>)>;

pub struct Monitor {
    pub hostname: String,
    pub clock: Clock,
    pub events: Events,
    pub inventory: Inventory,
    pub revoked: Revoked,
    pub pool: Pool,
    pub registry: Arc<Registry>,
    /// Every registered task's rate limiter (unlimited until set).
    pub limiters: Arc<HashMap<String, RateLimiter>>,
    pub time_limits: RwLock<TimeLimits>,
    /// The queues consumed now: the configured ones, changed by `add_consumer` and
    /// `cancel_consumer`.
    pub queues: Mutex<Vec<QueueConsumer>>,
    broker: BrokerSettings,
    settings: WorkerSettings,
    backend: String,
    started: Instant,
    /// The worker's own shutdown token, cancelled by the `shutdown` command.
    shutdown: OnceLock<CancellationToken>,
}

/// What a [`Monitor`] is made of.
pub struct Parts {
    pub broker: BrokerSettings,
    pub settings: WorkerSettings,
    pub registry: Arc<Registry>,
    pub limiters: Arc<HashMap<String, RateLimiter>>,
    pub pool: Pool,
    pub store: Option<Arc<dyn RevokeStore>>,
    /// The result backend's name, for `conf`.
    pub backend: String,
}

impl Monitor {
    pub fn new(parts: Parts) -> Monitor {
        let Parts {
            broker,
            settings,
            registry,
            limiters,
            pool,
            store,
            backend,
        } = parts;
        Monitor {
            hostname: settings.hostname.clone(),
            clock: Clock::default(),
            events: Events::new(&settings.hostname, settings.send_task_events),
            inventory: Inventory::default(),
            revoked: Revoked::new(settings.revoke_expires, store),
            pool,
            registry,
            limiters,
            time_limits: RwLock::new(HashMap::new()),
            queues: Mutex::new(settings.queues.clone()),
            broker,
            settings,
            backend,
            started: Instant::now(),
            shutdown: OnceLock::new(),
        }
    }

    /// The token the `shutdown` command cancels: the worker's own.
    pub fn set_shutdown(&self, token: CancellationToken) {
        let _ = self.shutdown.set(token);
    }

    pub fn shutdown(&self) {
        if let Some(token) = self.shutdown.get() {
            token.cancel();
        }
    }

    /// Queues a worker event (`worker-online`, `worker-heartbeat`).
    pub fn heartbeat(&self, kind: &str) {
        let fields = self.worker_fields();
        self.events.send(&self.clock, kind, fields);
    }

    /// The fields of a worker event now.
    pub fn worker_fields(&self) -> Value {
        event::worker(
            self.inventory.active_count(),
            self.inventory.processed(),
            event::loadavg(),
        )
    }

    /// The time limits set for `task` by remote control, if any.
    pub fn time_limits_of(&self, task: &str) -> Option<(Option<Duration>, Option<Duration>)> {
        self.time_limits.read().ok()?.get(task).copied()
    }

    fn queues_now(&self) -> Vec<QueueConsumer> {
        self.queues.lock().map(|q| q.clone()).unwrap_or_default()
    }

    /// `inspect stats`, with the keys and shapes of a stock worker's.
    pub fn stats(&self) -> Value {
        let prefetch: u64 = self
            .queues_now()
            .iter()
            .map(|q| u64::from(self.settings.prefetch_count(q)))
            .sum();
        json!({
            "total": self.inventory.totals(),
            "pid": std::process::id(),
            "clock": self.clock.value().to_string(),
            "uptime": self.started.elapsed().as_secs(),
            "pool": {
                "implementation": "shopfds:tokio",
                "max-concurrency": self.pool.size(),
                "threads": self.inventory.active_count(),
            },
            "broker": self.broker_info(),
            "prefetch_count": prefetch,
            "rusage": rusage(),
        })
    }

    fn broker_info(&self) -> Value {
        // The first node of a list, as kombu reports the first of its failover hosts.
        let first = self.broker.nodes().first().copied().unwrap_or_default();
        let uri = lapin::uri::AMQPUri::from_str(first).ok();
        let (host, port, user, vhost, ssl) = uri.map_or(
            (String::new(), 5672, String::new(), "/".to_owned(), false),
            |u| {
                (
                    u.authority.host.clone(),
                    u.authority.port,
                    u.authority.userinfo.username.clone(),
                    u.vhost.clone(),
                    matches!(u.scheme, lapin::uri::AMQPScheme::AMQPS),
                )
            },
        );
        json!({
            "hostname": host,
            "userid": user,
            "virtual_host": vhost,
            "port": port,
            "insist": false,
            "ssl": ssl,
            "transport": "amqp",
            "connect_timeout": 4,
            "transport_options": {},
            "login_method": "PLAIN",
            "uri_prefix": null,
            "heartbeat": 60.0,
            "failover_strategy": "round-robin",
            "alternates": [],
        })
    }

    /// `inspect registered`: sorted names; with `taskinfoitems`, `name [item=value …]` for
    /// the items a task has (of those, a Rust task has `rate_limit`).
    pub fn registered(&self, items: Option<&Value>) -> Vec<String> {
        let wanted: Vec<&str> = match items {
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
            _ => vec!["exchange", "routing_key", "rate_limit"],
        };
        let mut names: Vec<String> = self
            .registry
            .options()
            .map(|(name, options)| {
                let rate = options.rate_limit.as_ref().map(|r| {
                    let unit = match r.per.as_secs() {
                        60 => "m",
                        3600 => "h",
                        _ => "s",
                    };
                    format!("{}/{unit}", r.count)
                });
                match (wanted.contains(&"rate_limit"), rate) {
                    (true, Some(rate)) => format!("{name} [rate_limit={rate}]"),
                    _ => name.to_owned(),
                }
            })
            .collect();
        names.sort();
        names
    }

    /// `inspect active_queues`: each queue as kombu's `Queue.as_dict(recurse=True)`.
    pub fn active_queues(&self) -> Vec<Value> {
        self.queues_now()
            .iter()
            .map(|q| {
                let known = shopfds_protocol::names::WORK_QUEUES.contains(&q.queue.as_str());
                let arguments = known.then(|| {
                    let table = topology::work_queue_arguments_with(
                        &q.queue,
                        self.broker.queue_type,
                        self.broker.max_priority,
                    );
                    Value::Object(crate::amqp::table_to_json(&table))
                });
                json!({
                    "name": q.queue,
                    "exchange": {
                        "name": q.queue, "type": "direct", "arguments": null, "durable": true,
                        "passive": false, "auto_delete": false, "delivery_mode": null,
                        "no_declare": false,
                    },
                    "routing_key": q.queue,
                    "queue_arguments": arguments,
                    "binding_arguments": null,
                    "consumer_arguments": null,
                    "durable": true,
                    "exclusive": false,
                    "auto_delete": false,
                    "no_ack": false,
                    "alias": null,
                    "bindings": [],
                    "no_declare": null,
                    "expires": null,
                    "message_ttl": null,
                    "max_length": null,
                    "max_length_bytes": null,
                    "max_priority": self.broker.max_priority,
                })
            })
            .collect()
    }

    /// `inspect conf`: this worker's settings under Celery's names.
    pub fn conf(&self) -> Value {
        let s = &self.settings;
        let queues: Vec<&str> = shopfds_protocol::names::WORK_QUEUES.to_vec();
        let mut conf = Map::new();
        let mut put = |k: &str, v: Value| {
            conf.insert(k.to_owned(), v);
        };
        put("broker_url", json!(self.broker.url.redacted()));
        put("result_backend", json!(self.backend));
        put("task_acks_late", json!(true));
        put("task_reject_on_worker_lost", json!(true));
        put("task_serializer", json!("json"));
        put("accept_content", json!(["json"]));
        put("task_queues", json!(queues));
        put("worker_concurrency", json!(self.pool.size()));
        put(
            "worker_prefetch_multiplier",
            json!(s.queues.first().map_or(1, |q| q.prefetch_multiplier)),
        );
        put("task_time_limit", json!(s.time_limit.as_secs_f64()));
        put(
            "task_soft_time_limit",
            json!(s.soft_time_limit.as_secs_f64()),
        );
        put("result_expires", json!(s.result_expires.as_secs()));
        put(
            "worker_send_task_events",
            json!(self.events.tasks_enabled()),
        );
        put("event_exchange", json!(event::EXCHANGE));
        put("control_exchange", json!("celery"));
        Value::Object(conf)
    }
}

/// `getrusage(RUSAGE_SELF)` as Celery's `stats.rusage`.
fn rusage() -> Value {
    use nix::sys::resource::{UsageWho, getrusage};
    let Ok(u) = getrusage(UsageWho::RUSAGE_SELF) else {
        return json!({});
    };
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    json!({
        "utime": secs(u.user_time()),
        "stime": secs(u.system_time()),
        "maxrss": u.max_rss(),
        "ixrss": u.shared_integral(),
        "idrss": u.unshared_data_integral(),
        "isrss": u.unshared_stack_integral(),
        "minflt": u.minor_page_faults(),
        "majflt": u.major_page_faults(),
        "nswap": u.full_swaps(),
        "inblock": u.block_reads(),
        "oublock": u.block_writes(),
        "msgsnd": u.ipc_sends(),
        "msgrcv": u.ipc_receives(),
        "nsignals": u.signals(),
        "nvcsw": u.voluntary_context_switches(),
        "nivcsw": u.involuntary_context_switches(),
    })
}
