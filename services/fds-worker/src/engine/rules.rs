//! The rules themselves: each looks at the facts and may add one weighted reason. A rule whose
//! weight is 0 is off (it adds no reason).

use chrono::{DateTime, Utc};

use super::intel::{IntelSnapshot, domain_suffixes};
use super::{ActiveRules, Assessment, Decision, OrderFacts, Reason};
use crate::engine::config::{RulesConfig, VelocityLimits};

pub(super) fn assess(
    rules: &ActiveRules,
    intel: &IntelSnapshot,
    facts: &OrderFacts,
    now: DateTime<Utc>,
) -> Assessment {
    let config = &rules.config;
    let mut reasons = Vec::new();
    let mut add = |rule_id: &str, weight: i32, message: String| {
        if weight != 0 {
            reasons.push(Reason {
                rule_id: rule_id.to_owned(),
                weight,
                message,
            });
        }
    };

    amount(config, facts, &mut add);
    velocity(config, facts, &mut add);
    threat_intel(config, intel, facts, &mut add);
    country_mismatch(config, facts, &mut add);
    new_account(config, facts, now, &mut add);

    let sum: i64 = reasons.iter().map(|r| i64::from(r.weight)).sum();
    let score = u32::try_from(sum.clamp(0, 100)).unwrap_or(0);
    Assessment {
        score,
        decision: decide(config, score),
        reasons,
        rules_version: rules.version.clone(),
    }
}

pub(super) fn decide(config: &RulesConfig, score: u32) -> Decision {
    if score >= config.decision.block_at {
        Decision::Block
    } else if score >= config.decision.review_at {
        Decision::Review
    } else {
        Decision::Approve
    }
}

fn amount(config: &RulesConfig, facts: &OrderFacts, add: &mut impl FnMut(&str, i32, String)) {
    let rule = &config.amount;
    let Some(t) = rule.currencies.get(&facts.currency) else {
        return;
    };
    let (amount, currency) = (facts.amount, &facts.currency);
    if amount >= t.high {
        add(
            "amount.high",
            rule.high_weight,
            format!(
                "amount {amount} {currency} is at least the high threshold {}",
                t.high
            ),
        );
    } else if amount >= t.review {
        add(
            "amount.review",
            rule.review_weight,
            format!(
                "amount {amount} {currency} is at least the review threshold {}",
                t.review
            ),
        );
    }
}

fn velocity(config: &RulesConfig, facts: &OrderFacts, add: &mut impl FnMut(&str, i32, String)) {
    let Some(counts) = facts.velocity else {
        return;
    };
    let v = &config.velocity;
    let keys: [(&str, &str, &VelocityLimits, bool, i64, i64); 3] = [
        (
            "customer",
            "customer",
            &v.customer,
            !facts.customer_id.is_empty(),
            counts.customer_short,
            counts.customer_long,
        ),
        (
            "ip",
            "client IP",
            &v.ip,
            facts.client_ip.is_some(),
            counts.ip_short,
            counts.ip_long,
        ),
        (
            "card",
            "card",
            &v.card,
            facts
                .card_fingerprint
                .as_deref()
                .is_some_and(|f| !f.is_empty()),
            counts.card_short,
            counts.card_long,
        ),
    ];
    for (id, label, limits, present, short, long) in keys {
        if !present {
            continue;
        }
        // The stored orders plus this one.
        let (short, long) = (short.saturating_add(1), long.saturating_add(1));
        if short > i64::from(limits.max_1h) {
            add(
                &format!("velocity.{id}.1h"),
                limits.weight_1h,
                format!(
                    "{short} orders from this {label} in 1 h (limit {})",
                    limits.max_1h
                ),
            );
        }
        if long > i64::from(limits.max_24h) {
            add(
                &format!("velocity.{id}.24h"),
                limits.weight_24h,
                format!(
                    "{long} orders from this {label} in 24 h (limit {})",
                    limits.max_24h
                ),
            );
        }
    }
}

fn threat_intel(
    config: &RulesConfig,
    intel: &IntelSnapshot,
    facts: &OrderFacts,
    add: &mut impl FnMut(&str, i32, String),
) {
    let rule = &config.intel;
    if let Some(ip) = facts.client_ip {
        let listed = rule
            .ips
            .iter()
            .find(|r| r.contains(&ip))
            .or_else(|| intel.matches_ip(&ip));
        if let Some(range) = listed {
            add(
                "intel.ip",
                rule.ip_weight,
                format!("client IP {ip} is listed ({})", range.0),
            );
        }
    }
    if let Some((_, domain)) = facts.email.rsplit_once('@') {
        let domain = domain.trim().to_ascii_lowercase();
        let listed = domain_suffixes(&domain)
            .find(|suffix| rule.email_domains.iter().any(|d| d == suffix))
            .or_else(|| intel.matches_domain(&domain));
        if let Some(listed) = listed {
            add(
                "intel.email_domain",
                rule.email_domain_weight,
                format!("email domain {domain} is listed ({listed})"),
            );
        }
    }
}

fn country_mismatch(
    config: &RulesConfig,
    facts: &OrderFacts,
    add: &mut impl FnMut(&str, i32, String),
) {
    let (billing, shipping) = (facts.billing_country.trim(), facts.shipping_country.trim());
    if !billing.is_empty() && !shipping.is_empty() && !billing.eq_ignore_ascii_case(shipping) {
        add(
            "country.mismatch",
            config.country_mismatch.weight,
            format!("billing country {billing} differs from shipping country {shipping}"),
        );
    }
}

fn new_account(
    config: &RulesConfig,
    facts: &OrderFacts,
    now: DateTime<Utc>,
    add: &mut impl FnMut(&str, i32, String),
) {
    let rule = &config.new_account;
    let (Some(created), Some(min)) = (
        facts.account_created_at,
        rule.min_amount.get(&facts.currency),
    ) else {
        return;
    };
    let age = now.signed_duration_since(created);
    if age < chrono::Duration::days(i64::from(rule.max_age_days)) && facts.amount >= *min {
        add(
            "account.new_large_order",
            rule.weight,
            format!(
                "account is {} day(s) old (under {}) and the amount {} {} is at least {min}",
                age.num_days().max(0),
                rule.max_age_days,
                facts.amount,
                facts.currency
            ),
        );
    }
}
