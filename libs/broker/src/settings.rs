//! Broker and worker settings, read from the environment with defaults that work on a laptop.

use std::time::Duration;

use crate::BrokerError;
use crate::tls::BrokerTls;

/// Classic or quorum work queues (quorum in a RabbitMQ cluster).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueType {
    Classic,
    Quorum,
}

impl QueueType {
    pub fn as_str(self) -> &'static str {
        match self {
            QueueType::Classic => "classic",
            QueueType::Quorum => "quorum",
        }
    }
}

#[derive(Debug, Clone)]
pub struct BrokerSettings {
    /// `BROKER_URL`, e.g. `amqp://guest:guest@127.0.0.1:5672/%2f`.
    pub url: String,
    /// `QUEUE_TYPE`: `classic` (default) or `quorum`.
    pub queue_type: QueueType,
    /// Shown in the RabbitMQ management UI.
    pub connection_name: String,
    /// First and longest wait between reconnection attempts.
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    /// `BROKER_MAX_PRIORITY` (Celery's `task_queue_max_priority`): classic work queues are
    /// declared with `x-max-priority` so a message's `priority` property orders delivery.
    /// Unset or 0 (the default, as in Celery and the seed's `task_queues`): no priority, and the
    /// topology stays exactly the seed's. Quorum queues on RabbitMQ 3.10 have no priorities, so
    /// there it is ignored with a warning.
    pub max_priority: Option<u8>,
    /// `BROKER_TLS_CA_FILE`, `BROKER_TLS_CERT_FILE`, `BROKER_TLS_KEY_FILE`: the CA and client
    /// certificate of an `amqps://` URL (see [`BrokerTls`]).
    pub tls: BrokerTls,
}

impl BrokerSettings {
    pub fn with_url(url: impl Into<String>, connection_name: impl Into<String>) -> Self {
        BrokerSettings {
            url: url.into(),
            queue_type: QueueType::Classic,
            connection_name: connection_name.into(),
            reconnect_min: Duration::from_millis(200),
            reconnect_max: Duration::from_secs(10),
            max_priority: None,
            tls: BrokerTls::default(),
        }
    }

    pub fn from_env(connection_name: &str) -> Result<Self, BrokerError> {
        let url = std::env::var("BROKER_URL")
            .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned());
        if !url.starts_with("amqp://") && !url.starts_with("amqps://") {
            return Err(BrokerError::Config {
                variable: "BROKER_URL",
                message: "must start with amqp:// or amqps://".to_owned(),
            });
        }
        let queue_type = match std::env::var("QUEUE_TYPE").as_deref() {
            Err(_) | Ok("") | Ok("classic") => QueueType::Classic,
            Ok("quorum") => QueueType::Quorum,
            Ok(other) => {
                return Err(BrokerError::Config {
                    variable: "QUEUE_TYPE",
                    message: format!("{other:?} is neither classic nor quorum"),
                });
            }
        };
        let max_priority: u8 = env_parse("BROKER_MAX_PRIORITY", 0)?;
        let tls = BrokerTls::read(&shopfds_config::Env::process(), &url)?;
        Ok(BrokerSettings {
            queue_type,
            max_priority: (max_priority > 0).then_some(max_priority),
            tls,
            ..BrokerSettings::with_url(url, connection_name)
        })
    }
}

/// One consumed queue and its prefetch multiplier: as in Celery, the broker may push
/// `multiplier × concurrency` unacknowledged messages of this queue to the worker. The seed's
/// table: 1 for email, real-time FDS and reports (a message waiting behind a slow task can be
/// taken by another worker), 2–4 for batch FDS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueConsumer {
    pub queue: String,
    pub prefetch_multiplier: u16,
    /// At most this many of this queue's tasks at once (within the worker's `concurrency`), so
    /// one worker can consume a slow queue without it taking every slot. `None`: only the
    /// worker's limit. The prefetch is then `multiplier × this`.
    pub concurrency: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Celery-style node name, `name@host`.
    pub hostname: String,
    pub queues: Vec<QueueConsumer>,
    /// Tasks running at once, over all queues.
    pub concurrency: usize,
    /// How long SIGTERM waits for running tasks before their messages are requeued.
    pub shutdown_grace: Duration,
    /// After `shutdown_grace`, how much longer the worker waits for tasks inside a side effect
    /// and its record ([`crate::TaskContext::effect`]) to finish, which are not abandoned.
    pub effect_grace: Duration,
    /// How long a task's result stays queryable.
    pub result_expires: Duration,
    /// Defaults when a message carries no `timelimit`: hard 300 s, soft 240 s (the seed).
    pub time_limit: Duration,
    pub soft_time_limit: Duration,
    /// `WORKER_MAX_MESSAGE_BYTES`: a message whose body is larger is dead-lettered unread, and a
    /// compressed body may not inflate past it. Default 16 MiB (RabbitMQ 4's own
    /// `max_message_size`).
    pub max_message_bytes: usize,
    /// `WORKER_PREFETCH_BYTES`: once the bodies of delivered messages not yet settled add up to
    /// this, the worker stops taking deliveries (its consumers are cancelled) until they are
    /// down to half of it. Default 64 MiB. See `runtime::budget`.
    pub prefetch_bytes: usize,
    /// `WORKER_ETA_HORIZON_SECS`: an `eta` (or countdown) further ahead than this is refused:
    /// dead-lettered with the reason, state REJECTED. Default 30 days.
    pub eta_horizon: Duration,
}

