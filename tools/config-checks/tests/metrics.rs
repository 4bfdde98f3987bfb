//! The monitoring configuration against the code: every `shopfds_*` metric the alerts, their
//! tests and the Grafana dashboard name is one a collector in the code defines (read from the
//! sources' `Opts::new("…")`, `HistogramOpts::new("…")`, `IntGauge::new("…")`,
//! `IntCounter::new("…")`), every defined metric has a dashboard panel, every alert has a
//! firing and a quiet case in `alerts_test.yml`, and promtool accepts the Prometheus
//! configuration, the rules and their tests (`scripts/ensure-services.sh` installs promtool).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(root().join(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

fn rust_sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every `shopfds_…` name in `text` (a name ending in `_` is a pattern in prose, not a metric).
fn names_in(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(at) = text[from..].find("shopfds_").map(|i| from + i) {
        let starts_word = at == 0 || {
            let before = bytes[at - 1];
            !(before.is_ascii_alphanumeric() || before == b'_')
        };
        let end = text[at..]
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .map_or(text.len(), |i| at + i);
        if starts_word && !text[..end].ends_with('_') {
            names.insert(text[at..end].to_owned());
        }
        from = end.max(at + 1);
    }
    names
}

/// Metric name → whether it is a histogram, for every collector defined in `libs/*/src` and
/// `services/*/src`.
fn defined_metrics() -> BTreeMap<String, bool> {
    let mut files = Vec::new();
    for top in ["libs", "services"] {
        for krate in std::fs::read_dir(root().join(top)).unwrap().flatten() {
            let src = krate.path().join("src");
            if src.is_dir() {
                rust_sources(&src, &mut files);
            }
        }
    }
    let mut defined = BTreeMap::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let mut from = 0;
        while let Some(at) = text[from..].find("\"shopfds_").map(|i| from + i) {
            from = at + 1;
            let before = text[..at].trim_end();
            let constructor = ["Opts::new(", "IntGauge::new(", "IntCounter::new("]
                .iter()
                .any(|c| before.ends_with(c));
            if !constructor {
                continue;
            }
            let name = &text[at + 1..];
            let name = &name[..name.find('"').unwrap()];
            let histogram = before.ends_with("HistogramOpts::new(");
            defined.insert(name.to_owned(), histogram);
        }
    }
    defined
}

/// The family a sample name belongs to (`x_bucket`, `x_sum`, `x_count` of a histogram `x`).
fn family<'a>(name: &'a str, defined: &BTreeMap<String, bool>) -> Option<&'a str> {
    if defined.contains_key(name) {
        return Some(name);
    }
    ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
        let base = name.strip_suffix(suffix)?;
        defined.get(base).filter(|h| **h).map(|_| base)
    })
}

#[test]
fn the_scan_finds_the_collectors() {
    let defined = defined_metrics();
    for (name, histogram) in [
        ("shopfds_tasks_total", false),
        ("shopfds_task_wait_seconds", true),
        ("shopfds_outbox_pending", false),
        ("shopfds_broker_connected", false),
        ("shopfds_dead_letter_messages", false),
        ("shopfds_fds_score_duration_seconds", true),
        ("shopfds_fds_results_dropped_total", false),
    ] {
        assert_eq!(defined.get(name), Some(&histogram), "{name}: {defined:?}");
    }
    assert_eq!(
        family("shopfds_task_wait_seconds_sum", &defined),
        Some("shopfds_task_wait_seconds")
    );
    assert_eq!(family("shopfds_tasks_total_bucket", &defined), None);
    assert_eq!(family("shopfds_task_late_seconds", &defined), None);
}

#[test]
fn alerts_their_tests_and_the_dashboard_name_only_defined_metrics() {
    let defined = defined_metrics();
    for file in [
        "infrastructure/prometheus/alerts.yml",
        "infrastructure/prometheus/alerts_test.yml",
        "infrastructure/grafana/dashboards/shopfds-jobs.json",
    ] {
        let unknown: Vec<String> = names_in(&read(file))
            .into_iter()
            .filter(|name| family(name, &defined).is_none())
            .collect();
        assert!(
            unknown.is_empty(),
            "{file} names metrics no collector defines: {unknown:?} (defined: {:?})",
            defined.keys().collect::<Vec<_>>()
        );
    }
}

#[test]
fn every_defined_metric_has_a_dashboard_panel() {
    let defined = defined_metrics();
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("infrastructure/grafana/dashboards/shopfds-jobs.json"))
            .expect("the dashboard is valid JSON");
    let mut shown = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap_or_default();
            shown.extend(
                names_in(expr)
                    .iter()
                    .filter_map(|n| family(n, &defined).map(str::to_owned)),
            );
        }
    }
    let missing: Vec<&String> = defined
        .keys()
        .filter(|name| !shown.contains(*name))
        .collect();
    assert!(missing.is_empty(), "no dashboard query shows {missing:?}");
}

#[test]
fn every_alert_has_a_firing_and_a_quiet_test_case() {
    let alerts: BTreeSet<String> = read("infrastructure/prometheus/alerts.yml")
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert:"))
        .map(|name| name.trim().to_owned())
        .collect();
    assert!(alerts.len() >= 20, "{alerts:?}");
    let (mut firing, mut quiet) = (BTreeSet::new(), BTreeSet::new());
    let mut current: Option<String> = None;
    for line in read("infrastructure/prometheus/alerts_test.yml").lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix("alertname:") {
            current = Some(name.trim().to_owned());
        } else if let Some(expected) = line.strip_prefix("exp_alerts:")
            && let Some(name) = current.take()
        {
            if expected.trim() == "[]" {
                quiet.insert(name);
            } else {
                firing.insert(name);
            }
        }
    }
    let never_firing: Vec<&String> = alerts.difference(&firing).collect();
    let never_quiet: Vec<&String> = alerts.difference(&quiet).collect();
    assert!(
        never_firing.is_empty(),
        "no case where these fire: {never_firing:?}"
    );
    assert!(
        never_quiet.is_empty(),
        "no case where these stay quiet: {never_quiet:?}"
    );
    let unknown: Vec<&String> = firing
        .union(&quiet)
        .filter(|a| !alerts.contains(*a))
        .collect();
    assert!(
        unknown.is_empty(),
        "tests of alerts that do not exist: {unknown:?}"
    );
}

fn promtool(args: &[&str], cwd: &Path) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap_or_else(|e| {
            panic!("promtool: {e} (scripts/ensure-services.sh installs it; `make test` runs that)")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

#[test]
fn promtool_accepts_the_configuration_the_rules_and_their_tests() {
    let prometheus = root().join("infrastructure/prometheus");
    promtool(&["check", "rules", "alerts.yml"], &prometheus);
    let tested = promtool(&["test", "rules", "alerts_test.yml"], &prometheus);
    assert!(tested.contains("SUCCESS"), "{tested}");
    // prometheus.yml loads the rules from where the compose stack mounts them.
    let dir = tempfile::tempdir().unwrap();
    let config = read("infrastructure/prometheus/prometheus.yml");
    assert!(config.contains("/etc/prometheus/alerts.yml"), "{config}");
    let local = config.replace(
        "/etc/prometheus/alerts.yml",
        prometheus.join("alerts.yml").to_str().unwrap(),
    );
    std::fs::write(dir.path().join("prometheus.yml"), local).unwrap();
    promtool(&["check", "config", "prometheus.yml"], dir.path());
}
