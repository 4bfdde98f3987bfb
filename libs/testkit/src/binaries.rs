//! The service binaries of this checkout, for tests outside their packages (which get no
//! `CARGO_BIN_EXE_*`): built into the running test's own target directory first.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, bail};

/// Builds every binary of the workspace (`cargo build --workspace --bins` into the target
/// directory this test runs from; nothing to do when they are fresh) and returns the directory
/// holding them (`<target>/debug`, or `release`).
pub fn build() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("the test's own path")?;
    // <target>/<profile>/deps/<this test>
    let bin_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .context("a test binary in <target>/<profile>/deps")?
        .to_path_buf();
    let target = bin_dir.parent().context("<target>")?;
    let cargo = std::env::var("CARGO")
        .ok()
        .or_else(|| option_env!("CARGO").map(str::to_owned))
        .unwrap_or_else(|| "cargo".to_owned());
    let mut cmd = Command::new(cargo);
    // The whole workspace, as `make build` and `cargo test --workspace` select it: a subset
    // would unify dependency features differently and compile a second copy of them.
    cmd.args(["build", "--workspace", "--bins"])
        .arg("--target-dir")
        .arg(target)
        .current_dir(crate::workspace_root());
    if bin_dir.file_name().is_some_and(|p| p == "release") {
        cmd.arg("--release");
    }
    let status = cmd.status().context("cannot run cargo")?;
    if !status.success() {
        bail!("building the services failed: {status}");
    }
    Ok(bin_dir)
}
