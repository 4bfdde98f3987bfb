//! Settings of order-api's authentication and its trust in callers: API keys (`API_KEYS`,
//! `API_KEYS_CACHE_SECS`, read by `shopfds-auth`), the proxies whose `X-Forwarded-For` is
//! believed (`TRUSTED_PROXIES`), the amount limits of an order (`ORDER_MAX_LINE_AMOUNT`,
//! `ORDER_MAX_TOTAL`) and the key order-api presents to fds-worker (`FDS_API_KEY`).

use ipnet::IpNet;
use shopfds_auth::AuthSettings;
use shopfds_config::{ConfigError, Env, Secret};

use crate::domain::{AmountLimits, MAX_SAFE_AMOUNT};

#[derive(Debug, Clone, Default)]
pub struct SecuritySettings {
    /// `API_KEYS` (default none) and `API_KEYS_CACHE_SECS` (default 30): keys given by
    /// configuration, and how long a key read from the `api_keys` table is trusted.
    pub auth: AuthSettings,
    /// `TRUSTED_PROXIES` (default empty: `X-Forwarded-For` is never believed): comma-separated
    /// networks (`10.0.0.0/8`, `192.0.2.7`) of the proxies in front of order-api. Only a request
    /// whose TCP peer is in one of them has its `X-Forwarded-For` read; the client is then the
    /// right-most address there that is not itself a trusted proxy.
    pub trusted_proxies: Vec<IpNet>,
    /// `ORDER_MAX_LINE_AMOUNT` (default 100 000 000 000) and `ORDER_MAX_TOTAL` (default
    /// 1 000 000 000 000): the largest `unit_price × quantity` of one line and the largest order
    /// total, in minor units; each at most 2⁵³ − 1.
    pub limits: AmountLimits,
    /// `FDS_API_KEY` (default none): the key sent to fds-worker's Score (scope `fds:score`).
    /// Without it fds-worker refuses the call and every order gets the fallback decision.
    pub fds_api_key: Option<Secret>,
}

impl SecuritySettings {
    pub fn read(env: &Env) -> Result<SecuritySettings, ConfigError> {
        let mut trusted_proxies = Vec::new();
        for item in env.list("TRUSTED_PROXIES") {
            let net = item
                .parse::<IpNet>()
                .or_else(|_| item.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    ConfigError::new(
                        "TRUSTED_PROXIES",
                        format!("{item:?} is not a network (10.0.0.0/8) or an address"),
                    )
                })?;
            trusted_proxies.push(net);
        }
        let defaults = AmountLimits::default();
        let amount = |name: &str, default: i64| -> Result<i64, ConfigError> {
            let value = env.positive(name, default)?;
            if value > MAX_SAFE_AMOUNT {
                return Err(ConfigError::new(
                    name,
                    format!(
                        "{value} is above 2^53 - 1 ({MAX_SAFE_AMOUNT}): JSON readers would round it"
                    ),
                ));
            }
            Ok(value)
        };
        Ok(SecuritySettings {
            auth: AuthSettings::read(env)?,
            trusted_proxies,
            limits: AmountLimits {
                max_line: amount("ORDER_MAX_LINE_AMOUNT", defaults.max_line)?,
                max_total: amount("ORDER_MAX_TOTAL", defaults.max_total)?,
            },
            fds_api_key: env.secret("FDS_API_KEY"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_trust_no_proxy_and_bad_values_are_named() {
        let settings = SecuritySettings::read(&Env::from_pairs([("X", "1")])).unwrap();
        assert!(settings.trusted_proxies.is_empty());
        assert_eq!(settings.limits, AmountLimits::default());
        assert!(settings.fds_api_key.is_none());

        let settings = SecuritySettings::read(&Env::from_pairs([
            ("TRUSTED_PROXIES", "10.0.0.0/8, 192.0.2.7"),
            ("FDS_API_KEY", "sfk_hidden"),
        ]))
        .unwrap();
        assert_eq!(settings.trusted_proxies.len(), 2);
        assert!(!format!("{settings:?}").contains("sfk_hidden"));

        for (name, value) in [
            ("TRUSTED_PROXIES", "10.0.0.0/8,proxy.local"),
            ("ORDER_MAX_TOTAL", "9007199254740992"),
            ("ORDER_MAX_LINE_AMOUNT", "0"),
            ("ORDER_MAX_LINE_AMOUNT", "-5"),
        ] {
            let error = SecuritySettings::read(&Env::from_pairs([(name, value)])).unwrap_err();
            assert_eq!(error.variable, name);
        }
    }
}
