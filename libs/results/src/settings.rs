//! `RESULT_BACKEND` and the batch settings, read from the environment with defaults that work on
//! a laptop.

use std::sync::Arc;
use std::time::Duration;

use shopfds_broker::ResultBackend;
use shopfds_store::Store;

use crate::postgres::{BatchSettings, PostgresBackend};

/// Which backend keeps results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendKind {
    /// The service's PostgreSQL database (`DATABASE_URL`).
    Postgres,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultSettings {
    pub kind: BackendKind,
    pub batch: BatchSettings,
}

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
        }
    }
}

impl ResultSettings {
    pub fn from_env() -> Result<Self, ResultConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// `RESULT_BACKEND`: `postgres` (default; also `postgresql`, `database`, `db`: the database
    /// of `DATABASE_URL`). `RESULT_BATCH_MAX_ROWS` (500) and `RESULT_BATCH_LINGER_MS` (0) tune
    /// the PostgreSQL writer.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ResultConfigError> {
        let kind = match lookup("RESULT_BACKEND").as_deref().map(str::trim) {
            None | Some("" | "postgres" | "postgresql" | "database" | "db") => {
                BackendKind::Postgres
            }
            Some(other) => {
                return Err(ResultConfigError {
                    variable: "RESULT_BACKEND",
                    message: format!("{other:?} is not a result backend (use postgres)"),
                });
            }
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
        })
    }

    /// The configured backend, over `store` for PostgreSQL.
    pub fn build(&self, store: &Store) -> Arc<dyn ResultBackend> {
        match &self.kind {
            BackendKind::Postgres => Arc::new(PostgresBackend::new(store.clone(), self.batch)),
        }
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
    fn bad_values_name_their_variable() {
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
