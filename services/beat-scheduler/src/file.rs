//! The schedule file (`schedules.toml` beside this crate, built in; `BEAT_SCHEDULE_FILE` to read
//! another): the schedules seeded into PostgreSQL at start. Each is checked here (its cron
//! expression parses, its task is one of ours, its queue is a work queue), so a bad file stops
//! the scheduler at start naming the schedule.

use serde::Deserialize;
use serde_json::{Map, Value};
use shopfds_protocol::{WORK_QUEUES, tasks};
use shopfds_store::ScheduleRow;

use crate::schedule::Schedule;

/// The seed's schedules, checked in.
pub const BUILT_IN: &str = include_str!("../schedules.toml");

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    schedule: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    task: String,
    cron: Option<String>,
    every_secs: Option<i32>,
    #[serde(default)]
    kwargs: Map<String, Value>,
    queue: Option<String>,
    #[serde(default = "skip")]
    missed: String,
    #[serde(default = "yes")]
    enabled: bool,
}

fn skip() -> String {
    "skip".to_owned()
}

fn yes() -> bool {
    true
}

/// The file's schedules as rows, each checked; the error names the schedule.
pub fn parse(text: &str) -> Result<Vec<ScheduleRow>, String> {
    let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
    let mut rows: Vec<ScheduleRow> = Vec::with_capacity(file.schedule.len());
    for entry in file.schedule {
        if rows.iter().any(|r| r.name == entry.name) {
            return Err(format!("schedule {:?} is defined twice", entry.name));
        }
        let row = row(
            entry.name,
            entry.task,
            entry.cron,
            entry.every_secs,
            entry.kwargs,
            entry.queue,
            entry.missed,
            entry.enabled,
        )?;
        rows.push(row);
    }
    Ok(rows)
}

/// A schedule row from its parts, checked as the file's are (the CLI's `add` uses it too).
#[allow(clippy::too_many_arguments)]
pub fn row(
    name: String,
    task: String,
    cron: Option<String>,
    every_secs: Option<i32>,
    kwargs: Map<String, Value>,
    queue: Option<String>,
    missed: String,
    enabled: bool,
) -> Result<ScheduleRow, String> {
    if name.trim().is_empty() {
        return Err("a schedule needs a name".to_owned());
    }
    if !tasks::ALL.contains(&task.as_str()) {
        return Err(format!(
            "schedule {name:?}: unknown task {task:?} (one of {})",
            tasks::ALL.join(", ")
        ));
    }
    if let Some(signature) = shopfds_protocol::task_signature(&task) {
        if let Some(unknown) = kwargs
            .keys()
            .find(|k| !signature.params.contains(&k.as_str()))
        {
            return Err(format!(
                "schedule {name:?}: {task} takes no argument {unknown:?} (it takes {})",
                signature.params.join(", ")
            ));
        }
        if let Some(missing) = signature
            .required
            .iter()
            .find(|p| !kwargs.contains_key(**p))
        {
            return Err(format!(
                "schedule {name:?}: {task} needs the argument {missing:?}"
            ));
        }
    }
    let queue = queue.unwrap_or_else(|| tasks::queue_for(&task).to_owned());
    if !WORK_QUEUES.contains(&queue.as_str()) {
        return Err(format!(
            "schedule {name:?}: queue {queue:?} is not a work queue ({})",
            WORK_QUEUES.join(", ")
        ));
    }
    let row = ScheduleRow {
        name,
        task,
        cron,
        every_secs,
        kwargs: Value::Object(kwargs),
        queue,
        missed,
        enabled,
        source: "file".to_owned(),
    };
    Schedule::from_row(&row)?;
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_file_has_the_seeds_five_schedules() {
        let rows = parse(BUILT_IN).unwrap();
        let summary: Vec<(&str, Option<&str>, Option<i32>, &str)> = rows
            .iter()
            .map(|r| {
                (
                    r.task.as_str(),
                    r.cron.as_deref(),
                    r.every_secs,
                    r.queue.as_str(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("batch_fds_evaluation", Some("0 0 * * *"), None, "fds"),
                ("archive_old_logs", Some("0 0 * * 0"), None, "maintenance"),
                (
                    "update_threat_intelligence",
                    Some("30 * * * *"),
                    None,
                    "fds"
                ),
                (
                    "generate_daily_sales_report",
                    Some("0 9 * * *"),
                    None,
                    "reports"
                ),
                ("health_check", None, Some(10), "default"),
            ]
        );
        assert_eq!(rows[1].kwargs["older_than_days"], 90);
    }

    #[test]
    fn a_bad_file_is_refused_naming_the_schedule() {
        for (text, expected) in [
            (
                "[[schedule]]\nname = \"a\"\ntask = \"nope\"\nevery_secs = 5",
                "unknown task",
            ),
            (
                "[[schedule]]\nname = \"a\"\ntask = \"health_check\"\ncron = \"* *\"",
                "five",
            ),
            (
                "[[schedule]]\nname = \"a\"\ntask = \"health_check\"\nevery_secs = 5\nqueue = \"x\"",
                "work queue",
            ),
            (
                "[[schedule]]\nname = \"a\"\ntask = \"health_check\"\nevery_secs = 5\nmissed = \"all\"",
                "skip or latest",
            ),
            (
                "[[schedule]]\nname = \"a\"\ntask = \"health_check\"\nevery_secs = 5\n[[schedule]]\nname = \"a\"\ntask = \"health_check\"\nevery_secs = 6",
                "twice",
            ),
            (
                "[[schedule]]\nname = \"a\"\ntask = \"health_check\"\nevery_secs = 5\nevery = 3",
                "unknown field",
            ),
            (
                "[[schedule]]\nname = \"a\"\ntask = \"archive_old_logs\"\nevery_secs = 5\nkwargs = { days = 3 }",
                "takes no argument \"days\"",
            ),
            (
                "[[schedule]]\nname = \"a\"\ntask = \"evaluate_transaction\"\nevery_secs = 5",
                "needs the argument \"order_id\"",
            ),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }
}
