//! `shopfds-store`: everything ShopFDS keeps in PostgreSQL. The connection pool and embedded
//! migrations live here; the repositories are split by concern:
//!
//! - [`orders`]: orders written together with their outgoing task messages and the HTTP
//!   idempotency key, in one transaction (transactional outbox);
//! - [`outbox`]: the relay step that publishes outbox rows and marks them sent after the confirm;
//! - [`results`]: the Celery-style result store behind `GET /v1/tasks/{id}`;
//! - [`once`]: once-only side effects, keyed by task id or a business key;
//! - [`chords`]: chord header parts counted once each, and the body published exactly once;
//! - `fds`: fraud decisions (`fds_results`) and the velocity counts of the fraud rules;
//! - [`fds_batch`]: the batch re-evaluation's reads and writes (inside a once-only transaction)
//!   and the stored versions of the threat-intelligence feed.

pub mod api_keys;
pub mod chords;
pub mod error;
mod fds;
pub mod fds_batch;
pub mod once;
pub mod orders;
pub mod outbox;
pub mod results;
pub mod settings;

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};

pub use api_keys::{ApiKeyRecord, ApiKeys, NewApiKey};
pub use chords::{ChordError, ChordPart, ChordProgress, ChordRecord};
pub use error::StoreError;
pub use fds::{
    FdsDecision, FdsResultRecord, FdsSource, NewFdsResult, ORDERS_CHANNEL, VelocityCounts,
    VelocityEntry, VelocityQuery,
};
pub use fds_batch::{OrderToEvaluate, SavedThreatIntel, ThreatIntelRecord};
pub use once::OnceGuard;
pub use orders::{
    CreateOutcome, IdempotencyRequest, NewOrder, NewOrderItem, OrderRecord, StoredResponse,
};
pub use outbox::{OUTBOX_CHANNEL, OutboxMessage, OutboxRow, PendingTask};
pub use results::{TaskRecord, TaskStateUpdate};
pub use settings::DatabaseSettings;
pub use sqlx;

/// The migrations compiled into the binary, so a service never depends on files at run time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Handle to the database: cheap to clone, shares one pool.
#[derive(Clone, Debug)]
pub struct Store {
    pool: PgPool,
}

impl Store {
    /// Creates the database if it does not exist (through the `postgres` maintenance database;
    /// losing a race with another process creating it is fine), connects a pool and runs the
    /// embedded migrations. Concurrent starts are safe: sqlx serializes migrations with an
    /// advisory lock.
    pub async fn connect(settings: &DatabaseSettings) -> Result<Store, StoreError> {
        let options = settings.connect_options()?;
        let pool = match pool_options(settings).connect_with(options.clone()).await {
            Ok(pool) => pool,
            Err(e) if error::sqlstate(&e).as_deref() == Some("3D000") => {
                create_database(&options).await?;
                pool_options(settings).connect_with(options).await?
            }
            Err(e) => return Err(e.into()),
        };
        let store = Store { pool };
        store.migrate().await?;
        tracing::debug!(url = %settings.redacted_url(), "database connected and migrated");
        Ok(store)
    }

    /// A lazy pool: no connection attempt and no migrations, for a service that must start (and
    /// answer `/healthz`) while the database is down.
    pub fn connect_lazy(settings: &DatabaseSettings) -> Result<Store, StoreError> {
        let options = settings.connect_options()?;
        Ok(Store {
            pool: pool_options(settings).connect_lazy_with(options),
        })
    }

    /// Wraps an existing pool (its owner is responsible for migrations).
    pub fn from_pool(pool: PgPool) -> Store {
        Store { pool }
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// `SELECT 1`: for `/readyz`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Closes the pool, waiting up to [`CLOSE_TIMEOUT`] for checked-out connections to come
    /// back. A connection still busy then (a statement hung on an unreachable server, whose
    /// socket would otherwise wait out the kernel's TCP timeout, many minutes) is left to the
    /// process exit, so a stopping service never hangs on its database.
    pub async fn close(&self) {
        if tokio::time::timeout(CLOSE_TIMEOUT, self.pool.close())
            .await
            .is_err()
        {
            tracing::warn!(
                busy = self.pool.size(),
                "database connections still busy at shutdown; closing without them"
            );
        }
    }
}

/// How long [`Store::close`] waits for busy connections.
pub const CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

fn pool_options(settings: &DatabaseSettings) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.acquire_timeout)
}

/// `CREATE DATABASE` for the database named in `options`, from the maintenance database.
async fn create_database(options: &PgConnectOptions) -> Result<(), StoreError> {
    // Without a database in the URL PostgreSQL uses the user name, and so do we.
    let name = options
        .get_database()
        .unwrap_or(options.get_username())
        .to_owned();
    let mut conn = PgConnection::connect_with(&options.clone().database("postgres")).await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut conn)
            .await?;
    if !exists {
        let sql = format!("CREATE DATABASE {}", quote_ident(&name));
        match sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
        {
            Ok(_) => tracing::info!(database = %name, "created database"),
            // Another process created it between our check and our CREATE: duplicate_database,
            // or a unique violation on pg_database when both CREATEs ran at the same time.
            Err(e) if matches!(error::sqlstate(&e).as_deref(), Some("42P04" | "23505")) => {}
            Err(e) => {
                let _ = conn.close().await;
                return Err(e.into());
            }
        }
    }
    let _ = conn.close().await;
    Ok(())
}

/// A PostgreSQL quoted identifier: `"` doubled inside double quotes.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("shopfds"), "\"shopfds\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
