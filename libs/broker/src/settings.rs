//! Broker and worker settings, read from the environment with defaults that work on a laptop.

use std::time::Duration;

use shopfds_config::{ConfigError, Env, SecretUrl};

use crate::nodes::NodeCursor;
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
    /// `BROKER_URL`, e.g. `amqp://guest:guest@127.0.0.1:5672/%2f`, or the URLs of several
    /// cluster nodes separated by `;` or `,` ([`crate::nodes`]); printed without passwords.
    pub url: SecretUrl,
    /// Which node of [`BrokerSettings::url`] the next connection tries first; shared by clones.
    pub failover: NodeCursor,
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
        let url: String = url.into();
        BrokerSettings {
            url: SecretUrl::new(url),
            failover: NodeCursor::default(),
            queue_type: QueueType::Classic,
            connection_name: connection_name.into(),
            reconnect_min: Duration::from_millis(200),
            reconnect_max: Duration::from_secs(10),
            max_priority: None,
            tls: BrokerTls::default(),
        }
    }

    /// The nodes' URLs in the order given (one for a single broker).
    pub fn nodes(&self) -> Vec<&str> {
        crate::nodes::split(self.url.expose())
    }

    /// `BROKER_URL` (default `amqp://guest:guest@127.0.0.1:5672/%2f`; one URL or a list of
    /// nodes), `QUEUE_TYPE`, `BROKER_MAX_PRIORITY`.
    pub fn read(env: &Env, connection_name: &str) -> Result<Self, ConfigError> {
        let url = env.url("BROKER_URL", DEFAULT_BROKER_URL, &["amqp", "amqps"])?;
        let nodes = crate::nodes::parse("BROKER_URL", url.expose())?;
        let queue_type = env.choice(
            "QUEUE_TYPE",
            QueueType::Classic,
            &[
                ("classic", QueueType::Classic),
                ("quorum", QueueType::Quorum),
            ],
        )?;
        let max_priority: u8 = env.parse("BROKER_MAX_PRIORITY", 0)?;
        let tls = BrokerTls::read_for_nodes(env, &nodes)?;
        Ok(BrokerSettings {
            queue_type,
            max_priority: (max_priority > 0).then_some(max_priority),
            tls,
            ..BrokerSettings::with_url(url.expose(), connection_name)
        })
    }
}

/// Where the broker is unless `BROKER_URL` says otherwise.
pub const DEFAULT_BROKER_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

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
    /// `WORKER_SEND_TASK_EVENTS` (Celery's `worker_send_task_events`, `-E`): send task events
    /// on `celeryev` from the start; the `enable_events` control command switches them on too.
    /// Worker events (online, heartbeat, offline) are always sent. Default off.
    pub send_task_events: bool,
    /// `WORKER_REVOKE_EXPIRES_SECS`: how long a revoked task id is remembered (Celery's
    /// `REVOKE_EXPIRES`). Default 3 h.
    pub revoke_expires: Duration,
}

/// Default of [`WorkerSettings::revoke_expires`]: 3 h, as Celery.
pub const DEFAULT_REVOKE_EXPIRES: Duration = Duration::from_secs(3 * 3600);

/// Default of [`WorkerSettings::max_message_bytes`].
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// Default of [`WorkerSettings::prefetch_bytes`].
pub const DEFAULT_PREFETCH_BYTES: usize = 64 * 1024 * 1024;
/// Default of [`WorkerSettings::eta_horizon`]: 30 days.
pub const DEFAULT_ETA_HORIZON: Duration = Duration::from_secs(30 * 24 * 3600);

