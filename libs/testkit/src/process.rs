//! Child processes that cannot outlive a test: service binaries in smoke tests, and the Python
//! servers this crate starts. Dropping a [`ChildGuard`] sends SIGTERM, waits up to 5 s, then
//! sends SIGKILL.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

use crate::tail;

/// How long `Drop` waits after SIGTERM before SIGKILL.
const DROP_GRACE: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(20);

/// A running child process, terminated on drop.
#[derive(Debug)]
pub struct ChildGuard {
    child: Child,
    name: String,
    log: Option<PathBuf>,
    exited: Option<ExitStatus>,
}

impl ChildGuard {
    /// Spawns `cmd` as is (its stdio settings are kept).
    pub fn spawn(cmd: &mut Command) -> anyhow::Result<ChildGuard> {
        let name = program_name(cmd);
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot spawn {name}"))?;
        Ok(ChildGuard {
            child,
            name,
            log: None,
            exited: None,
        })
    }

    /// Spawns `cmd` with stdout and stderr appended to `log` (created if missing) and stdin closed;
    /// the log's path and last lines are shown by [`ChildGuard::describe`] and when a test panics.
    pub fn spawn_logged(cmd: &mut Command, log: &Path) -> anyhow::Result<ChildGuard> {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("cannot open log file {}", log.display()))?;
        let err = out.try_clone()?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let mut guard = Self::spawn(cmd)?;
        guard.log = Some(log.to_path_buf());
        Ok(guard)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The log file given to [`ChildGuard::spawn_logged`].
    pub fn log_path(&self) -> Option<&Path> {
        self.log.as_deref()
    }

    /// The whole log so far (empty when the child was not spawned with a log).
    pub fn log(&self) -> String {
        self.log
            .as_deref()
            .and_then(|path| std::fs::read(path).ok())
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// The exit status if the child has exited, without blocking.
    pub fn try_wait(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait()?;
        }
        Ok(self.exited)
    }

    /// `name (pid N), log <path>:` followed by the log's last lines: for error messages.
    pub fn describe(&self) -> String {
        match &self.log {
            Some(log) => format!(
                "{} (pid {}), log {}:\n{}",
                self.name,
                self.pid(),
                log.display(),
                tail(log, 40)
            ),
            None => format!("{} (pid {})", self.name, self.pid()),
        }
    }

    /// Waits until the log contains `needle`; fails early if the child exits first.
    pub async fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log().contains(needle) {
                return Ok(());
            }
            if let Some(status) = self.try_wait()? {
                bail!(
                    "{} exited ({status}) before logging {needle:?}",
                    self.describe()
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} did not log {needle:?} within {timeout:?}",
                    self.describe()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends `sig` to the child (no-op once it has exited).
    pub fn signal(&mut self, sig: Signal) -> anyhow::Result<()> {
        if self.try_wait()?.is_some() {
            return Ok(());
        }
        let pid = Pid::from_raw(i32::try_from(self.pid())?);
        match signal::kill(pid, sig) {
            // Exited between try_wait and kill: nothing left to signal.
            Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
            Err(err) => Err(err).with_context(|| format!("cannot send {sig} to {}", self.name)),
        }
    }

    /// SIGTERM, then waits up to `timeout` for the child to exit and returns its status. If it is
    /// still running after that, it is killed and an error says so (a graceful shutdown was
    /// expected and did not happen).
    pub async fn terminate(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        self.signal(Signal::SIGTERM)?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                self.kill()?;
                bail!(
                    "{} did not exit within {timeout:?} of SIGTERM; killed",
                    self.describe()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) -> anyhow::Result<ExitStatus> {
        if let Some(status) = self.try_wait()? {
            return Ok(status);
        }
        self.signal(Signal::SIGKILL)?;
        let status = self.child.wait()?;
        self.exited = Some(status);
        Ok(status)
    }

    fn stop_blocking(&mut self) {
        if matches!(self.try_wait(), Ok(Some(_))) {
            return;
        }
        if self.signal(Signal::SIGTERM).is_ok() {
            let deadline = Instant::now() + DROP_GRACE;
            while Instant::now() < deadline {
                if matches!(self.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(POLL);
            }
        }
        let _ = self.kill();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if std::thread::panicking() && self.log.is_some() {
            eprintln!("--- {}", self.describe());
        }
        self.stop_blocking();
    }
}

fn program_name(cmd: &Command) -> String {
    Path::new(cmd.get_program())
        .file_name()
        .unwrap_or(cmd.get_program())
        .to_string_lossy()
        .into_owned()
}
