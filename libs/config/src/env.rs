//! [`Env`]: reads, parses and records configuration variables.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Display;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use crate::{ConfigError, Secret, SecretUrl};

/// Where variables come from: the process environment, or a map (tests, tools).
enum Source {
    Process,
    Map(BTreeMap<String, String>),
}

/// The settings reader. Every getter trims the value and treats an empty one as unset, names
/// the variable in its error, and records the variable's name ([`Env::variables`]).
pub struct Env {
    source: Source,
    read: Mutex<BTreeSet<String>>,
}

impl Default for Env {
    fn default() -> Self {
        Env::process()
    }
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Values may be secrets: only say where they come from.
        match self.source {
            Source::Process => f.write_str("Env(process)"),
            Source::Map(ref map) => write!(f, "Env({} variables)", map.len()),
        }
    }
}

impl Env {
    /// The process environment.
    pub fn process() -> Env {
        Env {
            source: Source::Process,
            read: Mutex::new(BTreeSet::new()),
        }
    }

    /// A fixed set of variables, nothing from the process (tests, `--help` tables).
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Env {
        Env {
            source: Source::Map(
                pairs
                    .into_iter()
                    .map(|(k, v)| (k.into(), v.into()))
                    .collect(),
            ),
            read: Mutex::new(BTreeSet::new()),
        }
    }

    /// Every variable asked for so far, sorted; a variable read under a pattern
    /// ([`Env::get_as`]) is listed by its pattern.
    pub fn variables(&self) -> Vec<String> {
        match self.read.lock() {
            Ok(read) => read.iter().cloned().collect(),
            Err(poisoned) => poisoned.into_inner().iter().cloned().collect(),
        }
    }

    fn record(&self, name: &str) {
        let mut read = match self.read.lock() {
            Ok(read) => read,
            Err(poisoned) => poisoned.into_inner(),
        };
        if !read.contains(name) {
            read.insert(name.to_owned());
        }
    }

    fn lookup(&self, name: &str) -> Option<String> {
        let value = match &self.source {
            Source::Process => std::env::var_os(name).map(|v| v.to_string_lossy().into_owned()),
            Source::Map(map) => map.get(name).cloned(),
        };
        value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
    }

    /// The trimmed value, `None` when unset or empty.
    pub fn get(&self, name: &str) -> Option<String> {
        self.record(name);
        self.lookup(name)
    }

    /// The value of `name`, recorded as `pattern` (a family of variables such as
    /// `WORKER_CONCURRENCY_<QUEUE>`, documented once).
    pub fn get_as(&self, name: &str, pattern: &str) -> Option<String> {
        self.record(pattern);
        self.lookup(name)
    }

