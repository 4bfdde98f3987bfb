//! Settings of the queue tasks, from the environment, validated at start (the error names the
//! variable).

use std::time::Duration;

use anyhow::Context;

/// Orders per `batch_fds_evaluation(transaction_ids=[…])` chunk unless `FDS_BATCH_CHUNK_SIZE`
/// says otherwise.
pub const DEFAULT_BATCH_CHUNK_SIZE: usize = 100;

#[derive(Debug, Clone, PartialEq)]
pub struct TasksSettings {
    /// `FDS_BATCH_CHUNK_SIZE`: orders per fanned-out chunk of the nightly batch. Default 100.
    pub batch_chunk_size: usize,
    /// `THREAT_INTEL_URL`: the feed `update_threat_intelligence` fetches when called without
    /// `url`. Unset: the task needs its `url` argument.
    pub threat_intel_url: Option<String>,
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
    pub fn from_env() -> anyhow::Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// From any variable source (tests pass a map).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let defaults = TasksSettings::default();
        let var = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let positive = |name: &str, default: u64| -> anyhow::Result<u64> {
            match var(name) {
                Some(v) => match v.trim().parse::<u64>() {
                    Ok(n) if n > 0 => Ok(n),
                    _ => anyhow::bail!("{name}: {v:?} is not a positive integer"),
                },
                None => Ok(default),
            }
        };
        let threat_intel_url = match var("THREAT_INTEL_URL") {
            Some(url) => {
                let url = url.trim().to_owned();
                reqwest::Url::parse(&url)
                    .ok()
                    .filter(|u| matches!(u.scheme(), "http" | "https"))
                    .with_context(|| format!("THREAT_INTEL_URL: {url:?} is not an http(s) URL"))?;
                Some(url)
            }
            None => None,
        };
        let host = lookup("HOSTNAME")
            .filter(|h| !h.trim().is_empty())
            .unwrap_or_else(|| "localhost".to_owned());
        Ok(TasksSettings {
            batch_chunk_size: usize::try_from(positive(
                "FDS_BATCH_CHUNK_SIZE",
                defaults.batch_chunk_size as u64,
            )?)
            .context("FDS_BATCH_CHUNK_SIZE: too large")?,
            threat_intel_url,
            threat_intel_timeout: Duration::from_secs(positive(
                "THREAT_INTEL_TIMEOUT_SECS",
                defaults.threat_intel_timeout.as_secs(),
            )?),
            threat_intel_reload: Duration::from_secs(positive(
                "THREAT_INTEL_RELOAD_SECS",
                defaults.threat_intel_reload.as_secs(),
            )?),
            worker_name: format!("{}@{}", crate::config::SERVICE, host.trim()),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    #[test]
    fn defaults_work_on_a_laptop() {
        let s = TasksSettings::from_lookup(lookup(&[])).unwrap();
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
            match TasksSettings::from_lookup(lookup(&[(name, value)])) {
                Ok(s) => panic!("{name}={value} accepted: {s:?}"),
                Err(e) => assert!(format!("{e:#}").contains(name), "{name}: {e:#}"),
            }
        }
    }

    #[test]
    fn the_worker_name_follows_hostname() {
        let s = TasksSettings::from_lookup(lookup(&[
            ("HOSTNAME", "fds-7f9c"),
            ("THREAT_INTEL_URL", "https://intel.example/feed.json"),
        ]))
        .unwrap();
        assert_eq!(s.worker_name, "fds-worker@fds-7f9c");
        assert_eq!(
            s.threat_intel_url.as_deref(),
            Some("https://intel.example/feed.json")
        );
    }
}
