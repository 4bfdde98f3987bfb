//! The rule set as configured: a TOML file (`FDS_RULES_PATH`) or the built-in defaults, parsed
//! and validated so that every error names the key to fix (`amount.currencies.KRW.high: …`).
//!
//! Every table has defaults: a table left out of the file keeps the built-in values, a table
//! written in the file replaces them (a `[amount.currencies]` table lists every currency).
//! `services/fds-worker/rules.example.toml` documents every key with its default.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The `rules_version` of the built-in defaults.
pub const BUILTIN_VERSION: &str = "builtin-1";

/// Why a rules file was refused; `key` is the dotted path of the offending value.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("cannot read rules file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("rules: {key}: {message}")]
    Invalid { key: String, message: String },
}

impl RulesError {
    fn invalid(key: impl Into<String>, message: impl Into<String>) -> RulesError {
        RulesError::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }

    /// The dotted key the error is about (`None` for an unreadable file).
    pub fn key(&self) -> Option<&str> {
        match self {
            RulesError::Invalid { key, .. } => Some(key),
            RulesError::Read { .. } => None,
        }
    }
}

/// All rules, weights and thresholds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RulesConfig {
    pub decision: DecisionThresholds,
    pub amount: AmountRule,
    pub velocity: VelocityRule,
    pub intel: IntelRule,
    pub country_mismatch: CountryMismatchRule,
    pub new_account: NewAccountRule,
}

/// score ≥ `block_at` → BLOCK, ≥ `review_at` → REVIEW, else APPROVE.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DecisionThresholds {
    pub review_at: u32,
    pub block_at: u32,
}

/// Large orders, per currency in minor units: `amount.review` (≥ review) or `amount.high`
/// (≥ high); a currency not listed is not checked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AmountRule {
    pub review_weight: i32,
    pub high_weight: i32,
    pub currencies: BTreeMap<String, AmountThresholds>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmountThresholds {
    pub review: i64,
    pub high: i64,
}

/// Orders in the last hour and the last 24 hours (this one included) per customer, client IP
/// and card fingerprint; a limit is exceeded when the count is greater than it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VelocityRule {
    pub customer: VelocityLimits,
    pub ip: VelocityLimits,
    pub card: VelocityLimits,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VelocityLimits {
    pub max_1h: u32,
    pub weight_1h: i32,
    pub max_24h: u32,
    pub weight_24h: i32,
}

/// Known-bad client IPs (addresses or CIDR ranges) and email domains (a domain matches its
/// subdomains too). The threat-intel feed adds to these lists at run time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IntelRule {
    pub ip_weight: i32,
    pub email_domain_weight: i32,
    pub ips: Vec<IpRange>,
    pub email_domains: Vec<String>,
}

/// Billing country differs from shipping country.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CountryMismatchRule {
    pub weight: i32,
}

/// An account younger than `max_age_days` placing an order of at least `min_amount[currency]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NewAccountRule {
    pub max_age_days: u32,
    pub weight: i32,
    pub min_amount: BTreeMap<String, i64>,
}

/// An IP network; a bare address is a /32 (or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IpRange(pub IpNet);

impl IpRange {
    pub fn contains(&self, ip: &IpAddr) -> bool {
        self.0.contains(ip)
    }
}

impl std::str::FromStr for IpRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Ok(net) = s.parse::<IpNet>() {
            return Ok(IpRange(net.trunc()));
        }
        s.parse::<IpAddr>()
            .map(|ip| IpRange(IpNet::from(ip)))
            .map_err(|_| format!("{s:?} is neither an IP address nor a CIDR range"))
    }
}

