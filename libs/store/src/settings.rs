//! `DatabaseSettings`: where the database is and how big the pool is, read from the environment
//! with defaults that work on a laptop.

use std::fmt;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;

use shopfds_config::{ConfigError, Env, redact_url};

use crate::StoreError;
use crate::tls::DatabaseTls;

pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/shopfds";
pub const DEFAULT_MAX_CONNECTIONS: u32 = 10;
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseSettings {
    pub url: String,
    pub max_connections: u32,
    pub acquire_timeout: Duration,
    /// `DATABASE_CA_FILE`: the CA for `sslmode=verify-ca`/`verify-full` (see [`DatabaseTls`]).
    pub tls: DatabaseTls,
    /// `DATABASE_MIGRATE` (default true): [`crate::Store::connect`] runs the migrations. False
    /// where a migration Job runs them once (the Kubernetes manifests): the service then only
    /// checks that every migration it knows is applied, and fails its start naming the variable
    /// if not, so it never runs against an older schema.
    pub migrate: bool,
}

impl DatabaseSettings {
    /// `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/shopfds`),
    /// `DATABASE_MAX_CONNECTIONS` (10), `DATABASE_ACQUIRE_TIMEOUT_SECS` (5), `DATABASE_MIGRATE`
    /// (true), `DATABASE_CA_FILE` (see [`DatabaseTls`]). The error names the
    /// variable whose value does not parse, and never shows the URL's password.
    pub fn read(env: &Env) -> Result<Self, ConfigError> {
        let url = env.string("DATABASE_URL", DEFAULT_DATABASE_URL);
        parse_url(&url)?;
        let acquire_timeout = Duration::from_secs(env.positive(
            "DATABASE_ACQUIRE_TIMEOUT_SECS",
            DEFAULT_ACQUIRE_TIMEOUT.as_secs(),
        )?);
        let settings = Self {
            url,
            max_connections: env.positive("DATABASE_MAX_CONNECTIONS", DEFAULT_MAX_CONNECTIONS)?,
            acquire_timeout,
            tls: DatabaseTls::read(env)?,
            migrate: env.flag("DATABASE_MIGRATE", true)?,
        };
        // A CA file with an sslmode that checks nothing is refused now, not at the first connect.
        settings.tls.apply(parse_url(&settings.url)?)?;
        Ok(settings)
    }

    /// Settings for `url`, defaults for the rest.
    pub fn with_url(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            acquire_timeout: DEFAULT_ACQUIRE_TIMEOUT,
            tls: DatabaseTls::default(),
            migrate: true,
        }
    }

    /// The parsed URL with the TLS settings; the error names `DATABASE_URL` or
    /// `DATABASE_CA_FILE`.
    pub(crate) fn connect_options(&self) -> Result<PgConnectOptions, StoreError> {
        Ok(self.tls.apply(parse_url(&self.url)?)?)
    }

    /// The URL with its password replaced, for logs.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self::with_url(DEFAULT_DATABASE_URL)
    }
}

// Hand-written so a password in the URL never reaches a log line through `{:?}`.
impl fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("url", &self.redacted_url())
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("tls", &self.tls)
            .field("migrate", &self.migrate)
            .finish()
    }
}

fn parse_url(url: &str) -> Result<PgConnectOptions, ConfigError> {
    let config_error = |message: String| ConfigError::new("DATABASE_URL", message);
    // sqlx accepts any scheme; a mysql:// URL here is a deployment mistake worth naming early.
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(config_error(format!(
            "expected a postgres:// URL, got {:?}",
            redact_url(url)
        )));
    }
    // sqlx's parse errors quote no part of the URL.
    url.parse::<PgConnectOptions>()
        .map_err(|e| config_error(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(vars: &[(&str, &str)]) -> Env {
        Env::from_pairs(vars.iter().copied())
    }

    #[test]
    fn defaults_work_on_a_laptop() {
        let s = DatabaseSettings::read(&lookup(&[])).unwrap();
        assert_eq!(s, DatabaseSettings::default());
        assert_eq!(s.url, DEFAULT_DATABASE_URL);
        assert_eq!(s.max_connections, 10);
        assert_eq!(s.acquire_timeout, Duration::from_secs(5));
        assert!(s.migrate, "services migrate at start unless told not to");
    }

    #[test]
    fn variables_override_defaults() {
        let s = DatabaseSettings::read(&lookup(&[
            ("DATABASE_URL", "postgres://app:pw@db:5432/shop"),
            ("DATABASE_MAX_CONNECTIONS", "32"),
            ("DATABASE_ACQUIRE_TIMEOUT_SECS", "2"),
            ("DATABASE_MIGRATE", "false"),
        ]))
        .unwrap();
        assert!(!s.migrate);
        assert_eq!(s.url, "postgres://app:pw@db:5432/shop");
        assert_eq!(s.max_connections, 32);
        assert_eq!(s.acquire_timeout, Duration::from_secs(2));
    }

    #[test]
    fn errors_name_the_variable() {
        for (var, value) in [
            ("DATABASE_MAX_CONNECTIONS", "ten"),
            ("DATABASE_MAX_CONNECTIONS", "0"),
            ("DATABASE_ACQUIRE_TIMEOUT_SECS", "-1"),
            ("DATABASE_MIGRATE", "sometimes"),
            ("DATABASE_URL", "mysql://nope"),
            ("DATABASE_URL", "postgres://[::1"),
        ] {
            match DatabaseSettings::read(&lookup(&[(var, value)])) {
                Err(ConfigError { variable, .. }) => assert_eq!(variable, var),
                other => panic!("{var}={value}: expected a config error, got {other:?}"),
            }
        }
    }

    #[test]
    fn debug_output_hides_the_password() {
        let s = DatabaseSettings::with_url("postgres://app:s3cret@db:5432/shop");
        let shown = format!("{s:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("postgres://app:***@db:5432/shop"), "{shown}");
    }
}
