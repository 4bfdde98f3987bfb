//! `beat-scheduler list` and `beat-scheduler schedules …`: the schedules from the command line,
//! on the database of `DATABASE_URL`. A change takes effect within a tick on every running
//! replica (they read the table each tick); no restart.
//!
//! - `list` prints each schedule (task, when, queue, missed-run policy, enabled, where it came
//!   from) with its next five run times in `BEAT_TIMEZONE`;
//! - `schedules add NAME --task TASK (--cron "EXPR" | --every SECS) [--kwargs JSON]
//!   [--queue Q] [--missed skip|latest] [--paused]` adds or replaces one (it is then a person's,
//!   no longer updated from the schedule file);
//! - `schedules pause NAME`, `schedules resume NAME`, `schedules remove NAME`;
//! - `migrate` applies the database migrations (whatever `DATABASE_MIGRATE` says) and exits:
//!   the Kubernetes manifests' migration Job, so the services can start with
//!   `DATABASE_MIGRATE=false` instead of all migrating at once.

use anyhow::{Context, bail};
use chrono::Utc;
use chrono_tz::Tz;
use serde_json::{Map, Value};
use shopfds_service::Env;
use shopfds_store::{DatabaseSettings, Store};

use crate::schedule::Schedule;

const USAGE: &str = "usage:
  beat-scheduler list                                   schedules and their next five runs
  beat-scheduler schedules add NAME --task TASK (--cron \"M H DoM Mon DoW\" | --every SECS)
                          [--kwargs JSON] [--queue QUEUE] [--missed skip|latest] [--paused]
  beat-scheduler schedules pause NAME
  beat-scheduler schedules resume NAME
  beat-scheduler schedules remove NAME
  beat-scheduler migrate                                apply the database migrations, exit";

/// The CLI as a process: exit 0, or 1 with the error on stderr.
pub fn main(args: &[String]) -> std::process::ExitCode {
    shopfds_service::command("beat-scheduler", run(args, &Env::process()))
}

/// Runs the CLI with `env`; what it prints.
pub async fn run(args: &[String], env: &Env) -> anyhow::Result<String> {
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut settings = DatabaseSettings::read(env)?;
    if words == ["migrate"] {
        settings.migrate = true;
    }
    let store = Store::connect(&settings).await?;
    let outcome = match words.as_slice() {
        ["migrate"] => Ok("migrations applied\n".to_owned()),
        ["list"] => list(&store, timezone(env)?).await,
        ["schedules", "add", name, rest @ ..] => add(&store, name, rest).await,
        ["schedules", "pause", name] => set_enabled(&store, name, false).await,
        ["schedules", "resume", name] => set_enabled(&store, name, true).await,
        ["schedules", "remove", name] => match store.beat().remove(name).await? {
            true => Ok(format!("removed {name}\n")),
            false => Err(anyhow::anyhow!("no schedule named {name:?}")),
        },
        _ => Err(anyhow::anyhow!("{USAGE}")),
    };
    store.close().await;
    outcome
}

fn timezone(env: &Env) -> anyhow::Result<Tz> {
    let zone = env.string("BEAT_TIMEZONE", "Asia/Seoul");
    zone.parse()
        .map_err(|_| anyhow::anyhow!("BEAT_TIMEZONE: {zone:?} is not an IANA time zone"))
}

async fn list(store: &Store, tz: Tz) -> anyhow::Result<String> {
    let now = Utc::now();
    let mut out = String::new();
    for row in store.beat().schedules().await? {
        let schedule = match Schedule::from_row(&row) {
            Ok(s) => s,
            Err(e) => {
                out.push_str(&format!("{}  INVALID: {e}\n", row.name));
                continue;
            }
        };
        out.push_str(&format!(
            "{}  {}  {}  queue {}  missed {}  {}  ({})\n",
            row.name,
            row.task,
            schedule.describe_when(),
            row.queue,
            row.missed,
            if row.enabled { "enabled" } else { "PAUSED" },
            row.source,
        ));
        for at in schedule.next_runs(now, tz, 5) {
            out.push_str(&format!("    {}\n", at.format("%Y-%m-%d %H:%M:%S %Z (%a)")));
        }
    }
    Ok(out)
}

async fn set_enabled(store: &Store, name: &str, enabled: bool) -> anyhow::Result<String> {
    if !store.beat().set_enabled(name, enabled).await? {
        bail!("no schedule named {name:?}");
    }
    Ok(format!(
        "{} {name}\n",
        if enabled { "resumed" } else { "paused" }
    ))
}

async fn add(store: &Store, name: &str, rest: &[&str]) -> anyhow::Result<String> {
    let mut task = None;
    let mut cron = None;
    let mut every = None;
    let mut kwargs = Map::new();
    let mut queue = None;
    let mut missed = "skip".to_owned();
    let mut enabled = true;
    let mut words = rest.iter();
    while let Some(word) = words.next() {
        let mut value = || {
            words
                .next()
                .map(|v| (*v).to_owned())
                .with_context(|| format!("{word} needs a value"))
        };
        match *word {
            "--task" => task = Some(value()?),
            "--cron" => cron = Some(value()?),
            "--every" => {
                let text = value()?;
                every = Some(text.parse::<i32>().map_err(|_| {
                    anyhow::anyhow!("--every: {text:?} is not a number of seconds")
                })?);
            }
            "--kwargs" => {
                let text = value()?;
                kwargs = match serde_json::from_str(&text) {
                    Ok(Value::Object(map)) => map,
                    _ => bail!("--kwargs: {text:?} is not a JSON object"),
                };
            }
            "--queue" => queue = Some(value()?),
            "--missed" => missed = value()?,
            "--paused" => enabled = false,
            other => bail!("unknown option {other:?}\n{USAGE}"),
        }
    }
    let task = task.context("schedules add: --task is required")?;
    let row = crate::file::row(
        name.to_owned(),
        task,
        cron,
        every,
        kwargs,
        queue,
        missed,
        enabled,
    )
    .map_err(anyhow::Error::msg)?;
    store.beat().put(&row).await?;
    Ok(format!("saved {name}\n"))
}
