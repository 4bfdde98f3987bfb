//! `make k8s-check` inside `make test`: runs `scripts/k8s-check.sh` (the Kubernetes manifests
//! rendered, validated against the Kubernetes and KEDA schemas, checkov with every finding
//! explained in `k8s/security-exceptions.md`, the per-service properties and connection budget of
//! `k8s/check/check.py`, `docker compose config`, and `infrastructure/check-config.py`) and fails
//! with its report unless every check passed. Nothing is skipped: a missing tool is a failure
//! that says how to install it (`make setup`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

#[test]
fn the_manifests_and_the_compose_file_pass_make_k8s_check() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let output = Command::new("bash")
        .arg(root.join("scripts/k8s-check.sh"))
        .current_dir(&root)
        .output()
        .expect("run scripts/k8s-check.sh");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report = format!("{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "make k8s-check failed:\n{report}");
    // Both checkers ran to their summary lines, with nothing failed.
    for checker in ["k8s-check: ", "config: "] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(checker) && l.ends_with(" passed, 0 failed")),
            "no `{checker}N passed, 0 failed` line:\n{report}"
        );
    }
}
