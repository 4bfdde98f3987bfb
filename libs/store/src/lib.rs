//! `shopfds-store`: everything ShopFDS keeps in PostgreSQL. [`Store`] owns the connection pool's
//! life (connect, migrate, ping, close); the data is reached through one repository per
//! concern, each a cheap handle on the same pool in a module of its own, so a call such as
//! `store.orders().get(id)` leads to `orders.rs`:
//!
//! - [`orders`] (`store.orders()`): orders written together with their outgoing task messages,
//!   their PENDING task rows and the HTTP idempotency key, in one transaction (transactional
//!   outbox);
//! - [`idempotency`] (`store.idempotency()`): `Idempotency-Key`s scoped to a caller, the answer
//!   stored with each, and their purge;
//! - [`outbox`] (`store.outbox()`): a task message mapped to its outbox row and back, and the
//!   relay's store side: rows claimed, published through the caller's publisher, marked sent
//!   only after the confirm;
//! - [`results`] (`store.results()`): the Celery-style result store behind `GET /v1/tasks/{id}`;
//! - [`once`] (`store.once()`): once-only side effects, keyed by task id or a business key;
//! - [`chords`] (`store.chords()`): chord header parts counted once each, and the body
//!   published exactly once;
//! - [`fds`] (`store.fds()`): fraud decisions (`fds_results`);
//! - [`velocity`] (`store.velocity()`): the velocity counts of the fraud rules and the feed of
//!   new orders that keeps a replica's in-memory index in step;
//! - [`fds_batch`] (`store.fds_batch()`): the batch re-evaluation's reads and writes (inside a
//!   once-only transaction);
//! - [`threat_intel`] (`store.threat_intel()`): the stored versions of the threat-intelligence
//!   feed;
//! - [`sales`] (`store.sales()`): sales figures of a period for the sales reports, summed in SQL.
//!
//! Functions that take a caller's transaction or connection (to commit with a once-only record,
//! say) are free functions in their repository's module.

