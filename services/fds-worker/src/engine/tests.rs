//! One test per rule, the decision thresholds, config errors naming the key, and hot reload.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};

use super::*;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 6, 1, 12, 0, 0).unwrap()
}

/// An order no rule objects to.
fn facts() -> OrderFacts {
    OrderFacts {
        order_id: "o-1".into(),
        customer_id: "c-1001".into(),
        email: "minsu.kim@example.com".into(),
        client_ip: Some("203.0.113.7".parse().unwrap()),
        amount: 90_000,
        currency: "KRW".into(),
        shipping_country: "KR".into(),
        billing_country: "KR".into(),
        card_fingerprint: Some("fp_9f8e7d".into()),
        account_created_at: Some(Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap()),
        velocity: Some(VelocityCounts::default()),
    }
}

fn rule_ids(a: &Assessment) -> Vec<&str> {
    a.reasons.iter().map(|r| r.rule_id.as_str()).collect()
}

fn assess(f: &OrderFacts) -> Assessment {
    Engine::builtin().assess_at(f, now())
}

#[test]
fn a_plain_order_is_approved_with_no_reasons() {
    let a = assess(&facts());
    assert_eq!(a.score, 0);
    assert_eq!(a.decision, Decision::Approve);
    assert!(a.reasons.is_empty(), "{a:?}");
    assert_eq!(a.rules_version, BUILTIN_VERSION);
}

#[test]
fn amount_thresholds_are_per_currency() {
    let cases = [
        ("KRW", 999_999, None),
        ("KRW", 1_000_000, Some(("amount.review", 20))),
        ("KRW", 4_999_999, Some(("amount.review", 20))),
        ("KRW", 5_000_000, Some(("amount.high", 40))),
        // $1,000.00 and $5,000.00 in cents.
        ("USD", 99_999, None),
        ("USD", 100_000, Some(("amount.review", 20))),
        ("USD", 500_000, Some(("amount.high", 40))),
        // Not configured: not checked.
        ("JPY", 900_000_000, None),
    ];
    for (currency, amount, expected) in cases {
        let mut f = facts();
        f.currency = currency.into();
        f.amount = amount;
        f.account_created_at = None;
        let a = assess(&f);
        match expected {
            None => assert!(a.reasons.is_empty(), "{currency} {amount}: {a:?}"),
            Some((id, weight)) => {
                assert_eq!(rule_ids(&a), [id], "{currency} {amount}");
                assert_eq!(a.reasons[0].weight, weight);
                assert_eq!(a.score, weight as u32);
            }
        }
    }
}

#[test]
fn each_velocity_window_fires_above_its_limit_counting_this_order() {
    // Defaults: customer 3/1h, 10/24h; ip 5/1h, 20/24h; card 3/1h, 10/24h.
    let cases: [(VelocityCounts, &[&str]); 7] = [
        (
            VelocityCounts {
                customer_short: 2,
                customer_long: 9,
                ip_short: 4,
                ip_long: 19,
                card_short: 2,
                card_long: 9,
            },
            &[],
        ),
        (
            VelocityCounts {
                customer_short: 3,
                customer_long: 3,
                ..Default::default()
            },
            &["velocity.customer.1h"],
        ),
        (
            VelocityCounts {
                customer_long: 10,
                ..Default::default()
            },
            &["velocity.customer.24h"],
        ),
        (
            VelocityCounts {
                ip_short: 5,
                ip_long: 5,
                ..Default::default()
            },
            &["velocity.ip.1h"],
        ),
        (
            VelocityCounts {
                ip_long: 20,
                ..Default::default()
            },
            &["velocity.ip.24h"],
        ),
        (
            VelocityCounts {
                card_short: 3,
                card_long: 3,
                ..Default::default()
            },
            &["velocity.card.1h"],
        ),
        (
            VelocityCounts {
                card_short: 3,
                card_long: 10,
                ..Default::default()
            },
            &["velocity.card.1h", "velocity.card.24h"],
        ),
    ];
    for (counts, expected) in cases {
        let mut f = facts();
        f.velocity = Some(counts);
        let a = assess(&f);
        assert_eq!(rule_ids(&a), expected, "{counts:?}");
    }
}

#[test]
fn velocity_is_skipped_when_unknown_or_the_key_is_absent() {
    let mut f = facts();
    f.velocity = None;
    assert!(assess(&f).reasons.is_empty());

    let mut f = facts();
    f.client_ip = None;
    f.card_fingerprint = None;
    f.velocity = Some(VelocityCounts {
        ip_short: 100,
        ip_long: 100,
        card_short: 100,
        card_long: 100,
        ..Default::default()
    });
    assert!(assess(&f).reasons.is_empty());
}