impl WorkerSettings {
    /// How long a stop of this worker may take in all: the grace of running tasks, the extra
    /// grace of tasks inside a side effect, and a margin for the last acks and records.
    pub fn stop_within(&self) -> Duration {
        self.shutdown_grace
            .saturating_add(self.effect_grace)
            .saturating_add(Duration::from_secs(10))
    }

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
            send_task_events: false,
            revoke_expires: DEFAULT_REVOKE_EXPIRES,
        }
    }

    /// `WORKER_QUEUES` (comma separated), `WORKER_CONCURRENCY`, `WORKER_PREFETCH_MULTIPLIER`
    /// (and per queue `WORKER_CONCURRENCY_<QUEUE>`, `WORKER_PREFETCH_MULTIPLIER_<QUEUE>`),
    /// `WORKER_SHUTDOWN_GRACE_SECS` (or `SHUTDOWN_GRACE_SECS`), `WORKER_EFFECT_GRACE_SECS`,
    /// `RESULT_EXPIRES_SECS`, `TASK_TIME_LIMIT_SECS`, `TASK_SOFT_TIME_LIMIT_SECS`,
    /// `WORKER_MAX_MESSAGE_BYTES`, `WORKER_PREFETCH_BYTES`, `WORKER_ETA_HORIZON_SECS` override the
    /// defaults given; `default_multiplier` is the prefetch multiplier of a queue when neither
    /// `WORKER_PREFETCH_MULTIPLIER` nor the queue's own variable is set.
    pub fn read(
        env: &Env,
        name: &str,
        default_queues: &[&str],
        default_concurrency: usize,
        default_multiplier: u16,
    ) -> Result<Self, ConfigError> {
        let listed = env.list("WORKER_QUEUES");
        let queues: Vec<&str> = if listed.is_empty() {
            default_queues.to_vec()
        } else {
            listed.iter().map(String::as_str).collect()
        };
        let mut s = WorkerSettings::new(name, &queues);
        // Celery's node name, `name@host`: the pod's name in Kubernetes.
        s.hostname = format!("{name}@{}", env.string("HOSTNAME", "localhost"));
        s.concurrency = env.positive("WORKER_CONCURRENCY", default_concurrency)?;
        let multiplier: u16 = env.positive("WORKER_PREFETCH_MULTIPLIER", default_multiplier)?;
        for q in &mut s.queues {
            q.prefetch_multiplier = multiplier;
            q.concurrency = per_queue(env, "WORKER_CONCURRENCY", &q.queue)?;
            // The seed's table differs per queue (email 1, batch FDS 2–4): one worker that
            // consumes several queues can give each its own, e.g. WORKER_PREFETCH_MULTIPLIER_FDS=4.
            if let Some(m) = per_queue(env, "WORKER_PREFETCH_MULTIPLIER", &q.queue)? {
                q.prefetch_multiplier = m;
            }
        }
        // WORKER_SHUTDOWN_GRACE_SECS wins; SHUTDOWN_GRACE_SECS is what the deployments set.
        let grace = env.secs("SHUTDOWN_GRACE_SECS", s.shutdown_grace)?;
        s.shutdown_grace = env.secs("WORKER_SHUTDOWN_GRACE_SECS", grace)?;
        s.effect_grace = env.secs("WORKER_EFFECT_GRACE_SECS", s.effect_grace)?;
        s.result_expires = env.secs("RESULT_EXPIRES_SECS", s.result_expires)?;
        s.time_limit = env.secs("TASK_TIME_LIMIT_SECS", s.time_limit)?;
        s.soft_time_limit = env.secs("TASK_SOFT_TIME_LIMIT_SECS", s.soft_time_limit)?;
        s.max_message_bytes =
            env.positive("WORKER_MAX_MESSAGE_BYTES", DEFAULT_MAX_MESSAGE_BYTES)?;
        s.prefetch_bytes = env.positive("WORKER_PREFETCH_BYTES", DEFAULT_PREFETCH_BYTES)?;
        s.eta_horizon = Duration::from_secs(
            env.positive("WORKER_ETA_HORIZON_SECS", DEFAULT_ETA_HORIZON.as_secs())?,
        );
        s.send_task_events = env.flag("WORKER_SEND_TASK_EVENTS", false)?;
        s.revoke_expires = Duration::from_secs(env.positive(
            "WORKER_REVOKE_EXPIRES_SECS",
            DEFAULT_REVOKE_EXPIRES.as_secs(),
        )?);
        Ok(s)
    }
}

/// A queue's own override of `variable` (e.g. `WORKER_CONCURRENCY_FDS_BATCH`), at least 1.
fn per_queue<T>(env: &Env, variable: &str, queue: &str) -> Result<Option<T>, ConfigError>
where
    T: std::str::FromStr + PartialOrd + From<u8>,
{
    let name = per_queue_variable(variable, queue);
    let pattern = format!("{variable}_<QUEUE>");
    let Some(value) = env.get_as(&name, &pattern) else {
        return Ok(None);
    };
    match value.parse::<T>() {
        Ok(n) if n >= T::from(1) => Ok(Some(n)),
        _ => Err(ConfigError::new(
            name,
            format!("{value:?} must be a whole number from 1"),
        )),
    }
}

/// The name of a queue's own override of `variable`: `WORKER_CONCURRENCY` and queue
/// `fds.batch` give `WORKER_CONCURRENCY_FDS_BATCH`.
pub fn per_queue_variable(variable: &str, queue: &str) -> String {
    format!(
        "{variable}_{}",
        queue.to_ascii_uppercase().replace(['.', '-'], "_")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_url_may_list_the_nodes_of_a_cluster() {
        let env = Env::from_pairs([(
            "BROKER_URL",
            "amqp://app:pw@rabbit-0:5672/%2f;amqp://app:pw@rabbit-1:5672/%2f,amqp://app:pw@rabbit-2:5672/%2f",
        )]);
        let settings = BrokerSettings::read(&env, "test").unwrap();
        assert_eq!(
            settings.nodes(),
            vec![
                "amqp://app:pw@rabbit-0:5672/%2f",
                "amqp://app:pw@rabbit-1:5672/%2f",
                "amqp://app:pw@rabbit-2:5672/%2f"
            ]
        );
        assert!(!format!("{settings:?}").contains("pw@"), "{settings:?}");
        let single =
            BrokerSettings::read(&Env::from_pairs(Vec::<(&str, &str)>::new()), "test").unwrap();
        assert_eq!(single.nodes(), vec![DEFAULT_BROKER_URL]);
    }

    #[test]
    fn a_bad_node_in_broker_url_is_named() {
        let env = Env::from_pairs([(
            "BROKER_URL",
            "amqp://app:secret@rabbit-0/%2f;redis://app:secret@rabbit-1/",
        )]);
        let err = BrokerSettings::read(&env, "test").unwrap_err();
        assert_eq!(err.variable, "BROKER_URL");
        assert!(err.message.contains("entry 2 of 2"), "{err}");
        assert!(!err.to_string().contains("secret"), "{err}");
    }
}
