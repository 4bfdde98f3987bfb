//! `RESULT_BACKEND`, `RESULT_EXPIRES_SECS` and the batch settings, read from the environment with
//! defaults that work on a laptop, and [`ResultSettings::build`], which makes the backend.
//!
//! `RESULT_BACKEND` takes Celery's spellings: `postgres` (default), `redis://host:port/db` or
//! `rediss://…` (Celery's Redis backend format), `rpc://` (Celery's rpc backend).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use shopfds_broker::{BrokerSettings, ResultBackend};
use shopfds_store::Store;

use crate::postgres::{BatchSettings, PostgresBackend};
use shopfds_config::{ConfigError, Env, redact_url};

use crate::redis::RedisBackend;
use crate::rpc::RpcBackend;

/// Which backend keeps results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendKind {
    /// The service's PostgreSQL database (`DATABASE_URL`).
    Postgres,
    /// Redis in Celery's format (`redis://…`, `rediss://…`).
    Redis { url: RedisUrl },
    /// Celery's `rpc://`: replies to the message's `reply_to`, nothing kept.
    Rpc,
}

/// A Redis URL, checked when read; its `Debug` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(String);

impl RedisUrl {
    pub fn parse(url: &str) -> Result<RedisUrl, String> {
        redis::Client::open(url).map_err(|e| e.to_string())?;
        Ok(RedisUrl(url.to_owned()))
    }

    /// The URL as given, password included.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({:?})", redact_url(&self.0))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultSettings {
    pub kind: BackendKind,
    pub batch: BatchSettings,
    /// How long Redis keeps a result written without an expiry of its own (PROGRESS, chord
    /// keys): `RESULT_EXPIRES_SECS`, the worker's variable, with its default of 3600 s (Celery's
    /// `result_expires` defaults to 86400).
    pub expires: Duration,
}

/// The default of `RESULT_EXPIRES_SECS` (as the worker reads it).
pub const DEFAULT_EXPIRES: Duration = Duration::from_secs(3600);

impl Default for ResultSettings {
    fn default() -> Self {
        ResultSettings {
            kind: BackendKind::Postgres,
            batch: BatchSettings::default(),
            expires: DEFAULT_EXPIRES,
        }
    }
}

impl ResultSettings {
    /// `RESULT_BACKEND`: `postgres` (default; also `postgresql`, `database`, `db`: the database
    /// of `DATABASE_URL`), `redis://[:password@]host:port/db` or `rediss://…` (Redis in
    /// Celery's format), `rpc://` (Celery's rpc backend). `RESULT_EXPIRES_SECS` (3600) is how
    /// long Redis keeps what has no expiry of its own. `RESULT_BATCH_MAX_ROWS` (500) and
    /// `RESULT_BATCH_LINGER_MS` (0) tune the PostgreSQL writer.
    pub fn read(env: &Env) -> Result<Self, ConfigError> {
        let kind = match env.get("RESULT_BACKEND").as_deref() {
            None | Some("postgres" | "postgresql" | "database" | "db") => BackendKind::Postgres,
            Some("rpc://" | "rpc") => BackendKind::Rpc,
            Some(url) if url.starts_with("redis://") || url.starts_with("rediss://") => {
                BackendKind::Redis {
                    url: RedisUrl::parse(url).map_err(|e| {
                        ConfigError::new(
                            "RESULT_BACKEND",
                            format!("{:?} is not a usable Redis URL: {e}", redact_url(url)),
                        )
                    })?,
                }
            }
            Some(other) => {
                return Err(ConfigError::new(
                    "RESULT_BACKEND",
                    format!(
                        "{:?} is not a result backend (use postgres, redis://host:port/db, \
                         rediss://… or rpc://)",
                        redact_url(other)
                    ),
                ));
            }
        };
        let within = |name: &str, value: u64, range: std::ops::RangeInclusive<u64>| {
            if range.contains(&value) {
                Ok(value)
            } else {
                Err(ConfigError::new(
                    name,
                    format!(
                        "expected a whole number from {} to {}, got {value}",
                        range.start(),
                        range.end()
                    ),
                ))
            }
        };
        let expires = within(
            "RESULT_EXPIRES_SECS",
            env.parse("RESULT_EXPIRES_SECS", DEFAULT_EXPIRES.as_secs())?,
            1..=315_360_000,
        )?;
        let defaults = BatchSettings::default();
        let max_rows = within(
            "RESULT_BATCH_MAX_ROWS",
            env.parse("RESULT_BATCH_MAX_ROWS", defaults.max_rows as u64)?,
            1..=10_000,
        )?;
        let linger = within(
            "RESULT_BATCH_LINGER_MS",
            env.parse("RESULT_BATCH_LINGER_MS", defaults.linger.as_millis() as u64)?,
            0..=1000,
        )?;
        Ok(ResultSettings {
            kind,
            batch: BatchSettings {
                // At most 10,000: fits every usize.
                max_rows: usize::try_from(max_rows).unwrap_or(defaults.max_rows),
                linger: Duration::from_millis(linger),
            },
            expires: Duration::from_secs(expires),
        })
    }

