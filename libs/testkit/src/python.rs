//! The Python virtualenv of the interop tests (stock Celery 5.5 and aiosmtpd), built on first use.
//!
//! `scripts/python-env.sh` creates or updates it from `interop/python/requirements.txt`; it is run
//! once per test process and is instant when the requirements have not changed.

use std::io::ErrorKind;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{Context, anyhow, bail};

use crate::workspace_root;

static VENV: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// The virtualenv directory (`$SHOPFDS_VENV`, default `<repo>/.venv`), created or updated by
/// `scripts/python-env.sh` the first time it is asked for in this process.
///
/// Blocks while pip runs (about 20 s the first time on a machine, well under a second after).
pub fn venv() -> anyhow::Result<PathBuf> {
    VENV.get_or_init(|| setup().map_err(|err| format!("{err:#}")))
        .clone()
        .map_err(|err| anyhow!(err))
}

/// The virtualenv's Python interpreter.
pub fn python() -> anyhow::Result<PathBuf> {
    Ok(venv()?.join("bin").join("python"))
}

/// An executable installed in the virtualenv, e.g. `celery`.
pub fn bin(name: &str) -> anyhow::Result<PathBuf> {
    Ok(venv()?.join("bin").join(name))
}

/// `interop/python`: the stock Celery app, the send_task CLI and the SMTP sink handler; goes on
/// `PYTHONPATH` of every Python process started by this crate.
pub fn interop_dir() -> PathBuf {
    workspace_root().join("interop").join("python")
}

/// Runs `code` with the virtualenv's Python (`python -c code`, `interop/python` on `PYTHONPATH`)
/// and returns what it printed on stdout; an error with its stderr if it exits unsuccessfully.
/// For introspecting the stock Python side, e.g. the signatures of the `shopfds_celery` tasks.
pub fn run_snippet(code: &str) -> anyhow::Result<String> {
    let python = python()?;
    let out = Command::new(&python)
        .arg("-c")
        .arg(code)
        .env("PYTHONPATH", interop_dir())
        .output()
        .with_context(|| format!("cannot run {}", python.display()))?;
    if !out.status.success() {
        bail!(
            "python snippet failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
    }
    String::from_utf8(out.stdout).context("the python snippet printed invalid UTF-8")
}

fn setup() -> anyhow::Result<PathBuf> {
    let interpreter = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned());
    match Command::new(&interpreter).arg("--version").output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => bail!(
            "`{interpreter} --version` failed ({}): the interop tests need Python 3.11+ with venv",
            out.status
        ),
        Err(err) if err.kind() == ErrorKind::NotFound => bail!(
            "`{interpreter}` is not installed: the interop tests need Python 3.11+ \
             (apt-get install -y python3 python3-venv)"
        ),
        Err(err) => return Err(err).context(format!("cannot run `{interpreter} --version`")),
    }

    let script = workspace_root().join("scripts").join("python-env.sh");
    let out = Command::new("bash")
        .arg(&script)
        .output()
        .with_context(|| format!("cannot run {}", script.display()))?;
    if !out.status.success() {
        bail!(
            "{} failed ({}):\n{}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let venv = stdout
        .lines()
        .rev()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .map(PathBuf::from)
        .ok_or_else(|| anyhow!("{} printed no virtualenv path", script.display()))?;
    if !venv.join("bin").join("python").exists() {
        bail!(
            "{} reported {}, which has no bin/python",
            script.display(),
            venv.display()
        );
    }
    Ok(venv)
}