fn with_intel(ips: &[&str], domains: &[&str]) -> Engine {
    let mut config = RulesConfig::default();
    config.intel.ips = ips.iter().map(|s| s.parse().unwrap()).collect();
    config.intel.email_domains = domains.iter().map(|s| s.to_string()).collect();
    Engine::new(config, "test")
}

#[test]
fn listed_ips_match_addresses_and_cidr_ranges() {
    let engine = with_intel(&["198.51.100.0/24", "203.0.113.99", "2001:db8::/32"], &[]);
    for (ip, listed) in [
        ("198.51.100.1", true),
        ("198.51.100.254", true),
        ("198.51.101.1", false),
        ("203.0.113.99", true),
        ("203.0.113.98", false),
        ("2001:db8::1", true),
        ("2001:db9::1", false),
    ] {
        let mut f = facts();
        f.client_ip = Some(ip.parse().unwrap());
        let a = engine.assess_at(&f, now());
        if listed {
            assert_eq!(rule_ids(&a), ["intel.ip"], "{ip}");
            assert_eq!(a.reasons[0].weight, 60);
            assert!(a.reasons[0].message.contains(ip), "{a:?}");
        } else {
            assert!(a.reasons.is_empty(), "{ip}: {a:?}");
        }
    }
}

#[test]
fn the_feed_indicators_add_to_the_file_lists_and_are_replaced_at_once() {
    let engine = Engine::builtin();
    let mut f = facts();
    f.client_ip = Some("192.0.2.10".parse().unwrap());
    f.email = "x@Temp.Example.NET".into();
    assert!(engine.assess_at(&f, now()).reasons.is_empty());

    engine.intel().replace(IntelSnapshot::new(
        ["192.0.2.0/28".parse::<IpRange>().unwrap()],
        ["example.net"],
    ));
    let a = engine.assess_at(&f, now());
    assert_eq!(rule_ids(&a), ["intel.ip", "intel.email_domain"]);
    assert_eq!(a.score, 100);
    assert_eq!(a.decision, Decision::Block);

    engine.intel().replace(IntelSnapshot::default());
    assert!(engine.assess_at(&f, now()).reasons.is_empty());
}

#[test]
fn listed_email_domains_match_the_domain_and_its_subdomains_only() {
    let engine = with_intel(&[], &["Mailinator.com", "@guerrillamail.com"]);
    for (email, listed) in [
        ("a@mailinator.com", true),
        ("a@MAILINATOR.COM", true),
        ("a@eu.mailinator.com", true),
        ("a@guerrillamail.com", true),
        ("a@notmailinator.com", false),
        ("a@mailinator.com.example", false),
        ("no-at-sign", false),
    ] {
        let mut f = facts();
        f.email = email.into();
        let a = engine.assess_at(&f, now());
        assert_eq!(
            rule_ids(&a),
            if listed {
                vec!["intel.email_domain"]
            } else {
                vec![]
            },
            "{email}"
        );
    }
}

#[test]
fn billing_and_shipping_country_mismatch() {
    let mut f = facts();
    f.billing_country = "US".into();
    let a = assess(&f);
    assert_eq!(rule_ids(&a), ["country.mismatch"]);
    assert_eq!(a.reasons[0].weight, 20);
    assert!(a.reasons[0].message.contains("US") && a.reasons[0].message.contains("KR"));

    f.billing_country = "kr".into();
    assert!(assess(&f).reasons.is_empty(), "case does not matter");
    f.billing_country = String::new();
    assert!(assess(&f).reasons.is_empty(), "unknown is not a mismatch");
}

#[test]
fn a_new_account_with_a_large_order() {
    let mut f = facts();
    f.amount = 500_000;
    f.account_created_at = Some(now() - chrono::Duration::days(2));
    let a = assess(&f);
    assert_eq!(rule_ids(&a), ["account.new_large_order"]);
    assert_eq!(a.reasons[0].weight, 25);

    f.amount = 499_999;
    assert!(assess(&f).reasons.is_empty(), "below the amount");
    f.amount = 500_000;
    f.account_created_at = Some(now() - chrono::Duration::days(8));
    assert!(assess(&f).reasons.is_empty(), "old enough");
    f.account_created_at = None;
    assert!(assess(&f).reasons.is_empty(), "age unknown");
}