/// Default of [`WorkerSettings::max_message_bytes`].
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// Default of [`WorkerSettings::prefetch_bytes`].
pub const DEFAULT_PREFETCH_BYTES: usize = 64 * 1024 * 1024;
/// Default of [`WorkerSettings::eta_horizon`]: 30 days.
pub const DEFAULT_ETA_HORIZON: Duration = Duration::from_secs(30 * 24 * 3600);

impl WorkerSettings {
    /// The AMQP prefetch count of one queue's consumer.
    pub fn prefetch_count(&self, consumer: &QueueConsumer) -> u16 {
        let slots = consumer
            .concurrency
            .map_or(self.concurrency, |c| c.min(self.concurrency));
        let count = usize::from(consumer.prefetch_multiplier).saturating_mul(slots);
        u16::try_from(count).unwrap_or(u16::MAX)
    }

    /// Defaults for a worker consuming `queues` with the seed's prefetch of 1.
    pub fn new(name: &str, queues: &[&str]) -> Self {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".to_owned());
        WorkerSettings {
            hostname: format!("{name}@{host}"),
            queues: queues
                .iter()
                .map(|q| QueueConsumer {
                    queue: (*q).to_owned(),
                    prefetch_multiplier: 1,
                    concurrency: None,
                })
                .collect(),
            concurrency: 50,
            shutdown_grace: Duration::from_secs(120),
            effect_grace: Duration::from_secs(30),
            result_expires: Duration::from_secs(3600),
            time_limit: Duration::from_secs(300),
            soft_time_limit: Duration::from_secs(240),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            prefetch_bytes: DEFAULT_PREFETCH_BYTES,
            eta_horizon: DEFAULT_ETA_HORIZON,
        }
    }

