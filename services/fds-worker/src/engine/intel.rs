//! Threat intelligence that changes at run time: bad client IPs (addresses and CIDR ranges) and
//! email domains, held as one immutable snapshot swapped atomically, so a Score call never
//! waits for a refresh and never sees half a feed.
//!
//! The rules file has its own static lists (`[intel]`); these add to them. The feed refresh
//! task (`update_threat_intelligence`) calls [`ThreatIntel::replace`].

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::engine::config::IpRange;

/// One consistent set of indicators.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IntelSnapshot {
    pub ips: Vec<IpRange>,
    /// Lower-case, without `@`; a domain also matches its subdomains.
    pub email_domains: HashSet<String>,
}

impl IntelSnapshot {
    pub fn new(
        ips: impl IntoIterator<Item = IpRange>,
        email_domains: impl IntoIterator<Item = impl AsRef<str>>,
    ) -> IntelSnapshot {
        IntelSnapshot {
            ips: ips.into_iter().collect(),
            email_domains: email_domains
                .into_iter()
                .map(|d| {
                    d.as_ref()
                        .trim()
                        .trim_start_matches(['@', '.'])
                        .to_ascii_lowercase()
                })
                .filter(|d| !d.is_empty())
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.ips.is_empty() && self.email_domains.is_empty()
    }

    pub fn matches_ip(&self, ip: &IpAddr) -> Option<&IpRange> {
        self.ips.iter().find(|range| range.contains(ip))
    }

    /// The listed domain `domain` is, or is a subdomain of.
    pub fn matches_domain(&self, domain: &str) -> Option<&str> {
        domain_suffixes(domain)
            .find_map(|suffix| self.email_domains.get(suffix).map(String::as_str))
    }
}

/// `a.b.example.com`, `b.example.com`, `example.com`, `com`.
pub(crate) fn domain_suffixes(domain: &str) -> impl Iterator<Item = &str> {
    std::iter::successors(Some(domain), |d| d.split_once('.').map(|(_, rest)| rest))
        .filter(|d| !d.is_empty())
}

/// The run-time indicator set; cheap to share (`Arc`), lock-free to read.
#[derive(Debug, Default)]
pub struct ThreatIntel {
    current: ArcSwap<IntelSnapshot>,
}

impl ThreatIntel {
    pub fn new(snapshot: IntelSnapshot) -> ThreatIntel {
        ThreatIntel {
            current: ArcSwap::from_pointee(snapshot),
        }
    }

    /// Replaces every indicator at once; readers see the old set or the new one, never a mix.
    pub fn replace(&self, snapshot: IntelSnapshot) {
        tracing::info!(
            ips = snapshot.ips.len(),
            email_domains = snapshot.email_domains.len(),
            "threat intelligence replaced"
        );
        self.current.store(Arc::new(snapshot));
    }

    /// The current set.
    pub fn snapshot(&self) -> Arc<IntelSnapshot> {
        self.current.load_full()
    }
}
