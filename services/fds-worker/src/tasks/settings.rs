//! Settings of the queue tasks, from the environment, validated at start (the error names the
//! variable).

use std::time::Duration;

use shopfds_service::{ConfigError, Env, SecretUrl};

/// Orders per `batch_fds_evaluation(transaction_ids=[…])` chunk unless `FDS_BATCH_CHUNK_SIZE`
/// says otherwise.
pub const DEFAULT_BATCH_CHUNK_SIZE: usize = 100;

#[derive(Debug, Clone, PartialEq)]
pub struct TasksSettings {
    /// `FDS_BATCH_CHUNK_SIZE`: orders per fanned-out chunk of the nightly batch. Default 100.
    pub batch_chunk_size: usize,
    /// `THREAT_INTEL_URL`: the feed `update_threat_intelligence` fetches when called without
    /// `url`. Unset: the task needs its `url` argument. Logged without credentials.
    pub threat_intel_url: Option<SecretUrl>,
    /// `THREAT_INTEL_TIMEOUT_SECS`: the whole feed request (connect, headers, body). Default 30.
    pub threat_intel_timeout: Duration,
    /// `THREAT_INTEL_RELOAD_SECS`: how often every replica checks the database for a newer feed
    /// version. Default 30.
    pub threat_intel_reload: Duration,
    /// Shown in the results of chunk tasks, so an operator sees which replica ran which chunk:
    /// `fds-worker@$HOSTNAME`, as the worker names itself.
    pub worker_name: String,
}

impl Default for TasksSettings {
    fn default() -> Self {
        TasksSettings {
            batch_chunk_size: DEFAULT_BATCH_CHUNK_SIZE,
            threat_intel_url: None,
            threat_intel_timeout: Duration::from_secs(30),
            threat_intel_reload: Duration::from_secs(30),
            worker_name: format!("{}@localhost", crate::config::SERVICE),
        }
    }
}

impl TasksSettings {
    /// `FDS_BATCH_CHUNK_SIZE`, `THREAT_INTEL_URL`, `THREAT_INTEL_TIMEOUT_SECS`,
    /// `THREAT_INTEL_RELOAD_SECS`, `HOSTNAME`.
    pub fn read(env: &Env) -> Result<Self, ConfigError> {
        let defaults = TasksSettings::default();
        let threat_intel_url = env.get("THREAT_INTEL_URL");
        if let Some(url) = &threat_intel_url
            && !reqwest::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
        {
            return Err(ConfigError::new(
                "THREAT_INTEL_URL",
                format!("{} is not an http(s) URL", SecretUrl::new(url.as_str())),
            ));
        }
        Ok(TasksSettings {
            batch_chunk_size: env.positive("FDS_BATCH_CHUNK_SIZE", defaults.batch_chunk_size)?,
            threat_intel_url: threat_intel_url.map(SecretUrl::new),
            threat_intel_timeout: Duration::from_secs(env.positive(
                "THREAT_INTEL_TIMEOUT_SECS",
                defaults.threat_intel_timeout.as_secs(),
            )?),
            threat_intel_reload: Duration::from_secs(env.positive(
                "THREAT_INTEL_RELOAD_SECS",
                defaults.threat_intel_reload.as_secs(),
            )?),
            worker_name: format!(
                "{}@{}",
                crate::config::SERVICE,
                env.string("HOSTNAME", "localhost")
            ),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn lookup(vars: &[(&str, &str)]) -> Env {
        Env::from_pairs(vars.iter().copied())
    }

    #[test]
    fn defaults_work_on_a_laptop() {
        let s = TasksSettings::read(&lookup(&[])).unwrap();
        assert_eq!(s.batch_chunk_size, 100);
        assert_eq!(s.threat_intel_url, None);
        assert_eq!(s.threat_intel_reload, Duration::from_secs(30));
        assert_eq!(s.worker_name, "fds-worker@localhost");
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        for (name, value) in [
            ("FDS_BATCH_CHUNK_SIZE", "0"),
            ("FDS_BATCH_CHUNK_SIZE", "many"),
            ("THREAT_INTEL_URL", "ftp://feed.example/intel.json"),
            ("THREAT_INTEL_URL", "not a url"),
            ("THREAT_INTEL_RELOAD_SECS", "-1"),
            ("THREAT_INTEL_TIMEOUT_SECS", "0"),
        ] {
            match TasksSettings::read(&lookup(&[(name, value)])) {
                Ok(s) => panic!("{name}={value} accepted: {s:?}"),
                Err(e) => assert!(format!("{e:#}").contains(name), "{name}: {e:#}"),
            }
        }
    }

    #[test]
    fn the_worker_name_follows_hostname() {
        let s = TasksSettings::read(&lookup(&[
            ("HOSTNAME", "fds-7f9c"),
            ("THREAT_INTEL_URL", "https://intel.example/feed.json"),
        ]))
        .unwrap();
        assert_eq!(s.worker_name, "fds-worker@fds-7f9c");
        assert_eq!(
            s.threat_intel_url.as_ref().map(SecretUrl::expose),
            Some("https://intel.example/feed.json")
        );
    }
}
