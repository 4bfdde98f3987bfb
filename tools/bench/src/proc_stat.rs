//! What the kernel says about a process and its descendants: CPU time (user + system, from
//! `/proc/<pid>/stat`, the figures `getrusage` reports for the process itself) and resident
//! memory (`VmRSS`, and its high-water mark `VmHWM`, from `/proc/<pid>/status`).
//!
//! A stock Celery prefork worker is a parent and its pool processes, so every figure is summed
//! over the process tree. Summed RSS counts pages the processes share (the pool processes are
//! forked from the parent) once per process: what `ps` shows, an upper bound of what the tree
//! needs. A process that has exited is not counted (it cannot be read any more).

use std::time::Duration;

/// Clock ticks per second of `/proc/<pid>/stat` (`USER_HZ`, 100 on every Linux we run on).
const TICKS_PER_SECOND: u64 = 100;

/// `pid` and every descendant still running, parents first.
pub fn tree(pid: u32) -> Vec<u32> {
    let mut pids = vec![pid];
    let mut i = 0;
    while let Some(&p) = pids.get(i) {
        pids.extend(children(p));
        i += 1;
    }
    pids
}

/// The children of `pid`, from each of its threads' `children` file.
fn children(pid: u32) -> Vec<u32> {
    let Ok(threads) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    threads
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|text| {
            text.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// CPU time `pid` has used (user + system, all its threads); zero where unreadable.
pub fn cpu_of(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th of the
    // line, the 12th and 13th after the name.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<u64>().ok()))
        .sum();
    Duration::from_millis(ticks * 1000 / TICKS_PER_SECOND)
}

/// CPU time of `pid` and its descendants.
pub fn tree_cpu(pid: u32) -> Duration {
    tree(pid).into_iter().map(cpu_of).sum()
}

/// One `kB` line of `/proc/<pid>/status` (e.g. `VmRSS`), in bytes; zero where unreadable.
fn status_bytes(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Resident memory now, summed over the tree.
pub fn tree_rss(pid: u32) -> u64 {
    tree(pid)
        .into_iter()
        .map(|p| status_bytes(p, "VmRSS"))
        .sum()
}

/// Each process's peak resident memory so far, summed over the tree.
pub fn tree_peak_rss(pid: u32) -> u64 {
    tree(pid)
        .into_iter()
        .map(|p| status_bytes(p, "VmHWM"))
        .sum()
}
