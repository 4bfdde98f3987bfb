//! The fault schedule: which fault, when (an offset from the first order), decided up front from
//! the seed. Every kind of fault appears `per_kind` times, in a shuffled order, spread over the
//! time the orders take to post. The runner starts each at its time, so a slow fault (a broker
//! restart) may overlap the next.

use std::fmt;
use std::time::Duration;

use crate::rng::Rng;

/// The worker binaries of a local run: email-worker and fds-worker twice each, so one can die
/// while the other carries on (the faults hit these); report-worker once, left alone (it makes
/// the orders' invoices).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WorkerKind {
    Email,
    Fds,
    Report,
}

impl WorkerKind {
    pub fn binary(self) -> &'static str {
        match self {
            WorkerKind::Email => "email-worker",
            WorkerKind::Fds => "fds-worker",
            WorkerKind::Report => "report-worker",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Fault {
    /// SIGKILL one worker of the kind, then start it again.
    Kill(WorkerKind),
    /// SIGTERM one worker of the kind (its grace period is short), then start it again.
    Term(WorkerKind),
    /// `rabbitmqctl stop` the node, then start it again with its data.
    BrokerRestart,
    /// Cut every PostgreSQL connection at the proxy, refuse new ones for a while, then resume.
    PostgresCut,
    /// Staging mode: an operator's shell command, by the name given with `--fault NAME=COMMAND`.
    Command(String),
}

impl Fault {
    /// The local faults, in the order the report lists them.
    pub const LOCAL: [Fault; 6] = [
        Fault::Kill(WorkerKind::Email),
        Fault::Kill(WorkerKind::Fds),
        Fault::Term(WorkerKind::Email),
        Fault::Term(WorkerKind::Fds),
        Fault::BrokerRestart,
        Fault::PostgresCut,
    ];
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Kill(kind) => write!(f, "SIGKILL {}", kind.binary()),
            Fault::Term(kind) => write!(f, "SIGTERM {} (short grace)", kind.binary()),
            Fault::BrokerRestart => f.write_str("RabbitMQ node restarted"),
            Fault::PostgresCut => f.write_str("PostgreSQL cut"),
            Fault::Command(name) => write!(f, "command {name}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Scheduled {
    pub at: Duration,
    pub fault: Fault,
}

/// `per_kind` of each fault in `kinds`, shuffled, at jittered offsets within `window`: the
/// i-th of n faults lands in the i-th of n + 1 equal slots (the last slot stays free so the
/// last fault happens while orders still flow).
pub fn schedule(kinds: &[Fault], per_kind: usize, window: Duration, seed: u64) -> Vec<Scheduled> {
    let mut rng = Rng::new(seed);
    let mut faults: Vec<Fault> = kinds
        .iter()
        .flat_map(|k| std::iter::repeat_n(k.clone(), per_kind))
        .collect();
    rng.shuffle(&mut faults);
    let slots = faults.len() + 1;
    let slot = window.as_secs_f64() / slots as f64;
    faults
        .into_iter()
        .enumerate()
        .map(|(i, fault)| Scheduled {
            // Early in its slot or late, never in the next one.
            at: Duration::from_secs_f64(slot * (i as f64 + 0.25 + 0.5 * rng.unit())),
            fault,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fault_appears_per_kind_times_in_order_within_the_window_and_the_seed_repeats() {
        let window = Duration::from_secs(40);
        let plan = schedule(&Fault::LOCAL, 2, window, 42);
        assert_eq!(plan.len(), 12);
        for kind in &Fault::LOCAL {
            assert_eq!(
                plan.iter().filter(|s| &s.fault == kind).count(),
                2,
                "{kind}"
            );
        }
        assert!(plan.windows(2).all(|w| w[0].at < w[1].at));
        assert!(plan.iter().all(|s| s.at < window));
        assert_eq!(plan, schedule(&Fault::LOCAL, 2, window, 42));
        assert_ne!(plan, schedule(&Fault::LOCAL, 2, window, 43));
    }
}
