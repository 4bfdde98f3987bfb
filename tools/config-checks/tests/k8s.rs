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

/// Copies `from` into `to`, recursively.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Replaces `from` (which must occur) with `to` in the file at `path`.
fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(
        text.contains(from),
        "{}: {from:?} not found",
        path.display()
    );
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

#[test]
fn make_k8s_check_catches_what_the_review_found() {
    // A copy of k8s/ and infrastructure/ with five of the review's findings put back; the copied
    // check.py checks the copy (it finds its root from its own path).
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let tools = Command::new("bash")
        .arg(root.join("scripts/k8s-tools.sh"))
        .output()
        .expect("run scripts/k8s-tools.sh");
    assert!(
        tools.status.success(),
        "{}",
        String::from_utf8_lossy(&tools.stderr)
    );
    let tools = Path::new(String::from_utf8_lossy(&tools.stdout).trim()).to_owned();
    let copy = tempfile::tempdir().unwrap();
    for dir in ["k8s", "infrastructure"] {
        copy_tree(&root.join(dir), &copy.path().join(dir));
    }
    let k8s = copy.path().join("k8s");
    edit(
        &k8s.join("overlays/local/kustomization.yaml"),
        "\nnamespace: shopfds\n",
        "\n",
    );
    edit(
        &k8s.join("base/order-api.yaml"),
        "  revisionHistoryLimit: 5",
        "  replicas: 2\n  revisionHistoryLimit: 5",
    );
    edit(
        &k8s.join("base/fds-worker.yaml"),
        "allowPrivilegeEscalation: false",
        "allowPrivilegeEscalation: true",
    );
    edit(
        &k8s.join("base/report-worker.yaml"),
        "    - type: memory\n      metricType: Utilization\n      metadata:\n        value: \"80\"",
        "    - type: memory\n      metricType: Utilization\n      metadata:\n        value: \"90\"",
    );
    edit(
        &copy.path().join("infrastructure/docker-compose.yml"),
        "\"127.0.0.1:${POSTGRES_HOST_PORT",
        "\"${POSTGRES_HOST_PORT",
    );

    let output = Command::new(tools.join("venv/bin/python"))
        .arg(k8s.join("check/check.py"))
        .arg("--node-modules")
        .arg(tools.join("node/node_modules"))
        .output()
        .expect("run the copied check.py");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        !output.status.success(),
        "the broken copy passed:\n{report}"
    );
    for expected in [
        "FAIL overlays/local: Secret/shopfds-secrets in namespace shopfds",
        "FAIL overlays/production: Deployment/order-api sets no replicas",
        "FAIL overlays/production: checkov CKV_K8S_20",
        "FAIL overlays/production: report-worker scales on CPU 70 % and memory 80 %",
        "FAIL compose: postgres publishes",
    ] {
        assert!(report.contains(expected), "no {expected:?} in:\n{report}");
    }
}