    /// Whether `name` is set to a non-empty value.
    pub fn is_set(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// The value, or `default`.
    pub fn string(&self, name: &str, default: &str) -> String {
        self.get(name).unwrap_or_else(|| default.to_owned())
    }

    /// A secret (password, key, token); its value never appears in an error.
    pub fn secret(&self, name: &str) -> Option<Secret> {
        self.get(name).map(Secret::new)
    }

    /// A URL that may carry a password, or `default`; `schemes` lists the accepted
    /// `scheme://` prefixes (empty: any). The error shows the URL without its password.
    pub fn url(
        &self,
        name: &str,
        default: &str,
        schemes: &[&str],
    ) -> Result<SecretUrl, ConfigError> {
        let url = SecretUrl::new(self.string(name, default));
        if !schemes.is_empty()
            && !schemes
                .iter()
                .any(|scheme| url.expose().starts_with(&format!("{scheme}://")))
        {
            let expected: Vec<String> = schemes.iter().map(|s| format!("{s}://")).collect();
            return Err(ConfigError::new(
                name,
                format!("{url} must start with {}", expected.join(" or ")),
            ));
        }
        Ok(url)
    }

    /// Parses the value with `FromStr`, or `default` when unset.
    pub fn parse<T: FromStr>(&self, name: &str, default: T) -> Result<T, ConfigError>
    where
        T::Err: Display,
    {
        Ok(self.parse_optional(name)?.unwrap_or(default))
    }

    /// Parses the value with `FromStr`; `None` when unset.
    pub fn parse_optional<T: FromStr>(&self, name: &str) -> Result<Option<T>, ConfigError>
    where
        T::Err: Display,
    {
        self.get(name)
            .map(|v| {
                v.parse()
                    .map_err(|e: T::Err| ConfigError::new(name, format!("{v:?}: {e}")))
            })
            .transpose()
    }

    /// A whole number of at least 1, or `default`.
    pub fn positive<T>(&self, name: &str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr + PartialOrd + From<u8>,
        T::Err: Display,
    {
        let value = self.parse(name, default)?;
        if value < T::from(1) {
            return Err(ConfigError::new(name, "must be at least 1"));
        }
        Ok(value)
    }

    /// `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`), or `default`.
    pub fn flag(&self, name: &str, default: bool) -> Result<bool, ConfigError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(true),
                "false" | "0" | "no" | "off" => Ok(false),
                _ => Err(ConfigError::new(
                    name,
                    format!("{v:?} is not true or false"),
                )),
            },
        }
    }

    /// Whole seconds, or `default`.
    pub fn secs(&self, name: &str, default: Duration) -> Result<Duration, ConfigError> {
        Ok(self
            .parse_optional::<u64>(name)?
            .map_or(default, Duration::from_secs))
    }

    /// Whole milliseconds, or `default`.
    pub fn millis(&self, name: &str, default: Duration) -> Result<Duration, ConfigError> {
        Ok(self
            .parse_optional::<u64>(name)?
            .map_or(default, Duration::from_millis))
    }

    /// `host:port` (port 0 picks a free port), or `default`.
    pub fn addr(&self, name: &str, default: &str) -> Result<SocketAddr, ConfigError> {
        let value = self.string(name, default);
        value
            .parse()
            .map_err(|_| ConfigError::new(name, format!("{value:?} is not host:port")))
    }

    /// One of `choices` (compared case-insensitively), or `default` when unset.
    pub fn choice<T: Clone>(
        &self,
        name: &str,
        default: T,
        choices: &[(&str, T)],
    ) -> Result<T, ConfigError> {
        let Some(value) = self.get(name) else {
            return Ok(default);
        };
        choices
            .iter()
            .find(|(word, _)| word.eq_ignore_ascii_case(&value))
            .map(|(_, choice)| choice.clone())
            .ok_or_else(|| {
                let words: Vec<&str> = choices.iter().map(|(word, _)| *word).collect();
                ConfigError::new(
                    name,
                    format!("{value:?} is not one of {}", words.join(", ")),
                )
            })
    }

    /// A comma-separated list, items trimmed, empty items dropped; empty when unset.
    pub fn list(&self, name: &str) -> Vec<String> {
        self.get(name)
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|item| !item.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A path to a file that must exist and be readable; `None` when unset.
    pub fn file(&self, name: &str) -> Result<Option<PathBuf>, ConfigError> {
        let Some(value) = self.get(name) else {
            return Ok(None);
        };
        let path = PathBuf::from(&value);
        match std::fs::File::open(&path) {
            Ok(_) => Ok(Some(path)),
            Err(e) => Err(ConfigError::new(
                name,
                format!("cannot read {value:?}: {e}"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_and_empty_take_the_default() {
        let env = Env::from_pairs([("EMPTY", "  ")]);
        assert_eq!(env.parse("EMPTY", 7u32), Ok(7));
        assert_eq!(env.parse("UNSET", 8u32), Ok(8));
        assert_eq!(env.string("EMPTY", "d"), "d");
    }

    #[test]
    fn a_bad_value_names_the_variable_and_the_value() {
        let env = Env::from_pairs([("N", "many"), ("Z", "0"), ("A", "nowhere")]);
        let error = env.parse("N", 1u32).unwrap_err();
        assert_eq!(error.variable, "N");
        assert!(error.to_string().starts_with("N: \"many\""), "{error}");
        assert_eq!(
            env.positive("Z", 3usize).unwrap_err().to_string(),
            "Z: must be at least 1"
        );
        assert_eq!(
            env.addr("A", "127.0.0.1:1").unwrap_err().to_string(),
            "A: \"nowhere\" is not host:port"
        );
    }

    #[test]
    fn flags_choices_lists_and_durations() {
        let env = Env::from_pairs([
            ("F", "Yes"),
            ("G", "maybe"),
            ("C", "Quorum"),
            ("L", " a, ,b ,"),
            ("S", "3"),
        ]);
        assert_eq!(env.flag("F", false), Ok(true));
        assert!(env.flag("G", false).is_err());
        assert_eq!(env.choice("C", 0, &[("classic", 0), ("quorum", 1)]), Ok(1));
        assert_eq!(env.list("L"), vec!["a", "b"]);
        assert_eq!(env.secs("S", Duration::ZERO), Ok(Duration::from_secs(3)));
        assert_eq!(
            env.millis("S", Duration::ZERO),
            Ok(Duration::from_millis(3))
        );
    }

    #[test]
    fn a_url_error_hides_the_password() {
        let env = Env::from_pairs([("BROKER_URL", "http://u:hunter2@rabbit/")]);
        let error = env
            .url("BROKER_URL", "amqp://localhost", &["amqp", "amqps"])
            .unwrap_err();
        assert!(!error.to_string().contains("hunter2"), "{error}");
        assert!(error.to_string().contains("amqp://"), "{error}");
    }

    #[test]
    fn every_variable_read_is_recorded_once() {
        let env = Env::from_pairs([("B", "1")]);
        let _ = env.get("B");
        let _ = env.get("A");
        let _ = env.get_as("WORKER_CONCURRENCY_FDS", "WORKER_CONCURRENCY_<QUEUE>");
        let _ = env.get("B");
        assert_eq!(
            env.variables(),
            vec!["A", "B", "WORKER_CONCURRENCY_<QUEUE>"]
        );
    }

    #[test]
    fn a_missing_file_is_named() {
        let env = Env::from_pairs([("CA", "/nonexistent/ca.pem")]);
        let error = env.file("CA").unwrap_err();
        assert_eq!(error.variable, "CA");
        assert!(error.message.contains("/nonexistent/ca.pem"));
    }
}
