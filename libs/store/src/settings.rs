//! `DatabaseSettings`: where the database is and how big the pool is, read from the environment
//! with defaults that work on a laptop.

use std::fmt;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;

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
}

impl DatabaseSettings {
    /// `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/shopfds`),
    /// `DATABASE_MAX_CONNECTIONS` (10), `DATABASE_ACQUIRE_TIMEOUT_SECS` (5). The error names the
    /// variable whose value does not parse.
    pub fn from_env() -> Result<Self, StoreError> {
        let mut settings = Self::from_lookup(|name| {
            std::env::var_os(name).map(|v| v.to_string_lossy().into_owned())
        })?;
        settings.tls = DatabaseTls::read(&shopfds_config::Env::process())?;
        settings.connect_options()?;
        Ok(settings)
    }

    /// Like [`from_env`](Self::from_env) with any source of variables (tests, config files).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, StoreError> {
        let url = match lookup("DATABASE_URL") {
            Some(url) if !url.trim().is_empty() => {
                let url = url.trim().to_owned();
                parse_url(&url)?;
                url
            }
            _ => DEFAULT_DATABASE_URL.to_owned(),
        };
        let max_connections = match lookup("DATABASE_MAX_CONNECTIONS") {
            Some(raw) => match raw.trim().parse::<u32>() {
                Ok(n) if n > 0 => n,
                _ => {
                    return Err(StoreError::Config {
                        variable: "DATABASE_MAX_CONNECTIONS",
                        message: format!("expected a positive integer, got {raw:?}"),
                    });
                }
            },
            None => DEFAULT_MAX_CONNECTIONS,
        };
        let acquire_timeout = match lookup("DATABASE_ACQUIRE_TIMEOUT_SECS") {
            Some(raw) => match raw.trim().parse::<u64>() {
                Ok(n) if n > 0 => Duration::from_secs(n),
                _ => {
                    return Err(StoreError::Config {
                        variable: "DATABASE_ACQUIRE_TIMEOUT_SECS",
                        message: format!("expected a positive number of seconds, got {raw:?}"),
                    });
                }
            },
            None => DEFAULT_ACQUIRE_TIMEOUT,
        };
        Ok(Self {
            url,
            max_connections,
            acquire_timeout,
            tls: DatabaseTls::default(),
        })
    }

    /// Settings for `url`, defaults for the rest.
    pub fn with_url(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            acquire_timeout: DEFAULT_ACQUIRE_TIMEOUT,
            tls: DatabaseTls::default(),
        }
    }

    /// The parsed URL with the TLS settings; the error names `DATABASE_URL` or
    /// `DATABASE_CA_FILE`.
    pub(crate) fn connect_options(&self) -> Result<PgConnectOptions, StoreError> {
        Ok(self.tls.apply(parse_url(&self.url)?)?)
    }

    /// The URL with its password replaced, for logs.
    pub fn redacted_url(&self) -> String {
        redact(&self.url)
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
            .finish()
    }
}

fn parse_url(url: &str) -> Result<PgConnectOptions, StoreError> {
    let config_error = |message: String| StoreError::Config {
        variable: "DATABASE_URL",
        message,
    };
    // sqlx accepts any scheme; a mysql:// URL here is a deployment mistake worth naming early.
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(config_error(format!(
            "expected a postgres:// URL, got {:?}",
            redact(url)
        )));
    }
    url.parse::<PgConnectOptions>()
        .map_err(|e| config_error(e.to_string()))
}

fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    match rest[..at].find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &url[..scheme_end],
            &rest[..colon],
            &rest[at..]
        ),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn defaults_work_on_a_laptop() {
        let s = DatabaseSettings::from_lookup(lookup(&[])).unwrap();
        assert_eq!(s, DatabaseSettings::default());
        assert_eq!(s.url, DEFAULT_DATABASE_URL);
        assert_eq!(s.max_connections, 10);
        assert_eq!(s.acquire_timeout, Duration::from_secs(5));
    }

    #[test]
    fn variables_override_defaults() {
        let s = DatabaseSettings::from_lookup(lookup(&[
            ("DATABASE_URL", "postgres://app:pw@db:5432/shop"),
            ("DATABASE_MAX_CONNECTIONS", "32"),
            ("DATABASE_ACQUIRE_TIMEOUT_SECS", "2"),
        ]))
        .unwrap();
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
            ("DATABASE_URL", "mysql://nope"),
            ("DATABASE_URL", "postgres://[::1"),
        ] {
            match DatabaseSettings::from_lookup(lookup(&[(var, value)])) {
                Err(StoreError::Config { variable, .. }) => assert_eq!(variable, var),
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
        assert_eq!(
            redact("postgres://postgres@127.0.0.1/x"),
            "postgres://postgres@127.0.0.1/x"
        );
    }
}
