//! Hot reload of the rules file: its modification time and size are polled every
//! `FDS_RULES_RELOAD_SECS`; on a change the file is parsed and validated, and only a valid file
//! replaces the rules in force. An invalid or unreadable file is logged (once per change) and the
//! old rules stay.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{Engine, RulesConfig};

/// What identifies one version of the file on disk without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
}

fn stamp(path: &std::path::Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp {
        modified: meta.modified().ok(),
        len: meta.len(),
    })
}

/// Polls `path` every `every` until `shutdown`, swapping valid new rules into `engine`.
///
/// The first poll reads the file once whatever its stamp, so a change made between building
/// `engine` and starting the watcher is not missed; the version hash keeps an unchanged file
/// from being swapped in again.
pub fn watch_rules(
    engine: Arc<Engine>,
    path: PathBuf,
    every: Duration,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        // `None`: not looked at yet.
        let mut seen: Option<Option<Stamp>> = None;
        let mut ticker = tokio::time::interval(every.max(Duration::from_millis(10)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let now = stamp(&path);
            if seen == Some(now) {
                continue;
            }
            seen = Some(now);
            let loaded = {
                let path = path.clone();
                tokio::task::spawn_blocking(move || RulesConfig::load(&path)).await
            };
            match loaded {
                Ok(Ok((config, version))) => {
                    if engine.rules().version != version {
                        engine.replace_rules(config, version);
                    }
                }
                Ok(Err(e)) => tracing::error!(
                    path = %path.display(),
                    error = %e,
                    rules_version = %engine.rules().version,
                    "rules file refused; the rules in force stay"
                ),
                Err(e) => tracing::error!(error = %e, "rules reload task failed"),
            }
        }
    })
}