    /// The configured backend: PostgreSQL over `store`, Redis (connected now), or rpc (replies
    /// published on a connection of its own to `broker`, connected now). An unreachable Redis or
    /// broker is an error naming `RESULT_BACKEND`.
    pub async fn build(
        &self,
        store: &Store,
        broker: &BrokerSettings,
    ) -> Result<Arc<dyn ResultBackend>, ConfigError> {
        let unreachable = |message: String| ConfigError::new("RESULT_BACKEND", message);
        match &self.kind {
            BackendKind::Postgres => Ok(self.postgres(store)),
            BackendKind::Redis { url } => {
                let backend = RedisBackend::connect(url.expose(), self.expires)
                    .await
                    .map_err(|e| unreachable(e.to_string()))?;
                Ok(Arc::new(backend))
            }
            BackendKind::Rpc => {
                let backend = RpcBackend::new(broker);
                backend
                    .connect()
                    .await
                    .map_err(|e| unreachable(format!("rpc:// cannot reach the broker: {e}")))?;
                Ok(Arc::new(backend))
            }
        }
    }

    /// The configured backend for reading only (`GET /v1/tasks/{id}` in order-api): as
    /// [`ResultSettings::build`], except that rpc opens no broker connection, since it keeps
    /// nothing to read (every task then reads as unknown).
    pub async fn reader(
        &self,
        store: &Store,
        broker: &BrokerSettings,
    ) -> Result<Arc<dyn ResultBackend>, ConfigError> {
        match &self.kind {
            BackendKind::Rpc => Ok(Arc::new(RpcBackend::new(broker))),
            _ => self.build(store, broker).await,
        }
    }

    /// The PostgreSQL backend over `store`, whatever `RESULT_BACKEND` says (tools and tests that
    /// only ever use the database).
    pub fn postgres(&self, store: &Store) -> Arc<dyn ResultBackend> {
        Arc::new(PostgresBackend::new(store.clone(), self.batch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(vars: &[(&str, &str)]) -> Result<ResultSettings, ConfigError> {
        ResultSettings::read(&Env::from_pairs(vars.iter().copied()))
    }

    #[test]
    fn postgres_is_the_default() {
        assert_eq!(read(&[]).unwrap(), ResultSettings::default());
        assert_eq!(
            read(&[("RESULT_BACKEND", "postgresql")]).unwrap().kind,
            BackendKind::Postgres
        );
    }

    #[test]
    fn celerys_spellings_select_redis_and_rpc() {
        let redis = read(&[("RESULT_BACKEND", "redis://:pw@127.0.0.1:6379/3")]).unwrap();
        match &redis.kind {
            BackendKind::Redis { url } => {
                assert_eq!(url.expose(), "redis://:pw@127.0.0.1:6379/3");
                assert!(!format!("{redis:?}").contains("pw"));
            }
            other => panic!("expected redis, got {other:?}"),
        }
        assert!(matches!(
            read(&[("RESULT_BACKEND", "rediss://127.0.0.1:6380/0")])
                .unwrap()
                .kind,
            BackendKind::Redis { .. }
        ));
        assert_eq!(
            read(&[("RESULT_BACKEND", "rpc://")]).unwrap().kind,
            BackendKind::Rpc
        );
        assert_eq!(
            read(&[("RESULT_EXPIRES_SECS", "86400")]).unwrap().expires,
            Duration::from_secs(86400)
        );
    }

    #[test]
    fn bad_values_name_their_variable() {
        let bad_url = read(&[("RESULT_BACKEND", "redis://:pw@127.0.0.1:notaport/0")]).unwrap_err();
        assert_eq!(bad_url.variable, "RESULT_BACKEND");
        assert!(!bad_url.message.contains("pw"), "{}", bad_url.message);
        assert_eq!(
            read(&[("RESULT_EXPIRES_SECS", "0")]).unwrap_err().variable,
            "RESULT_EXPIRES_SECS"
        );
        assert_eq!(
            read(&[("RESULT_BACKEND", "mongodb://x")])
                .unwrap_err()
                .variable,
            "RESULT_BACKEND"
        );
        assert_eq!(
            read(&[("RESULT_BATCH_MAX_ROWS", "0")])
                .unwrap_err()
                .variable,
            "RESULT_BATCH_MAX_ROWS"
        );
        assert_eq!(
            read(&[("RESULT_BATCH_LINGER_MS", "x")])
                .unwrap_err()
                .variable,
            "RESULT_BATCH_LINGER_MS"
        );
    }
}
