//! The fraud rule engine: order facts in, a score 0–100, a decision and the reasons out.
//!
//! [`Engine::assess`] is pure and synchronous (no I/O, microseconds): everything a rule needs is
//! in [`OrderFacts`], including the velocity counts the caller fetched from the store. The
//! active rules ([`RulesConfig`] + version) and the run-time threat intelligence are each one
//! immutable snapshot behind an `ArcSwap`, so a reload or a feed refresh never blocks a score.

pub mod config;
pub mod intel;
pub mod reload;
mod rules;

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use config::{BUILTIN_VERSION, IpRange, RulesConfig, RulesError};
pub use intel::{IntelSnapshot, ThreatIntel};
pub use reload::watch_rules;
pub use shopfds_store::VelocityCounts;

/// What the rules know about one order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderFacts {
    pub order_id: String,
    pub customer_id: String,
    pub email: String,
    pub client_ip: Option<IpAddr>,
    /// Order total in minor units of `currency`.
    pub amount: i64,
    /// ISO 4217, upper case.
    pub currency: String,
    /// ISO 3166-1 alpha-2.
    pub shipping_country: String,
    pub billing_country: String,
    pub card_fingerprint: Option<String>,
    pub account_created_at: Option<DateTime<Utc>>,
    /// Orders already stored in the last 1 h / 24 h (this one NOT included; the rules add it).
    /// `None` when unknown (the store was unreachable): the velocity rules are skipped.
    pub velocity: Option<VelocityCounts>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Decision {
    Approve,
    Review,
    Block,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Approve => "APPROVE",
            Decision::Review => "REVIEW",
            Decision::Block => "BLOCK",
        }
    }
}

impl From<Decision> for shopfds_store::FdsDecision {
    fn from(d: Decision) -> Self {
        match d {
            Decision::Approve => shopfds_store::FdsDecision::Approve,
            Decision::Review => shopfds_store::FdsDecision::Review,
            Decision::Block => shopfds_store::FdsDecision::Block,
        }
    }
}

/// One rule that fired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reason {
    /// Stable id: `amount.review`, `amount.high`, `velocity.{customer,ip,card}.{1h,24h}`,
    /// `intel.ip`, `intel.email_domain`, `country.mismatch`, `account.new_large_order`.
    pub rule_id: String,
    pub weight: i32,
    pub message: String,
}

/// The engine's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assessment {
    /// min(100, max(0, sum of the reasons' weights)).
    pub score: u32,
    pub decision: Decision,
    pub reasons: Vec<Reason>,
    pub rules_version: String,
}

/// The rule set in force and its version.
#[derive(Debug, Clone, PartialEq)]
pub struct ActiveRules {
    pub config: RulesConfig,
    pub version: String,
}

/// Scores orders. Share it as `Arc<Engine>`; every method takes `&self`.
#[derive(Debug)]
pub struct Engine {
    rules: ArcSwap<ActiveRules>,
    intel: ThreatIntel,
}

impl Engine {
    pub fn new(mut config: RulesConfig, version: impl Into<String>) -> Engine {
        config.normalize();
        Engine {
            rules: ArcSwap::from_pointee(ActiveRules {
                config,
                version: version.into(),
            }),
            intel: ThreatIntel::default(),
        }
    }

    /// The built-in defaults ([`RulesConfig::default`], version [`BUILTIN_VERSION`]).
    pub fn builtin() -> Engine {
        Engine::new(RulesConfig::default(), BUILTIN_VERSION)
    }

    /// The rules of `path` (the built-in defaults when `None`).
    pub fn from_path(path: Option<&Path>) -> Result<Engine, RulesError> {
        match path {
            Some(path) => {
                let (config, version) = RulesConfig::load(path)?;
                Ok(Engine::new(config, version))
            }
            None => Ok(Engine::builtin()),
        }
    }

    /// Scores `facts` with the rules in force now.
    pub fn assess(&self, facts: &OrderFacts) -> Assessment {
        self.assess_at(facts, Utc::now())
    }

    /// [`Engine::assess`] with an explicit clock (account age is measured at `now`).
    pub fn assess_at(&self, facts: &OrderFacts, now: DateTime<Utc>) -> Assessment {
        let rules = self.rules.load();
        let intel = self.intel.snapshot();
        rules::assess(&rules, &intel, facts, now)
    }

    /// The rules in force.
    pub fn rules(&self) -> Arc<ActiveRules> {
        self.rules.load_full()
    }

    /// Puts a new rule set in force at once.
    pub fn replace_rules(&self, mut config: RulesConfig, version: impl Into<String>) {
        config.normalize();
        let version = version.into();
        tracing::info!(rules_version = %version, "fraud rules in force");
        self.rules.store(Arc::new(ActiveRules { config, version }));
    }

    /// The run-time threat intelligence (the feed's indicators; see [`ThreatIntel::replace`]).
    pub fn intel(&self) -> &ThreatIntel {
        &self.intel
    }
}

#[cfg(test)]
mod tests;
