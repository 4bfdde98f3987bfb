//! Command-line flags of `shopfds-chaos`, validated before anything starts (an error names the
//! flag).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};

pub const USAGE: &str = "\
usage: shopfds-chaos [--orders N] [--rate R] [--seed S] [--faults-per-kind K]
                     [--settle-secs T] [--bin-dir DIR] [--keep-logs]
       shopfds-chaos --api-url URL --database-url URL [--broker-url URL]
                     [--fault NAME=COMMAND]... [--orders N] [--rate R] [--seed S] [--settle-secs T]

Local mode (the default) starts order-api, two email-workers and two fds-workers from DIR
(default: the directory of this binary) against a RabbitMQ node, a PostgreSQL proxy and an SMTP
sink of its own; posts N orders at R per second; kills, stops and cuts on a schedule drawn
from S; then checks the ledger, prints a table and exits 1 on any violation.
Staging mode (--api-url) posts to a running order-api and checks what the database (and the
broker, with --broker-url) shows; its only faults are the commands given with --fault. It posts
with the API key in CHAOS_API_KEY (scope admin: each order names its customer's client_ip).";

#[derive(Debug, Clone)]
pub struct Options {
    pub orders: usize,
    /// Orders posted per second.
    pub rate: f64,
    pub seed: u64,
    /// How many times each fault is applied; default: one per 400 orders, at least 1.
    pub faults_per_kind: usize,
    /// After the last order and fault, how long to wait for every task to reach a final state.
    pub settle: Duration,
    pub mode: Mode,
    /// Keep the services' logs even when nothing was violated.
    pub keep_logs: bool,
}

#[derive(Debug, Clone)]
pub enum Mode {
    Local {
        /// Where `order-api`, `email-worker` and `fds-worker` are.
        bin_dir: PathBuf,
    },
    Staging {
        api_url: String,
        database_url: String,
        broker_url: Option<String>,
        /// `(name, shell command)`, each run through `sh -c` at its scheduled time.
        faults: Vec<(String, String)>,
    },
}

impl Options {
    /// Local mode with `orders` orders and the defaults for the rest.
    pub fn local(orders: usize, bin_dir: PathBuf) -> Options {
        Options {
            orders,
            rate: 10.0,
            seed: 1,
            faults_per_kind: (orders / 400).max(1),
            settle: Duration::from_secs(90),
            mode: Mode::Local { bin_dir },
            keep_logs: false,
        }
    }

    /// Parses the flags (without the program name).
    pub fn parse(args: impl IntoIterator<Item = String>) -> anyhow::Result<Options> {
        let mut orders = 1000;
        let mut rate: f64 = 10.0;
        let mut seed = 1;
        let mut per_kind = None;
        let mut settle = 90;
        let mut bin_dir = None;
        let mut keep_logs = false;
        let mut api_url = None;
        let mut database_url = None;
        let mut broker_url = None;
        let mut faults = Vec::new();
        let mut args = args.into_iter();
        while let Some(flag) = args.next() {
            let mut value = || {
                args.next()
                    .with_context(|| format!("{flag}: a value is missing\n\n{USAGE}"))
            };
            match flag.as_str() {
                "--orders" => orders = number(&flag, &value()?)?,
                "--rate" => rate = number(&flag, &value()?)?,
                "--seed" => seed = number(&flag, &value()?)?,
                "--faults-per-kind" => per_kind = Some(number(&flag, &value()?)?),
                "--settle-secs" => settle = number(&flag, &value()?)?,
                "--bin-dir" => bin_dir = Some(PathBuf::from(value()?)),
                "--keep-logs" => keep_logs = true,
                "--api-url" => api_url = Some(value()?),
                "--database-url" => database_url = Some(value()?),
                "--broker-url" => broker_url = Some(value()?),
                "--fault" => {
                    let spec = value()?;
                    let Some((name, command)) = spec.split_once('=') else {
                        bail!("--fault: expected NAME=COMMAND, got {spec:?}");
                    };
                    faults.push((name.trim().to_owned(), command.to_owned()));
                }
                "-h" | "--help" => bail!("{USAGE}"),
                other => bail!("unknown flag {other:?}\n\n{USAGE}"),
            }
        }
        if orders == 0 {
            bail!("--orders: must be at least 1");
        }
        if !(rate.is_finite() && (0.01..=10_000.0).contains(&rate)) {
            bail!("--rate: must be between 0.01 and 10000 orders per second");
        }
        if settle > 86_400 {
            bail!("--settle-secs: at most 86400");
        }
        let mode = match (api_url, database_url) {
            (Some(api_url), Some(database_url)) => Mode::Staging {
                api_url: api_url.trim_end_matches('/').to_owned(),
                database_url,
                broker_url,
                faults,
            },
            (None, None) if broker_url.is_none() && faults.is_empty() => Mode::Local {
                bin_dir: match bin_dir {
                    Some(dir) => dir,
                    None => default_bin_dir()?,
                },
            },
            _ => bail!(
                "--api-url and --database-url go together (staging mode), and --broker-url and \
                 --fault need them"
            ),
        };
        Ok(Options {
            orders,
            rate,
            seed,
            faults_per_kind: per_kind.unwrap_or((orders / 400).max(1)),
            settle: Duration::from_secs(settle),
            mode,
            keep_logs,
        })
    }

    /// How long posting the orders takes at the configured rate.
    pub fn posting_window(&self) -> Duration {
        Duration::from_secs_f64(self.orders as f64 / self.rate)
    }
}

fn number<T: std::str::FromStr>(flag: &str, value: &str) -> anyhow::Result<T> {
    value
        .parse()
        .map_err(|_| anyhow::anyhow!("{flag}: {value:?} is not a valid number"))
}

/// The directory of this executable: `cargo build --workspace --bins` puts the services there.
fn default_bin_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find this executable's path")?;
    exe.parent()
        .map(PathBuf::from)
        .context("this executable has no parent directory; pass --bin-dir")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> anyhow::Result<Options> {
        Options::parse(args.iter().map(|s| (*s).to_owned()))
    }

    #[test]
    fn flags_are_read_and_bad_ones_named() {
        let o = parse(&[
            "--orders",
            "200",
            "--rate",
            "5",
            "--seed",
            "9",
            "--bin-dir",
            "/x",
        ])
        .unwrap();
        assert_eq!(
            (o.orders, o.rate, o.seed, o.faults_per_kind),
            (200, 5.0, 9, 1)
        );
        assert!(matches!(o.mode, Mode::Local { .. }));
        assert_eq!(parse(&["--orders", "1000"]).unwrap().faults_per_kind, 2);
        for (args, named) in [
            (&["--orders", "x"][..], "--orders"),
            (&["--orders", "0"][..], "--orders"),
            (&["--rate", "0"][..], "--rate"),
            (&["--rate"][..], "--rate"),
            (&["--api-url", "http://a"][..], "--api-url"),
            (&["--fault", "nope"][..], "--fault"),
            (&["--bogus"][..], "--bogus"),
        ] {
            let err = parse(args).unwrap_err().to_string();
            assert!(err.contains(named), "{args:?}: {err}");
        }
        let staging = parse(&[
            "--api-url",
            "http://api/",
            "--database-url",
            "postgres://db",
            "--fault",
            "restart=systemctl restart x",
        ])
        .unwrap();
        match staging.mode {
            Mode::Staging {
                api_url, faults, ..
            } => {
                assert_eq!(api_url, "http://api");
                assert_eq!(
                    faults,
                    vec![("restart".to_owned(), "systemctl restart x".to_owned())]
                );
            }
            Mode::Local { .. } => panic!("expected staging"),
        }
    }
}