    /// `WORKER_QUEUES` (comma separated), `WORKER_CONCURRENCY`, `WORKER_PREFETCH_MULTIPLIER`
    /// (and per queue `WORKER_CONCURRENCY_<QUEUE>`, `WORKER_PREFETCH_MULTIPLIER_<QUEUE>`),
    /// `WORKER_SHUTDOWN_GRACE_SECS` (or
    /// `SHUTDOWN_GRACE_SECS`), `WORKER_EFFECT_GRACE_SECS`, `RESULT_EXPIRES_SECS`,
    /// `TASK_TIME_LIMIT_SECS`, `TASK_SOFT_TIME_LIMIT_SECS`, `WORKER_MAX_MESSAGE_BYTES`,
    /// `WORKER_PREFETCH_BYTES`, `WORKER_ETA_HORIZON_SECS` override the defaults given.
    pub fn from_env(
        name: &str,
        default_queues: &[&str],
        default_concurrency: usize,
    ) -> Result<Self, BrokerError> {
        let queues_var = std::env::var("WORKER_QUEUES")
            .ok()
            .filter(|v| !v.trim().is_empty());
        let queues: Vec<&str> = match &queues_var {
            Some(v) => v
                .split(',')
                .map(str::trim)
                .filter(|q| !q.is_empty())
                .collect(),
            None => default_queues.to_vec(),
        };
        let mut s = WorkerSettings::new(name, &queues);
        s.concurrency = env_parse("WORKER_CONCURRENCY", default_concurrency)?;
        if s.concurrency == 0 {
            return Err(BrokerError::Config {
                variable: "WORKER_CONCURRENCY",
                message: "must be at least 1".to_owned(),
            });
        }
        let multiplier: u16 = env_parse("WORKER_PREFETCH_MULTIPLIER", 1)?;
        if multiplier == 0 {
            return Err(BrokerError::Config {
                variable: "WORKER_PREFETCH_MULTIPLIER",
                message: "must be at least 1".to_owned(),
            });
        }
        for q in &mut s.queues {
            q.prefetch_multiplier = multiplier;
            let variable = per_queue_variable("WORKER_CONCURRENCY", &q.queue);
            if let Some(v) = std::env::var(&variable)
                .ok()
                .filter(|v| !v.trim().is_empty())
            {
                q.concurrency = match v.trim().parse::<usize>() {
                    Ok(c) if c > 0 => Some(c),
                    _ => {
                        return Err(BrokerError::Config {
                            variable: "WORKER_CONCURRENCY_<QUEUE>",
                            message: format!("{variable}={v:?}: must be a whole number from 1"),
                        });
                    }
                };
            }
            // The seed's table differs per queue (email 1, batch FDS 2–4): one worker that
            // consumes several queues can give each its own, e.g. WORKER_PREFETCH_MULTIPLIER_FDS=4.
            let variable = per_queue_variable("WORKER_PREFETCH_MULTIPLIER", &q.queue);
            if let Some(v) = std::env::var(&variable)
                .ok()
                .filter(|v| !v.trim().is_empty())
            {
                q.prefetch_multiplier = match v.trim().parse::<u16>() {
                    Ok(m) if m > 0 => m,
                    _ => {
                        return Err(BrokerError::Config {
                            variable: "WORKER_PREFETCH_MULTIPLIER_<QUEUE>",
                            message: format!("{variable}={v:?}: must be a whole number from 1"),
                        });
                    }
                };
            }
        }
        // WORKER_SHUTDOWN_GRACE_SECS wins; SHUTDOWN_GRACE_SECS is what the deployments set.
        let grace = env_parse("SHUTDOWN_GRACE_SECS", 120)?;
        s.shutdown_grace = Duration::from_secs(env_parse("WORKER_SHUTDOWN_GRACE_SECS", grace)?);
        s.effect_grace = Duration::from_secs(env_parse("WORKER_EFFECT_GRACE_SECS", 30)?);
        s.result_expires = Duration::from_secs(env_parse("RESULT_EXPIRES_SECS", 3600)?);
        s.time_limit = Duration::from_secs(env_parse("TASK_TIME_LIMIT_SECS", 300)?);
        s.soft_time_limit = Duration::from_secs(env_parse("TASK_SOFT_TIME_LIMIT_SECS", 240)?);
        s.max_message_bytes = at_least_one("WORKER_MAX_MESSAGE_BYTES", DEFAULT_MAX_MESSAGE_BYTES)?;
        s.prefetch_bytes = at_least_one("WORKER_PREFETCH_BYTES", DEFAULT_PREFETCH_BYTES)?;
        s.eta_horizon = Duration::from_secs(at_least_one(
            "WORKER_ETA_HORIZON_SECS",
            DEFAULT_ETA_HORIZON.as_secs(),
        )?);
        Ok(s)
    }
}

/// [`env_parse`] for a whole number that must be at least 1.
fn at_least_one<T>(variable: &'static str, default: T) -> Result<T, BrokerError>
where
    T: std::str::FromStr + PartialOrd + From<u8>,
    T::Err: std::fmt::Display,
{
    let value = env_parse(variable, default)?;
    if value < T::from(1) {
        return Err(BrokerError::Config {
            variable,
            message: "must be at least 1".to_owned(),
        });
    }
    Ok(value)
}

/// The name of a queue's own override of `variable`: `WORKER_CONCURRENCY` and queue
/// `fds.batch` give `WORKER_CONCURRENCY_FDS_BATCH`.
pub fn per_queue_variable(variable: &str, queue: &str) -> String {
    format!(
        "{variable}_{}",
        queue.to_ascii_uppercase().replace(['.', '-'], "_")
    )
}

/// Reads and parses one variable, naming it in the error.
pub fn env_parse<T: std::str::FromStr>(variable: &'static str, default: T) -> Result<T, BrokerError>
where
    T::Err: std::fmt::Display,
{
    match std::env::var(variable) {
        Ok(v) if !v.trim().is_empty() => {
            v.trim().parse().map_err(|e: T::Err| BrokerError::Config {
                variable,
                message: format!("{v:?}: {e}"),
            })
        }
        _ => Ok(default),
    }
}
