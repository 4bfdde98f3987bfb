//! What a contender's worker process writes when it stops: how many bench tasks it ran and the
//! wall-clock times (seconds since the Unix epoch) of the first and the last. Our worker
//! (`shopfds-bench-worker`) and the stock Celery app (`interop/python/bench_celery.py`, one file
//! per pool process) write the same JSON object, `{"count": n, "first": t0, "last": t1}`, to a
//! file named `<pid>.json` in the directory the harness gives them.
//!
//! The drain of a worker is timed from the first task's start to the last task's end, inside the
//! worker, so the time a worker needs to start (Python imports, connecting) is not counted.

use std::path::Path;

use anyhow::{Context, bail};
use serde_json::{Value, json};

/// One process's tasks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tally {
    pub count: u64,
    pub first: f64,
    pub last: f64,
}

impl Tally {
    pub fn to_json(self) -> Value {
        json!({"count": self.count, "first": self.first, "last": self.last})
    }

    fn from_json(value: &Value) -> Option<Tally> {
        Some(Tally {
            count: value.get("count")?.as_u64()?,
            first: value.get("first")?.as_f64()?,
            last: value.get("last")?.as_f64()?,
        })
    }

    /// The tallies of every process of one run, merged: counts summed, the earliest first and
    /// the latest last. An error if the directory holds none or a file is not a tally.
    pub fn read_dir(dir: &Path) -> anyhow::Result<Tally> {
        let mut merged: Option<Tally> = None;
        for entry in
            std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?
        {
            let path = entry?.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let value: Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON: {text:?}", path.display()))?;
            let tally = Tally::from_json(&value)
                .with_context(|| format!("{} is not a tally: {text:?}", path.display()))?;
            merged = Some(match merged {
                None => tally,
                Some(m) => Tally {
                    count: m.count + tally.count,
                    first: m.first.min(tally.first),
                    last: m.last.max(tally.last),
                },
            });
        }
        match merged {
            Some(tally) => Ok(tally),
            None => bail!("no worker process wrote a tally into {}", dir.display()),
        }
    }
}