impl TryFrom<String> for IpRange {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<IpRange> for String {
    fn from(r: IpRange) -> String {
        r.0.to_string()
    }
}

impl Default for DecisionThresholds {
    fn default() -> Self {
        DecisionThresholds {
            review_at: 40,
            block_at: 70,
        }
    }
}

impl Default for AmountRule {
    fn default() -> Self {
        let mut currencies = BTreeMap::new();
        currencies.insert(
            "KRW".to_owned(),
            AmountThresholds {
                review: 1_000_000,
                high: 5_000_000,
            },
        );
        currencies.insert(
            "USD".to_owned(),
            AmountThresholds {
                review: 100_000,
                high: 500_000,
            },
        );
        AmountRule {
            review_weight: 20,
            high_weight: 40,
            currencies,
        }
    }
}

impl Default for VelocityRule {
    fn default() -> Self {
        VelocityRule {
            customer: VelocityLimits {
                max_1h: 3,
                weight_1h: 25,
                max_24h: 10,
                weight_24h: 15,
            },
            ip: VelocityLimits {
                max_1h: 5,
                weight_1h: 20,
                max_24h: 20,
                weight_24h: 10,
            },
            card: VelocityLimits {
                max_1h: 3,
                weight_1h: 30,
                max_24h: 10,
                weight_24h: 15,
            },
        }
    }
}

impl Default for VelocityLimits {
    fn default() -> Self {
        VelocityRule::default().customer
    }
}

impl Default for IntelRule {
    fn default() -> Self {
        IntelRule {
            ip_weight: 60,
            email_domain_weight: 50,
            ips: Vec::new(),
            email_domains: Vec::new(),
        }
    }
}

impl Default for CountryMismatchRule {
    fn default() -> Self {
        CountryMismatchRule { weight: 20 }
    }
}

impl Default for NewAccountRule {
    fn default() -> Self {
        let mut min_amount = BTreeMap::new();
        min_amount.insert("KRW".to_owned(), 500_000);
        min_amount.insert("USD".to_owned(), 50_000);
        NewAccountRule {
            max_age_days: 7,
            weight: 25,
            min_amount,
        }
    }
}

impl RulesConfig {
    /// Parses and validates a rules file's text.
    pub fn parse(text: &str) -> Result<RulesConfig, RulesError> {
        let deserializer = toml::Deserializer::parse(text)
            .map_err(|e| RulesError::invalid("(syntax)", e.to_string().trim().to_owned()))?;
        let mut config: RulesConfig =
            serde_path_to_error::deserialize(deserializer).map_err(|e| {
                let key = e.path().to_string();
                let key = if key == "." {
                    "(top level)".to_owned()
                } else {
                    key
                };
                RulesError::invalid(key, e.into_inner().message().trim().to_owned())
            })?;
        config.normalize();
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates a rules file; also returns its version (a hash of the bytes).
    pub fn load(path: &Path) -> Result<(RulesConfig, String), RulesError> {
        let bytes = std::fs::read(path).map_err(|source| RulesError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let text = String::from_utf8(bytes.clone())
            .map_err(|e| RulesError::invalid("(file)", format!("not UTF-8: {e}")))?;
        Ok((RulesConfig::parse(&text)?, version_of(&bytes)))
    }

    /// Upper-case currency codes, lower-case domains without a leading `@` or `.`.
    pub fn normalize(&mut self) {
        self.amount.currencies = std::mem::take(&mut self.amount.currencies)
            .into_iter()
            .map(|(k, v)| (k.to_ascii_uppercase(), v))
            .collect();
        self.new_account.min_amount = std::mem::take(&mut self.new_account.min_amount)
            .into_iter()
            .map(|(k, v)| (k.to_ascii_uppercase(), v))
            .collect();
        for domain in &mut self.intel.email_domains {
            *domain = domain
                .trim()
                .trim_start_matches(['@', '.'])
                .to_ascii_lowercase();
        }
    }

    /// Cross-field checks serde cannot express.
    pub fn validate(&self) -> Result<(), RulesError> {
        let d = &self.decision;
        if d.review_at == 0 || d.review_at > 100 {
            return Err(RulesError::invalid(
                "decision.review_at",
                format!("{} is not within 1..=100", d.review_at),
            ));
        }
        if d.block_at < d.review_at || d.block_at > 100 {
            return Err(RulesError::invalid(
                "decision.block_at",
                format!(
                    "{} is not within decision.review_at ({})..=100",
                    d.block_at, d.review_at
                ),
            ));
        }
        for (currency, t) in &self.amount.currencies {
            check_currency(&format!("amount.currencies.{currency}"), currency)?;
            if t.review <= 0 {
                return Err(RulesError::invalid(
                    format!("amount.currencies.{currency}.review"),
                    "must be positive",
                ));
            }
            if t.high < t.review {
                return Err(RulesError::invalid(
                    format!("amount.currencies.{currency}.high"),
                    format!("{} is below review ({})", t.high, t.review),
                ));
            }
        }
        for (currency, min) in &self.new_account.min_amount {
            check_currency(&format!("new_account.min_amount.{currency}"), currency)?;
            if *min < 0 {
                return Err(RulesError::invalid(
                    format!("new_account.min_amount.{currency}"),
                    "must not be negative",
                ));
            }
        }
        for (i, domain) in self.intel.email_domains.iter().enumerate() {
            if domain.is_empty() || domain.contains(['@', ' ']) {
                return Err(RulesError::invalid(
                    format!("intel.email_domains[{i}]"),
                    format!("{domain:?} is not a domain"),
                ));
            }
        }
        Ok(())
    }
}

fn check_currency(key: &str, code: &str) -> Result<(), RulesError> {
    if code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err(RulesError::invalid(
            key,
            format!("{code:?} is not an ISO 4217 code"),
        ))
    }
}

/// `sha256:<first 16 hex digits>` of a rules file's bytes.
pub fn version_of(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}
