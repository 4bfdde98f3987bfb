//! `order-api keys …`: API keys from the command line.
//!
//! - `keys create --name NAME --scopes orders:write,orders:read` makes a key, stores its hash in
//!   the `api_keys` table (`DATABASE_URL`) and prints the key — the only time it is shown;
//! - `keys list` prints id, name, scopes, created and revoked (never hashes);
//! - `keys revoke ID` revokes a key; services refuse it within `API_KEYS_CACHE_SECS`;
//! - `keys generate --scopes fds:score` makes a key for `API_KEYS` without any database: the key
//!   and its `API_KEYS` entry;
//! - `keys hash --scopes fds:score KEY` (or `-` to read the key from stdin, so it stays out of the
//!   shell history) prints the `API_KEYS` entry of an existing key.

use std::io::BufRead;

use anyhow::{Context, bail};
use shopfds_auth::{ConfiguredKey, KeyHash, NewKey, PresentedKey, Scopes};
use shopfds_service::Env;
use shopfds_store::{DatabaseSettings, NewApiKey, Store};

const USAGE: &str = "usage:
  order-api keys create --name NAME --scopes SCOPE[,SCOPE…]   store a new key (prints it once)
  order-api keys list                                         id, name, scopes, created, revoked
  order-api keys revoke ID                                    refuse the key from now on
  order-api keys generate --scopes SCOPE[,SCOPE…]             a key and its API_KEYS entry
  order-api keys hash --scopes SCOPE[,SCOPE…] KEY|-           the API_KEYS entry of KEY
scopes: orders:write, orders:read, reports, fds:score, admin (admin implies every scope)";

/// `order-api keys <args>` as a process: exit 0, or 1 with the error on stderr.
pub fn main(args: &[String]) -> std::process::ExitCode {
    let outcome = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the Tokio runtime")
        .and_then(|runtime| runtime.block_on(run(args)));
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("order-api keys: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs `order-api keys <args>`.
pub async fn run(args: &[String]) -> anyhow::Result<()> {
    let (command, rest) = args
        .split_first()
        .map_or(("help", &[][..]), |(c, r)| (c.as_str(), r));
    let options = Options::parse(rest)?;
    match command {
        "create" => {
            let scopes = options.scopes()?;
            let name = options.name.context("keys create: --name is required")?;
            let store = store().await?;
            let new = NewKey::generate();
            store
                .api_keys()
                .insert(&NewApiKey {
                    id: new.id.clone(),
                    name: name.clone(),
                    scopes: scopes.iter().map(|s| s.as_str().to_owned()).collect(),
                    hash: new.hash.to_hex(),
                })
                .await?;
            store.close().await;
            println!("{}", new.key.expose());
            eprintln!(
                "created key {} ({name}; {}). This is the only time the key is shown.",
                new.id,
                scopes.join(",")
            );
        }
        "list" => {
            let store = store().await?;
            let keys = store.api_keys().list().await?;
            store.close().await;
            println!(
                "{:<16}  {:<24}  {:<32}  {:<20}  REVOKED",
                "ID", "NAME", "SCOPES", "CREATED"
            );
            for k in keys {
                println!(
                    "{:<16}  {:<24}  {:<32}  {:<20}  {}",
                    k.id,
                    k.name,
                    k.scopes.join(","),
                    k.created_at.format("%Y-%m-%d %H:%M:%S"),
                    k.revoked_at
                        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                        .unwrap_or_else(|| "-".to_owned())
                );
            }
        }
        "revoke" => {
            let id = options.positional.context("keys revoke: which key id?")?;
            let store = store().await?;
            let revoked = store.api_keys().revoke(&id).await?;
            store.close().await;
            if !revoked {
                bail!("keys revoke: no active key with id {id:?}");
            }
            eprintln!("revoked key {id}");
        }
        "generate" => {
            let scopes = options.scopes()?;
            let new = NewKey::generate();
            println!("{}", new.key.expose());
            println!("{}", entry(&new.id, scopes, new.hash));
        }
        "hash" => {
            let scopes = options.scopes()?;
            let key = match options.positional.as_deref() {
                Some("-") | None => {
                    let mut line = String::new();
                    std::io::stdin().lock().read_line(&mut line)?;
                    line.trim().to_owned()
                }
                Some(key) => key.to_owned(),
            };
            let presented = PresentedKey::parse(&key)
                .context("keys hash: that is not a key (sfk_<id>_<secret>)")?;
            println!("{}", entry(presented.id, scopes, presented.hash()));
        }
        "help" | "--help" | "-h" => println!("{USAGE}"),
        other => bail!("unknown command keys {other:?}\n{USAGE}"),
    }
    Ok(())
}

fn entry(id: &str, scopes: Scopes, hash: KeyHash) -> String {
    ConfiguredKey {
        id: id.to_owned(),
        scopes,
        hash,
    }
    .entry()
}

async fn store() -> anyhow::Result<Store> {
    let settings = DatabaseSettings::read(&Env::process())?;
    Ok(Store::connect(&settings).await?)
}

#[derive(Default)]
struct Options {
    name: Option<String>,
    scopes: Option<String>,
    positional: Option<String>,
}

impl Options {
    fn parse(args: &[String]) -> anyhow::Result<Options> {
        let mut options = Options::default();
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--name" => {
                    options.name = Some(args.next().context("--name needs a value")?.clone())
                }
                "--scopes" => {
                    options.scopes = Some(args.next().context("--scopes needs a value")?.clone());
                }
                flag if flag.starts_with("--") => bail!("unknown option {flag}\n{USAGE}"),
                value if options.positional.is_none() => {
                    options.positional = Some(value.to_owned())
                }
                _ => bail!("too many arguments\n{USAGE}"),
            }
        }
        Ok(options)
    }

    fn scopes(&self) -> anyhow::Result<Scopes> {
        let text = self.scopes.as_deref().context("--scopes is required")?;
        Scopes::parse(text, ',').map_err(|e| anyhow::anyhow!("--scopes: {e}"))
    }
}