#[test]
fn decision_thresholds_and_the_score_cap() {
    let config = RulesConfig::default();
    for (score, decision) in [
        (0, Decision::Approve),
        (39, Decision::Approve),
        (40, Decision::Review),
        (69, Decision::Review),
        (70, Decision::Block),
        (100, Decision::Block),
    ] {
        assert_eq!(rules::decide(&config, score), decision, "{score}");
    }

    // amount.high 40 + country 20 = 60: REVIEW; + new account 25 = 85: BLOCK.
    let mut f = facts();
    f.amount = 5_000_000;
    f.billing_country = "US".into();
    let a = assess(&f);
    assert_eq!((a.score, a.decision), (60, Decision::Review));
    f.account_created_at = Some(now() - chrono::Duration::days(1));
    let a = assess(&f);
    assert_eq!((a.score, a.decision), (85, Decision::Block));
    // Everything at once is capped at 100.
    f.velocity = Some(VelocityCounts {
        customer_short: 50,
        customer_long: 50,
        ip_short: 50,
        ip_long: 50,
        card_short: 50,
        card_long: 50,
    });
    assert_eq!(assess(&f).score, 100);
}

#[test]
fn the_example_file_is_the_builtin_defaults() {
    let text = include_str!("../../rules.example.toml");
    assert_eq!(RulesConfig::parse(text).unwrap(), RulesConfig::default());
    assert_eq!(RulesConfig::parse("").unwrap(), RulesConfig::default());
}

#[test]
fn a_partial_file_keeps_the_defaults_of_the_tables_it_omits() {
    let config = RulesConfig::parse("[country_mismatch]\nweight = 33\n").unwrap();
    assert_eq!(config.country_mismatch.weight, 33);
    assert_eq!(config.amount, RulesConfig::default().amount);
}

#[test]
fn config_errors_name_the_key() {
    for (text, key) in [
        ("[decision]\nreview_at = \"high\"\n", "decision.review_at"),
        ("[decision]\nblock_at = 30\n", "decision.block_at"),
        ("[decision]\nreview_at = 0\n", "decision.review_at"),
        (
            "[amount.currencies]\nKRW = { review = 10, high = 5 }\n",
            "amount.currencies.KRW.high",
        ),
        (
            "[amount.currencies]\nKRW = { review = 10 }\n",
            "amount.currencies.KRW",
        ),
        (
            "[amount.currencies]\nkr = { review = 1, high = 2 }\n",
            "amount.currencies.KR",
        ),
        ("[velocity.ip]\nmax_1h = -1\n", "velocity.ip.max_1h"),
        ("[intel]\nips = [\"10.0.0.1\", \"nope\"]\n", "intel.ips[1]"),
        (
            "[intel]\nemail_domains = [\"a@b\"]\n",
            "intel.email_domains[0]",
        ),
        (
            "[country_mismatch]\nwieght = 3\n",
            "country_mismatch.wieght",
        ),
        (
            "[new_account]\nmax_age_days = 1.5\n",
            "new_account.max_age_days",
        ),
        ("[decision\n", "(syntax)"),
    ] {
        let err = RulesConfig::parse(text).unwrap_err();
        assert_eq!(err.key(), Some(key), "{text:?}: {err}");
        assert!(err.to_string().contains(key), "{err}");
    }
}

/// Polls `check` until it holds or 5 s pass.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check() {
        assert!(Instant::now() < deadline, "{what} within 5 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_rules_file_is_reloaded_on_change_and_an_invalid_file_keeps_the_old_rules() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rules.toml");
    std::fs::write(&path, "[country_mismatch]\nweight = 20\n").unwrap();
    let engine = Arc::new(Engine::from_path(Some(&path)).unwrap());
    let first_version = engine.rules().version.clone();
    assert!(first_version.starts_with("sha256:"), "{first_version}");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let watcher = watch_rules(
        Arc::clone(&engine),
        path.clone(),
        Duration::from_millis(50),
        shutdown.clone(),
    );

    let mut f = facts();
    f.billing_country = "US".into();
    let weight = |engine: &Engine| engine.assess_at(&f, now()).reasons[0].weight;
    assert_eq!(weight(&engine), 20);

    std::fs::write(&path, "[country_mismatch]\nweight = 45\n").unwrap();
    eventually("the new weight is used", || weight(&engine) == 45).await;
    let second = engine.assess_at(&f, now());
    assert_eq!(second.decision, Decision::Review);
    assert_ne!(second.rules_version, first_version);

    std::fs::write(&path, "[country_mismatch]\nweight = \"lots\"\n").unwrap();
    // Give the watcher several polls to (wrongly) act on it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(weight(&engine), 45);
    assert_eq!(engine.rules().version, second.rules_version);

    // A valid file again is picked up again.
    std::fs::write(&path, "[country_mismatch]\nweight = 5\n").unwrap();
    eventually("the repaired file is used", || weight(&engine) == 5).await;

    shutdown.cancel();
    watcher.await.unwrap();
}
