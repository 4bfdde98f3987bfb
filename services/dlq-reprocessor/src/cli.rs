//! `dlq-reprocessor queues | list | replay | purge`: the workbench from the command line, on the
//! broker and database of `BROKER_URL` and `DATABASE_URL` (the same code as the HTTP API).
//!
//! ```text
//! dlq-reprocessor queues
//! dlq-reprocessor list QUEUE [--task NAME] [--reason TEXT] [--offset N] [--limit N]
//! dlq-reprocessor replay QUEUE (--id TASK_ID [--kwargs JSON] | --task NAME | --reason TEXT | --all)
//! dlq-reprocessor purge QUEUE --yes
//! ```

use anyhow::{Context, bail};
use serde_json::{Map, Value};
use shopfds_broker::BrokerSettings;
use shopfds_service::Env;
use shopfds_store::{DatabaseSettings, Store};

use crate::config::SERVICE;
use crate::workbench::{Edit, Filter, Limits, Workbench};

const USAGE: &str = "usage:
  dlq-reprocessor queues                                   dead-letter and parked depths
  dlq-reprocessor list QUEUE [--task NAME] [--reason TEXT] [--offset N] [--limit N]
  dlq-reprocessor replay QUEUE (--id TASK_ID [--kwargs JSON] | --task NAME | --reason TEXT | --all)
  dlq-reprocessor purge QUEUE --yes
QUEUE: a work queue (email) or its dead-letter queue (failed.email)";

/// The commands this binary takes instead of serving.
pub const COMMANDS: [&str; 6] = ["queues", "list", "replay", "purge", "help", "--help"];

/// The CLI as a process: exit 0, or 1 with the error on stderr.
pub fn main(args: &[String]) -> std::process::ExitCode {
    shopfds_service::command("dlq-reprocessor", run(args, &Env::process()))
}

/// Runs the CLI with `env`; what it prints.
pub async fn run(args: &[String], env: &Env) -> anyhow::Result<String> {
    let (command, rest) = args
        .split_first()
        .map_or(("help", &[][..]), |(c, r)| (c.as_str(), r));
    if command == "help" || command == "--help" {
        return Ok(format!("{USAGE}\n"));
    }
    if !COMMANDS.contains(&command) {
        bail!("{USAGE}");
    }
    let options = Options::parse(rest)?;
    let store = Store::connect(&DatabaseSettings::read(env)?).await?;
    let workbench = Workbench::new(
        BrokerSettings::read(env, SERVICE)?,
        store.clone(),
        limits(env)?,
    );
    let out = match command {
        "queues" => {
            let mut out = format!("{:<12} {:>12} {:>8}\n", "QUEUE", "DEAD LETTERS", "PARKED");
            for q in workbench.queues().await? {
                out.push_str(&format!(
                    "{:<12} {:>12} {:>8}\n",
                    q.queue, q.dead_letters, q.parked
                ));
            }
            out
        }
        "list" => {
            let queue = options.queue()?;
            let letters = workbench
                .list(queue, &options.filter(), options.offset, options.limit)
                .await?;
            let mut out = String::new();
            for l in letters {
                out.push_str(&format!(
                    "#{} {} {} retries {} replays {}\n  reason: {}\n  args: {} kwargs: {}\n",
                    l.position,
                    l.task.as_deref().unwrap_or("?"),
                    l.id.as_deref().unwrap_or("?"),
                    l.retries,
                    l.replays,
                    l.reason.as_deref().unwrap_or("-"),
                    l.args,
                    l.kwargs
                ));
            }
            out
        }
        "replay" => {
            let queue = options.queue()?;
            let edit = match (&options.kwargs, &options.id) {
                (Some(kwargs), Some(id)) => Some(Edit {
                    id: id.clone(),
                    kwargs: kwargs.clone(),
                }),
                (Some(_), None) => bail!("--kwargs edits one message: give its --id"),
                _ => None,
            };
            let who = format!(
                "cli {}",
                std::env::var("USER").unwrap_or_else(|_| "unknown".to_owned())
            );
            let report = workbench
                .replay(queue, &options.filter(), options.all, edit.as_ref(), &who)
                .await?;
            format!(
                "replayed {}: {}\nparked {}: {}\nleft in the queue: {}\n",
                report.replayed.len(),
                report.replayed.join(", "),
                report.parked.len(),
                report.parked.join(", "),
                report.left
            )
        }
        _ => {
            let queue = options.queue()?;
            let dlq =
                shopfds_protocol::names::dead_letter_queue(crate::workbench::work_queue(queue)?);
            if !options.yes {
                bail!("purging deletes every message of {dlq} for good: add --yes");
            }
            format!(
                "purged {} from {dlq}\n",
                workbench.purge(queue, &dlq).await?
            )
        }
    };
    store.close().await;
    Ok(out)
}

fn limits(env: &Env) -> anyhow::Result<Limits> {
    let defaults = Limits::default();
    Ok(Limits {
        rate: env.parse("DLQ_REPLAY_RATE", defaults.rate)?,
        max_replays: env.parse("DLQ_MAX_REPLAYS", defaults.max_replays)?,
    })
}

#[derive(Default)]
struct Options {
    queue: Option<String>,
    id: Option<String>,
    task: Option<String>,
    reason: Option<String>,
    kwargs: Option<Map<String, Value>>,
    all: bool,
    yes: bool,
    offset: usize,
    limit: usize,
}

impl Options {
    fn parse(args: &[String]) -> anyhow::Result<Options> {
        let mut o = Options {
            limit: 50,
            ..Options::default()
        };
        let mut words = args.iter();
        while let Some(word) = words.next() {
            let mut value = || {
                words
                    .next()
                    .cloned()
                    .with_context(|| format!("{word} needs a value"))
            };
            match word.as_str() {
                "--id" => o.id = Some(value()?),
                "--task" => o.task = Some(value()?),
                "--reason" => o.reason = Some(value()?),
                "--kwargs" => {
                    let text = value()?;
                    o.kwargs = match serde_json::from_str(&text) {
                        Ok(Value::Object(map)) => Some(map),
                        _ => bail!("--kwargs: {text:?} is not a JSON object"),
                    };
                }
                "--offset" => o.offset = number(&value()?, "--offset")?,
                "--limit" => o.limit = number(&value()?, "--limit")?,
                "--all" => o.all = true,
                "--yes" => o.yes = true,
                other if !other.starts_with("--") && o.queue.is_none() => {
                    o.queue = Some(other.to_owned());
                }
                other => bail!("unexpected {other:?}\n{USAGE}"),
            }
        }
        Ok(o)
    }

    fn queue(&self) -> anyhow::Result<&str> {
        self.queue
            .as_deref()
            .context("which queue? (email, failed.email, …)")
    }

    fn filter(&self) -> Filter {
        Filter {
            id: self.id.clone(),
            task: self.task.clone(),
            reason: self.reason.clone(),
        }
    }
}

fn number(text: &str, option: &str) -> anyhow::Result<usize> {
    text.parse()
        .map_err(|_| anyhow::anyhow!("{option}: {text:?} is not a number"))
}
