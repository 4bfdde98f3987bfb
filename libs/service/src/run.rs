//! [`main`]: the life of every binary, from the environment to the exit status.

use std::future::Future;
use std::process::ExitCode;

use shopfds_config::Env;
use tokio_util::sync::CancellationToken;

use crate::ServiceSettings;

/// Exit status of a process whose configuration is wrong: nothing was started, and restarting
/// will not help (sysexits' EX_CONFIG would be 78; 2 is what the shell and clap use for usage).
const CONFIG_ERROR: u8 = 2;

/// Runs a binary: stack size, settings (exit 2 naming the variable when one is wrong), telemetry,
/// the settings logged once (secrets redacted), a shutdown token cancelled by SIGTERM or SIGINT,
/// then `run`. Exit 0 when `run` returns `Ok`, 1 (with the error chain logged) otherwise.
pub fn main<S, Fut>(run: impl FnOnce(S, CancellationToken) -> Fut) -> ExitCode
where
    S: ServiceSettings,
    Fut: Future<Output = anyhow::Result<()>>,
{
    shopfds_broker::stack::ensure_stack();
    let settings = match S::read(&Env::process()) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("{}: configuration error: {error}", S::SERVICE);
            return ExitCode::from(CONFIG_ERROR);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("{}: cannot start the Tokio runtime: {error}", S::SERVICE);
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let telemetry = settings.shell().telemetry.clone().with_version(S::VERSION);
        let _telemetry = match shopfds_telemetry::init(&telemetry) {
            Ok(guard) => guard,
            Err(error) => {
                eprintln!("{}: cannot start telemetry: {error}", S::SERVICE);
                return ExitCode::FAILURE;
            }
        };
        tracing::info!(service = S::SERVICE, version = S::VERSION, settings = ?settings, "starting");
        let shutdown = shopfds_telemetry::ops::shutdown_on_signal();
        match run(settings, shutdown).await {
            Ok(()) => {
                tracing::info!(service = S::SERVICE, "stopped");
                ExitCode::SUCCESS
            }
            Err(error) => {
                tracing::error!(service = S::SERVICE, error = format!("{error:#}"), "stopped with an error");
                ExitCode::FAILURE
            }
        }
    })
}

/// Every variable `S` reads, sorted (families such as `WORKER_CONCURRENCY_<QUEUE>` by their
/// pattern): the README's configuration table is checked against these.
pub fn variables<S: ServiceSettings>() -> Vec<String> {
    let env = Env::from_pairs(std::iter::empty::<(String, String)>());
    // Defaults only: every variable is read, whether or not its default is usable here.
    let _ = S::read(&env);
    env.variables()
}

/// Runs a command-line subcommand (`beat-scheduler list`, `dlq-reprocessor replay …`) on a
/// current-thread runtime: what it returns is printed and the exit is 0; an error goes to
/// stderr after `name:` and the exit is 1.
pub fn command<F>(name: &str, run: F) -> std::process::ExitCode
where
    F: std::future::Future<Output = anyhow::Result<String>>,
{
    let outcome = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the Tokio runtime: {e}"))
        .and_then(|runtime| runtime.block_on(run));
    match outcome {
        Ok(output) => {
            print!("{output}");
            std::process::ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{name}: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
