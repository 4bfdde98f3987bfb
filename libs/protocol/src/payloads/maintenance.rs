//! Arguments of the maintenance tasks (queue `maintenance`, and `reprocess_failed_tasks` and
//! `health_check` on `default`).

use serde::{Deserialize, Deserializer, Serialize};

use crate::message::TaskArgs;

/// Logs older than this many days are archived when `archive_old_logs` is called without
/// `older_than_days` (the weekly beat entry is).
pub const DEFAULT_ARCHIVE_AFTER_DAYS: u32 = 90;

/// `archive_old_logs(older_than_days=90)`: archives, then deletes, the logs older than
/// `older_than_days` days (at least 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveOldLogs {
    #[serde(
        default = "default_archive_after_days",
        deserialize_with = "at_least_one_day"
    )]
    pub older_than_days: u32,
}

impl Default for ArchiveOldLogs {
    fn default() -> Self {
        ArchiveOldLogs {
            older_than_days: DEFAULT_ARCHIVE_AFTER_DAYS,
        }
    }
}

fn default_archive_after_days() -> u32 {
    DEFAULT_ARCHIVE_AFTER_DAYS
}

/// 0 would archive (and delete) everything, today's logs included: refused.
fn at_least_one_day<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    match u32::deserialize(d)? {
        0 => Err(serde::de::Error::custom("must be at least 1 day")),
        days => Ok(days),
    }
}

impl TaskArgs for ArchiveOldLogs {
    const PARAMS: &'static [&'static str] = &["older_than_days"];
    const REQUIRED: &'static [&'static str] = &[];
}

/// `reprocess_failed_tasks()`: takes no arguments.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReprocessFailedTasks {}

impl TaskArgs for ReprocessFailedTasks {
    const PARAMS: &'static [&'static str] = &[];
    const REQUIRED: &'static [&'static str] = &[];
}

/// `health_check()`: takes no arguments (the seed's 10-second beat entry).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {}

impl TaskArgs for HealthCheck {
    const PARAMS: &'static [&'static str] = &[];
    const REQUIRED: &'static [&'static str] = &[];
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::payloads::test_support::{bind, culprit, round_trips};

    #[test]
    fn archive_old_logs_defaults_to_90_days() {
        let beat: ArchiveOldLogs = bind(json!([]), json!({})).unwrap();
        assert_eq!(beat.older_than_days, 90);
        assert_eq!(beat, ArchiveOldLogs::default());
        let positional: ArchiveOldLogs = bind(json!([30]), json!({})).unwrap();
        assert_eq!(positional.older_than_days, 30);
        round_trips(&positional);
        for bad in [json!(0), json!(-1), json!("90"), json!(1.5)] {
            assert_eq!(
                culprit::<ArchiveOldLogs>(json!([]), json!({"older_than_days": bad})),
                "older_than_days"
            );
        }
    }

    #[test]
    fn reprocess_failed_tasks_takes_nothing() {
        let args: ReprocessFailedTasks = bind(json!([]), json!({})).unwrap();
        round_trips(&args);
        assert!(args.to_kwargs().is_empty());
        assert_eq!(
            culprit::<ReprocessFailedTasks>(json!([]), json!({"queue": "email"})),
            "queue"
        );
        assert_eq!(
            culprit::<ReprocessFailedTasks>(json!(["x"]), json!({})),
            "args"
        );
    }
}
