//! A fresh, empty PostgreSQL database per test on the shared server (127.0.0.1:5432, user
//! postgres, trust auth), so tests can migrate and write the same tables in parallel.

use anyhow::Context;
use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection};

const SERVER_URL: &str = "postgres://postgres@127.0.0.1:5432";

/// A database `shopfds_test_<uuid>`, dropped `WITH (FORCE)` on drop (open connections are
/// terminated).
#[derive(Debug)]
pub struct TestDatabase {
    pub name: String,
}

impl TestDatabase {
    /// Creates the database (empty: no migrations are run here).
    pub async fn create() -> anyhow::Result<TestDatabase> {
        let name = format!("shopfds_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = admin_connection().await?;
        // The name is ours (letters, digits, underscore), so formatting it into SQL is safe.
        sqlx::raw_sql(AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)))
            .execute(&mut admin)
            .await
            .with_context(|| format!("CREATE DATABASE {name}"))?;
        let _ = admin.close().await;
        Ok(TestDatabase { name })
    }

    /// `postgres://postgres@127.0.0.1:5432/<name>`.
    pub fn url(&self) -> String {
        format!("{SERVER_URL}/{}", self.name)
    }

    /// This database reached through `127.0.0.1:<port>` (a [`crate::net::TcpProxy`] in front of
    /// the server).
    pub fn url_via(&self, port: u16) -> String {
        format!("postgres://postgres@127.0.0.1:{port}/{}", self.name)
    }

    /// A small connection pool to this database.
    pub async fn pool(&self) -> anyhow::Result<PgPool> {
        PgPoolOptions::new()
            .max_connections(5)
            .connect(&self.url())
            .await
            .with_context(|| format!("cannot connect to {}", self.url()))
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop may run inside a tokio runtime (where blocking on another one panics) or outside
        // any; a thread with its own runtime works in both.
        let name = self.name.clone();
        let dropped = std::thread::scope(|scope| {
            scope
                .spawn(move || -> anyhow::Result<()> {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    runtime.block_on(async {
                        let mut admin = admin_connection().await?;
                        sqlx::raw_sql(AssertSqlSafe(format!(
                            r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#
                        )))
                        .execute(&mut admin)
                        .await?;
                        let _ = admin.close().await;
                        Ok(())
                    })
                })
                .join()
        });
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                eprintln!(
                    "shopfds-testkit: cannot drop database {}: {err:#}",
                    self.name
                )
            }
            Err(_) => eprintln!("shopfds-testkit: dropping database {} panicked", self.name),
        }
    }
}

async fn admin_connection() -> anyhow::Result<PgConnection> {
    let url = format!("{SERVER_URL}/postgres");
    PgConnection::connect(&url).await.with_context(|| {
        format!("cannot connect to {url} (is PostgreSQL up? see scripts/ensure-services.sh)")
    })
}