/// A repository: a cheap handle on the store's pool (cloning it clones an `Arc`), with the
/// methods of one concern in the module that declares it.
macro_rules! repository {
    ($(#[$attr:meta])* $name:ident) => {
        $(#[$attr])*
        #[derive(Clone, Debug)]
        pub struct $name {
            pool: sqlx::PgPool,
        }

        impl $name {
            pub(crate) fn new(pool: sqlx::PgPool) -> Self {
                $name { pool }
            }
        }
    };
}

pub mod activity_logs;
pub mod api_keys;
pub mod beat;
pub mod chords;
pub mod dlq;
pub mod error;
pub mod fds;
pub mod fds_batch;
pub mod idempotency;
pub mod once;
pub mod orders;
pub mod outbox;
pub mod rate_limits;
pub mod results;
pub mod revokes;
pub mod sales;
pub mod settings;
pub mod threat_intel;
pub mod tls;
pub mod velocity;

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};

pub use activity_logs::{ActivityLine, ActivityLogs, ArchiveBatch};
pub use api_keys::{ApiKeyRecord, ApiKeys, NewApiKey};
pub use beat::{Beat, ScheduleRow};
pub use chords::{ChordError, ChordPart, ChordProgress, ChordRecord, Chords};
pub use dlq::{DlqReplays, ReplayRecord};
pub use error::StoreError;
pub use fds::{FdsDecision, FdsResultRecord, FdsResults, FdsSource, NewFdsResult};
pub use fds_batch::{FdsBatch, OrderToEvaluate};
pub use idempotency::{CreateOutcome, IdempotencyKeys, IdempotencyRequest, StoredResponse};
pub use once::{Once, OnceGuard};
pub use orders::{NewOrder, NewOrderItem, OrderRecord, Orders};
pub use outbox::{OUTBOX_CHANNEL, Outbox, OutboxMessage, OutboxRow, PendingTask};
pub use rate_limits::{RateLimits, Slot};
pub use results::{Results, TaskRecord, TaskStateUpdate};
pub use revokes::RevokedTasks;
pub use sales::{DailySales, ProductSales, Sales, SalesData};
pub use settings::DatabaseSettings;
pub use sqlx;
pub use threat_intel::{SavedThreatIntel, ThreatIntel, ThreatIntelRecord};
pub use tls::DatabaseTls;
pub use velocity::{ORDERS_CHANNEL, Velocity, VelocityCounts, VelocityEntry, VelocityQuery};

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
    /// advisory lock. With `settings.migrate` false (`DATABASE_MIGRATE=false`) it runs none and
    /// instead fails with a [`StoreError::Config`] naming `DATABASE_MIGRATE` while any embedded
    /// migration is not applied yet (a migration Job has not run, or has not finished).
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
        if settings.migrate {
            store.migrate().await?;
            tracing::debug!(url = %settings.redacted_url(), "database connected and migrated");
        } else {
            store.check_migrated().await?;
            tracing::debug!(url = %settings.redacted_url(), "database connected, schema current");
        }
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

    /// Succeeds when every embedded migration is applied (successfully) in this database;
    /// otherwise a [`StoreError::Config`] naming `DATABASE_MIGRATE` and the first missing version.
    pub async fn check_migrated(&self) -> Result<(), StoreError> {
        let table: Option<String> =
            sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations')::text")
                .fetch_one(&self.pool)
                .await?;
        let applied: Vec<i64> = match table {
            Some(_) => {
                sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                    .fetch_all(&self.pool)
                    .await?
            }
            None => Vec::new(),
        };
        match MIGRATOR
            .iter()
            .find(|m| m.migration_type.is_up_migration() && !applied.contains(&m.version))
        {
            None => Ok(()),
            Some(missing) => Err(shopfds_config::ConfigError::new(
                "DATABASE_MIGRATE",
                format!(
                    "is false but migration {} ({}) is not applied to this database; run the \
                     migrations first (the manifests' migration Job: `beat-scheduler migrate`) \
                     or set DATABASE_MIGRATE=true",
                    missing.version, missing.description
                ),
            )
            .into()),
        }
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

/// The repositories: each a cheap handle on the pool, its methods in its own module.
impl Store {
    /// Orders, written with their outbox rows, task rows and idempotency key.
    pub fn orders(&self) -> Orders {
        Orders::new(self.pool.clone())
    }

    /// `Idempotency-Key`s per caller, with the answer stored for each.
    pub fn idempotency(&self) -> IdempotencyKeys {
        IdempotencyKeys::new(self.pool.clone())
    }

    /// The transactional outbox and the relay's store side.
    pub fn outbox(&self) -> Outbox {
        Outbox::new(self.pool.clone())
    }

    /// The result store (`task_results`).
    pub fn results(&self) -> Results {
        Results::new(self.pool.clone())
    }

    /// Once-only guards for side effects.
    pub fn once(&self) -> Once {
        Once::new(self.pool.clone())
    }

    /// Chords counted in PostgreSQL.
    pub fn chords(&self) -> Chords {
        Chords::new(self.pool.clone())
    }

    /// Fraud decisions (`fds_results`).
    pub fn fds(&self) -> FdsResults {
        FdsResults::new(self.pool.clone())
    }

    /// Velocity counts and the feed of new orders.
    pub fn velocity(&self) -> Velocity {
        Velocity::new(self.pool.clone())
    }

    /// The batch fraud evaluation's reads.
    pub fn fds_batch(&self) -> FdsBatch {
        FdsBatch::new(self.pool.clone())
    }

    /// The threat-intelligence feed's stored versions.
    pub fn threat_intel(&self) -> ThreatIntel {
        ThreatIntel::new(self.pool.clone())
    }

    /// Sales figures of a period, for the sales reports.
    pub fn sales(&self) -> Sales {
        Sales::new(self.pool.clone())
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
