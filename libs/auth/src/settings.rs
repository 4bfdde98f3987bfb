//! `API_KEYS` and `API_KEYS_CACHE_SECS`: keys given by configuration, and how long a key read
//! from the `api_keys` table is trusted before it is read again.

use std::time::Duration;

use shopfds_config::{ConfigError, Env};

use crate::key::KeyHash;
use crate::scope::Scopes;

pub const API_KEYS: &str = "API_KEYS";
pub const API_KEYS_CACHE_SECS: &str = "API_KEYS_CACHE_SECS";

/// One `API_KEYS` entry: `id:scope+scope:sha256hex`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfiguredKey {
    pub id: String,
    pub scopes: Scopes,
    pub hash: KeyHash,
}

impl ConfiguredKey {
    /// The entry as `API_KEYS` spells it (`order-api keys hash` prints this).
    pub fn entry(&self) -> String {
        format!(
            "{}:{}:{}",
            self.id,
            self.scopes.join("+"),
            self.hash.to_hex()
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSettings {
    /// `API_KEYS` (default: none): comma-separated `id:scope+scope:sha256hex` entries, the
    /// SHA-256 of each key, never the key (`order-api keys generate` / `keys hash` make them).
    /// Checked before the `api_keys` table, with no database round trip.
    pub keys: Vec<ConfiguredKey>,
    /// `API_KEYS_CACHE_SECS` (default 30): a key read from the `api_keys` table (or found
    /// missing there) is trusted this long, so a revoke takes effect within this bound.
    pub cache_ttl: Duration,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            keys: Vec::new(),
            cache_ttl: Duration::from_secs(30),
        }
    }
}

impl AuthSettings {
    pub fn read(env: &Env) -> Result<AuthSettings, ConfigError> {
        let entries = env.list(API_KEYS);
        let count = entries.len();
        let mut keys: Vec<ConfiguredKey> = Vec::with_capacity(count);
        for (i, entry) in entries.iter().enumerate() {
            // The message names the entry by position and never repeats it: it holds a hash.
            let error = |what: &str| {
                ConfigError::new(
                    API_KEYS,
                    format!("entry {} of {count}: {what}", i.saturating_add(1)),
                )
            };
            let key = parse_entry(entry).map_err(|what| error(&what))?;
            if keys.iter().any(|k| k.id == key.id) {
                return Err(error(&format!("key id {} is listed twice", key.id)));
            }
            keys.push(key);
        }
        Ok(AuthSettings {
            keys,
            cache_ttl: env.secs(API_KEYS_CACHE_SECS, Duration::from_secs(30))?,
        })
    }
}

fn parse_entry(entry: &str) -> Result<ConfiguredKey, String> {
    // Scope names hold colons (`orders:write`): the id ends at the first colon, the hash
    // starts after the last one, the scopes are what lies between.
    let (Some((id, rest)), Some((_, hash))) = (entry.split_once(':'), entry.rsplit_once(':'))
    else {
        return Err("expected id:scope+scope:sha256hex".to_owned());
    };
    let Some((scopes, _)) = rest.rsplit_once(':') else {
        return Err("expected id:scope+scope:sha256hex".to_owned());
    };
    let id = id.trim();
    if id.len() != 16 || !id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err("the key id must be the 16 hex digits after sfk_".to_owned());
    }
    let scopes = Scopes::parse(scopes, '+').map_err(|e| e.to_string())?;
    let hash = KeyHash::from_hex(hash)
        .ok_or_else(|| "the hash must be 64 hex digits (SHA-256 of the key)".to_owned())?;
    Ok(ConfiguredKey {
        id: id.to_owned(),
        scopes,
        hash,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::NewKey;

    #[test]
    fn entries_parse_and_errors_name_the_entry_without_the_hash() {
        let a = NewKey::generate();
        let b = NewKey::generate();
        let value = format!(
            "{}:orders:write+orders:read:{}, {}:admin:{}",
            a.id,
            a.hash.to_hex(),
            b.id,
            b.hash.to_hex()
        );
        let settings = AuthSettings::read(&Env::from_pairs([(API_KEYS, value.as_str())])).unwrap();
        assert_eq!(settings.keys.len(), 2);
        assert_eq!(settings.keys[0].id, a.id);
        assert_eq!(
            settings.keys[0].scopes.join(","),
            "orders:write,orders:read"
        );
        assert!(settings.keys[1].scopes.is_admin());
        assert_eq!(settings.cache_ttl, Duration::from_secs(30));

        let secret_hash = a.hash.to_hex();
        for (bad, expected) in [
            (
                format!("{}:admin:{}, nonsense", b.id, b.hash.to_hex()),
                "entry 2 of 2",
            ),
            (
                format!("{}:orders:delete:{secret_hash}", a.id),
                "entry 1 of 1",
            ),
            (
                format!("{}:admin:{}", a.id, &secret_hash[1..]),
                "entry 1 of 1",
            ),
            (format!("short:admin:{secret_hash}"), "entry 1 of 1"),
            (
                format!(
                    "{}:admin:{secret_hash},{}:reports:{secret_hash}",
                    a.id, a.id
                ),
                "entry 2 of 2",
            ),
        ] {
            let error =
                AuthSettings::read(&Env::from_pairs([(API_KEYS, bad.as_str())])).unwrap_err();
            assert_eq!(error.variable, API_KEYS);
            assert!(error.message.contains(expected), "{error}");
            assert!(!error.to_string().contains(&secret_hash[1..]), "{error}");
        }
    }
}
