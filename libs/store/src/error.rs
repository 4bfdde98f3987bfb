//! `StoreError`: every failure of the store, split so callers can tell "the database is down or
//! unreachable" (HTTP 503, retry later) from a bug or bad data.

use sqlx::migrate::MigrateError;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A setting could not be used; `variable` names the environment variable to fix.
    #[error("invalid {variable}: {message}")]
    Config {
        variable: &'static str,
        message: String,
    },
    /// A setting read by the one settings reader could not be used.
    #[error("invalid {0}")]
    Settings(#[from] shopfds_config::ConfigError),
    /// The database could not be reached (connection refused, pool timeout, server shutting down).
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// The database answered with an error.
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] MigrateError),
    /// A stored value that our own code could not have written (unknown task state, …).
    #[error("corrupt data in the store: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// True when the failure is about reaching the database rather than about the request: the
    /// API answers 503 and nothing was half-written.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Unavailable(_) => true,
            StoreError::Migrate(MigrateError::Execute(e)) => is_connection_error(e),
            _ => false,
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if is_connection_error(&e) {
            StoreError::Unavailable(e)
        } else {
            StoreError::Database(e)
        }
    }
}

/// SQLSTATEs that mean "this server cannot serve you right now", not "your statement is wrong".
fn is_unavailable_sqlstate(code: &str) -> bool {
    code.starts_with("08") // connection_exception class
        || matches!(
            code,
            "57P01" // admin_shutdown
                | "57P02" // crash_shutdown
                | "57P03" // cannot_connect_now (starting up, recovery)
                | "53300" // too_many_connections
                | "3D000" // invalid_catalog_name: the database is not there (yet)
        )
}

pub(crate) fn is_connection_error(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::BeginFailed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|c| is_unavailable_sqlstate(&c)),
        _ => false,
    }
}

/// The SQLSTATE of a database error, if it is one.
pub(crate) fn sqlstate(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    }
}
