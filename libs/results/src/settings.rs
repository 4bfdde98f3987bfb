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
use crate::redis::{RedisBackend, redact};
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
        write!(f, "RedisUrl({:?})", redact(&self.0))
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

/// A variable with a value we cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}: {message}")]
pub struct ResultConfigError {
    pub variable: &'static str,
    pub message: String,
}

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
    pub fn from_env() -> Result<Self, ResultConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// `RESULT_BACKEND`: `postgres` (default; also `postgresql`, `database`, `db`: the database
    /// of `DATABASE_URL`), `redis://[:password@]host:port/db` or `rediss://…` (Redis in
    /// Celery's format), `rpc://` (Celery's rpc backend). `RESULT_EXPIRES_SECS` (3600) is how
    /// long Redis keeps what has no expiry of its own. `RESULT_BATCH_MAX_ROWS` (500) and
    /// `RESULT_BATCH_LINGER_MS` (0) tune the PostgreSQL writer.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ResultConfigError> {
        let kind = match lookup("RESULT_BACKEND").as_deref().map(str::trim) {
            None | Some("" | "postgres" | "postgresql" | "database" | "db") => {
                BackendKind::Postgres
            }
            Some("rpc://" | "rpc") => BackendKind::Rpc,
            Some(url) if url.starts_with("redis://") || url.starts_with("rediss://") => {
                BackendKind::Redis {
                    url: RedisUrl::parse(url).map_err(|e| ResultConfigError {
                        variable: "RESULT_BACKEND",
                        message: format!("{:?} is not a usable Redis URL: {e}", redact(url)),
                    })?,
                }
            }
            Some(other) => {
                return Err(ResultConfigError {
                    variable: "RESULT_BACKEND",
                    message: format!(
                        "{:?} is not a result backend (use postgres, redis://host:port/db, \
                         rediss://… or rpc://)",
                        redact(other)
                    ),
                });
            }
        };
        let expires = match lookup("RESULT_EXPIRES_SECS") {
            None => DEFAULT_EXPIRES,
            Some(raw) => match raw.trim().parse::<u64>() {
                Ok(n) if (1..=315_360_000).contains(&n) => Duration::from_secs(n),
                _ => {
                    return Err(ResultConfigError {
                        variable: "RESULT_EXPIRES_SECS",
                        message: format!("expected whole seconds from 1 to 315360000, got {raw:?}"),
                    });
                }
            },
        };
        let max_rows = match lookup("RESULT_BATCH_MAX_ROWS") {
            None => BatchSettings::default().max_rows,
            Some(raw) => match raw.trim().parse::<usize>() {
                Ok(n) if (1..=10_000).contains(&n) => n,
                _ => {
                    return Err(ResultConfigError {
                        variable: "RESULT_BATCH_MAX_ROWS",
                        message: format!("expected a whole number from 1 to 10000, got {raw:?}"),
                    });
                }
            },
        };
        let linger = match lookup("RESULT_BATCH_LINGER_MS") {
            None => BatchSettings::default().linger,
            Some(raw) => match raw.trim().parse::<u64>() {
                Ok(n) if n <= 1000 => Duration::from_millis(n),
                _ => {
                    return Err(ResultConfigError {
                        variable: "RESULT_BATCH_LINGER_MS",
                        message: format!("expected milliseconds from 0 to 1000, got {raw:?}"),
                    });
                }
            },
        };
        Ok(ResultSettings {
            kind,
            batch: BatchSettings { max_rows, linger },
            expires,
        })
    }

    /// The configured backend: PostgreSQL over `store`, Redis (connected now), or rpc (replies
    /// published on a connection of its own to `broker`, connected now). An unreachable Redis or
    /// broker is an error naming `RESULT_BACKEND`.
    pub async fn build(
        &self,
        store: &Store,
        broker: &BrokerSettings,
    ) -> Result<Arc<dyn ResultBackend>, ResultConfigError> {
        let unreachable = |message: String| ResultConfigError {
            variable: "RESULT_BACKEND",
            message,
        };
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
    ) -> Result<Arc<dyn ResultBackend>, ResultConfigError> {
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

    fn read(vars: &[(&str, &str)]) -> Result<ResultSettings, ResultConfigError> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        ResultSettings::from_lookup(|name| {
            vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        })
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
