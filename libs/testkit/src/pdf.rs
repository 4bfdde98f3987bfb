//! Reading a PDF back as a person's tools do: `pdftotext -layout` (Debian's poppler-utils, which
//! `scripts/ensure-services.sh` installs), so a test asserts on the text a reader would find.

use std::process::Command;

use anyhow::{Context, bail};

/// The text of `pdf`, laid out as on the page.
pub fn text(pdf: &[u8]) -> anyhow::Result<String> {
    let dir = crate::temp_dir("pdf")?;
    let path = dir.path().join("document.pdf");
    std::fs::write(&path, pdf).with_context(|| format!("writing {}", path.display()))?;
    let out = Command::new("pdftotext")
        .arg("-layout")
        .arg(&path)
        .arg("-")
        .output()
        .context("pdftotext (poppler-utils; `make test` installs it)")?;
    if !out.status.success() {
        bail!("pdftotext: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
